//! Typed queries over the store, written once and run on either backend through
//! `db_run!`. Every error is returned; nothing here turns a failure into a default.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Integer, Text, Timestamp};

use super::models::*;
use super::schema::*;
use super::{now, Db, StoreError, WriteTransaction};
use crate::db_run;
use crate::experiment::definition::{Definition, Status};

/// Rewrites `?` placeholders to `$1, $2, …` for Postgres.
pub fn pg_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(ch);
        }
    }
    out
}

fn parse_definition(text: &str) -> Result<Definition, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("experiment definition: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

// ---------------------------------------------------------------- settings

/// Returns the stored value of a setting, creating it with `init()` the first time.
pub fn setting_or_init(db: &Db, name: &str, init: impl Fn() -> String) -> Result<String, StoreError> {
    db_run!(db, |conn| {
        diesel::insert_into(settings::table)
            .values((settings::name.eq(name), settings::value.eq(init())))
            .on_conflict_do_nothing()
            .execute(conn)?;
        Ok(settings::table.filter(settings::name.eq(name)).select(settings::value).first::<String>(conn)?)
    })
}

// ---------------------------------------------------------------- experiments

/// An experiment with the definition of its current version.
#[derive(Debug, Clone)]
pub struct StoredExperiment {
    pub row: ExperimentRow,
    pub definition: Definition,
}

impl StoredExperiment {
    pub fn status(&self) -> Status {
        Status::parse(&self.row.status).unwrap_or(Status::Draft)
    }
}

fn arm_rows(experiment_id: i64, version: i32, def: &Definition) -> Result<Vec<ArmRow>, StoreError> {
    def.arms
        .iter()
        .enumerate()
        .map(|(i, a)| {
            Ok(ArmRow {
                experiment_id,
                version,
                position: i as i32,
                key: a.key.clone(),
                payload: to_json(&a.payload)?,
                cost: a.cost,
                cost_rate: a.cost_rate,
                is_control: a.control,
            })
        })
        .collect()
}

/// Creates an experiment at version 1 with its arms and an initial policy snapshot.
pub fn create_experiment(
    db: &Db,
    def: &Definition,
    salt: &str,
    initial_state: &str,
) -> Result<StoredExperiment, StoreError> {
    let ts = now();
    let def_json = to_json(def)?;
    let status = def.status.unwrap_or(Status::Draft).as_str();
    db_run!(db, |conn| {
        conn.write_transaction::<_, StoreError, _>(|conn| {
            let exists: i64 = experiments::table.filter(experiments::key.eq(&def.key)).count().get_result(conn)?;
            if exists > 0 {
                return Err(StoreError::Conflict(format!("experiment `{}` already exists", def.key)));
            }
            let row: ExperimentRow = diesel::insert_into(experiments::table)
                .values(NewExperiment {
                    key: &def.key,
                    name: &def.name,
                    status,
                    current_version: 1,
                    salt,
                    promoted_arm: None,
                    created_at: ts,
                    updated_at: ts,
                })
                .returning(ExperimentRow::as_returning())
                .get_result(conn)?;
            diesel::insert_into(experiment_versions::table)
                .values(VersionRow { experiment_id: row.id, version: 1, definition: def_json.clone(), created_at: ts })
                .execute(conn)?;
            for a in arm_rows(row.id, 1, def)? {
                diesel::insert_into(arms::table).values(a).execute(conn)?;
            }
            diesel::insert_into(policy_snapshots::table)
                .values(NewSnapshot {
                    experiment_id: row.id,
                    version: 1,
                    policy_version: 1,
                    state: initial_state.to_string(),
                    n_feedback: 0,
                    created_at: ts,
                })
                .execute(conn)?;
            Ok(StoredExperiment { row, definition: def.clone() })
        })
    })
}

/// What an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    Unchanged,
    UpdatedInPlace,
    NewVersion(i32),
}

/// Updates a definition. Arms or policy changes make a new version (with a fresh
/// snapshot from `initial_state`); other changes rewrite the current version's row.
pub fn update_experiment(
    db: &Db,
    def: &Definition,
    initial_state: &str,
) -> Result<(StoredExperiment, UpdateOutcome), StoreError> {
    let ts = now();
    let def_json = to_json(def)?;
    db_run!(db, |conn| {
        conn.write_transaction::<_, StoreError, _>(|conn| {
            let row: ExperimentRow = experiments::table
                .filter(experiments::key.eq(&def.key))
                .select(ExperimentRow::as_select())
                .first(conn)?;
            let current: VersionRow = experiment_versions::table
                .filter(experiment_versions::experiment_id.eq(row.id))
                .filter(experiment_versions::version.eq(row.current_version))
                .select(VersionRow::as_select())
                .first(conn)?;
            let old = parse_definition(&current.definition)?;
            // `status` only matters when a file is first applied.
            let mut comparable = def.clone();
            comparable.status = old.status;
            if comparable == old {
                return Ok((StoredExperiment { row, definition: old }, UpdateOutcome::Unchanged));
            }
            let outcome = if old.needs_new_version(def) {
                let version = row.current_version + 1;
                diesel::insert_into(experiment_versions::table)
                    .values(VersionRow { experiment_id: row.id, version, definition: def_json.clone(), created_at: ts })
                    .execute(conn)?;
                for a in arm_rows(row.id, version, def)? {
                    diesel::insert_into(arms::table).values(a).execute(conn)?;
                }
                let last_pv: Option<i64> = policy_snapshots::table
                    .filter(policy_snapshots::experiment_id.eq(row.id))
                    .select(diesel::dsl::max(policy_snapshots::policy_version))
                    .first(conn)?;
                diesel::insert_into(policy_snapshots::table)
                    .values(NewSnapshot {
                        experiment_id: row.id,
                        version,
                        policy_version: last_pv.unwrap_or(0) + 1,
                        state: initial_state.to_string(),
                        n_feedback: 0,
                        created_at: ts,
                    })
                    .execute(conn)?;
                UpdateOutcome::NewVersion(version)
            } else {
                diesel::update(
                    experiment_versions::table
                        .filter(experiment_versions::experiment_id.eq(row.id))
                        .filter(experiment_versions::version.eq(row.current_version)),
                )
                .set(experiment_versions::definition.eq(&def_json))
                .execute(conn)?;
                UpdateOutcome::UpdatedInPlace
            };
            let version = match outcome {
                UpdateOutcome::NewVersion(v) => v,
                _ => row.current_version,
            };
            // A promoted arm that no longer exists cannot stay the default.
            let promoted = row.promoted_arm.clone().filter(|a| def.arm_index(a).is_some());
            let row: ExperimentRow = diesel::update(experiments::table.find(row.id))
                .set((
                    experiments::name.eq(&def.name),
                    experiments::current_version.eq(version),
                    experiments::promoted_arm.eq(promoted),
                    experiments::updated_at.eq(ts),
                ))
                .returning(ExperimentRow::as_returning())
                .get_result(conn)?;
            Ok((StoredExperiment { row, definition: def.clone() }, outcome))
        })
    })
}

/// The definition an experiment had at `version`.
pub fn version_definition(db: &Db, experiment_id: i64, version: i32) -> Result<Definition, StoreError> {
    let text: String = db_run!(db, |conn| {
        experiment_versions::table
            .filter(experiment_versions::experiment_id.eq(experiment_id))
            .filter(experiment_versions::version.eq(version))
            .select(experiment_versions::definition)
            .first(conn)?
    });
    parse_definition(&text)
}

pub fn get_experiment(db: &Db, key: &str) -> Result<StoredExperiment, StoreError> {
    db_run!(db, |conn| {
        let row: ExperimentRow =
            experiments::table.filter(experiments::key.eq(key)).select(ExperimentRow::as_select()).first(conn)?;
        let v: String = experiment_versions::table
            .filter(experiment_versions::experiment_id.eq(row.id))
            .filter(experiment_versions::version.eq(row.current_version))
            .select(experiment_versions::definition)
            .first(conn)?;
        Ok(StoredExperiment { definition: parse_definition(&v)?, row })
    })
}

/// All experiments with their current definitions, by key.
pub fn list_experiments(db: &Db) -> Result<Vec<StoredExperiment>, StoreError> {
    db_run!(db, |conn| {
        let rows: Vec<(ExperimentRow, String)> = experiments::table
            .inner_join(
                experiment_versions::table.on(experiment_versions::experiment_id
                    .eq(experiments::id)
                    .and(experiment_versions::version.eq(experiments::current_version))),
            )
            .order(experiments::key.asc())
            .select((ExperimentRow::as_select(), experiment_versions::definition))
            .load(conn)?;
        rows.into_iter().map(|(row, d)| Ok(StoredExperiment { definition: parse_definition(&d)?, row })).collect()
    })
}

/// Changes the status (and promoted arm) and writes the audit decision, in one transaction.
pub fn set_status(
    db: &Db,
    experiment_id: i64,
    status: Status,
    promoted_arm: Option<Option<&str>>,
    decision: NewDecision,
) -> Result<ExperimentRow, StoreError> {
    db_run!(db, |conn| {
        conn.write_transaction::<_, StoreError, _>(|conn| {
            let ts = now();
            let row: ExperimentRow = match promoted_arm {
                Some(p) => diesel::update(experiments::table.find(experiment_id))
                    .set((
                        experiments::status.eq(status.as_str()),
                        experiments::promoted_arm.eq(p),
                        experiments::updated_at.eq(ts),
                    ))
                    .returning(ExperimentRow::as_returning())
                    .get_result(conn)?,
                None => diesel::update(experiments::table.find(experiment_id))
                    .set((experiments::status.eq(status.as_str()), experiments::updated_at.eq(ts)))
                    .returning(ExperimentRow::as_returning())
                    .get_result(conn)?,
            };
            diesel::insert_into(decisions::table).values(decision).execute(conn)?;
            Ok(row)
        })
    })
}

pub fn insert_decision(db: &Db, decision: NewDecision) -> Result<(), StoreError> {
    db_run!(db, |conn| {
        diesel::insert_into(decisions::table).values(decision).execute(conn)?;
        Ok(())
    })
}

pub fn list_decisions(db: &Db, experiment_id: i64) -> Result<Vec<DecisionRow>, StoreError> {
    db_run!(db, |conn| {
        Ok(decisions::table
            .filter(decisions::experiment_id.eq(experiment_id))
            .order(decisions::id.asc())
            .select(DecisionRow::as_select())
            .load(conn)?)
    })
}

// ---------------------------------------------------------------- snapshots & registry

/// Latest experiment change, latest snapshot id, number of experiments.
pub type Stamp = (Option<NaiveDateTime>, Option<i64>, i64);

/// A cheap fingerprint of everything the serving registry depends on: when it changes,
/// serving processes reload.
pub fn registry_stamp(db: &Db) -> Result<Stamp, StoreError> {
    db_run!(db, |conn| {
        let updated: Option<NaiveDateTime> =
            experiments::table.select(diesel::dsl::max(experiments::updated_at)).first(conn)?;
        let snap: Option<i64> = policy_snapshots::table.select(diesel::dsl::max(policy_snapshots::id)).first(conn)?;
        let count: i64 = experiments::table.count().get_result(conn)?;
        Ok((updated, snap, count))
    })
}

/// Every experiment with its current definition and the latest snapshot of its current version.
pub fn load_live(db: &Db) -> Result<Vec<(StoredExperiment, SnapshotRow)>, StoreError> {
    let exps = list_experiments(db)?;
    db_run!(db, |conn| {
        let mut out = Vec::with_capacity(exps.len());
        for e in exps {
            let snap: SnapshotRow = policy_snapshots::table
                .filter(policy_snapshots::experiment_id.eq(e.row.id))
                .filter(policy_snapshots::version.eq(e.row.current_version))
                .order(policy_snapshots::policy_version.desc())
                .select(SnapshotRow::as_select())
                .first(conn)?;
            out.push((e, snap));
        }
        Ok(out)
    })
}

pub fn latest_snapshot(db: &Db, experiment_id: i64, version: i32) -> Result<SnapshotRow, StoreError> {
    db_run!(db, |conn| {
        Ok(policy_snapshots::table
            .filter(policy_snapshots::experiment_id.eq(experiment_id))
            .filter(policy_snapshots::version.eq(version))
            .order(policy_snapshots::policy_version.desc())
            .select(SnapshotRow::as_select())
            .first(conn)?)
    })
}

/// Writes the next snapshot for an experiment version; returns its policy version.
pub fn insert_snapshot(
    db: &Db,
    experiment_id: i64,
    version: i32,
    state: &str,
    n_feedback: i64,
) -> Result<i64, StoreError> {
    db_run!(db, |conn| {
        conn.write_transaction::<_, StoreError, _>(|conn| {
            let last: Option<i64> = policy_snapshots::table
                .filter(policy_snapshots::experiment_id.eq(experiment_id))
                .select(diesel::dsl::max(policy_snapshots::policy_version))
                .first(conn)?;
            let pv = last.unwrap_or(0) + 1;
            diesel::insert_into(policy_snapshots::table)
                .values(NewSnapshot {
                    experiment_id,
                    version,
                    policy_version: pv,
                    state: state.to_string(),
                    n_feedback,
                    created_at: now(),
                })
                .execute(conn)?;
            Ok(pv)
        })
    })
}

// ---------------------------------------------------------------- sticky assignments

// ---------------------------------------------------------------- exposures

/// One exposure by id. `created_at_hint` (from the UUIDv7 time) lets Postgres prune
/// partitions; the lookup stays correct without it.
pub fn find_exposure(db: &Db, id: &str, created_at_hint: Option<NaiveDateTime>) -> Result<ExposureRow, StoreError> {
    // Two fixed statements rather than one boxed query: diesel keeps fixed statements
    // prepared, so Postgres does not re-plan over every partition on each reward.
    db_run!(db, |conn| {
        Ok(match created_at_hint {
            // The id's clock and the row's clock are the same process's, a few ms apart.
            Some(t) => exposures::table
                .filter(exposures::id.eq(id))
                .filter(exposures::created_at.ge(t - chrono::Duration::minutes(5)))
                .filter(exposures::created_at.le(t + chrono::Duration::minutes(5)))
                .select(ExposureRow::as_select())
                .first(conn)?,
            None => exposures::table.filter(exposures::id.eq(id)).select(ExposureRow::as_select()).first(conn)?,
        })
    })
}

/// A unit's exposures since `since`, newest first, optionally of one experiment.
pub fn unit_exposures(
    db: &Db,
    unit_hash: &str,
    since: NaiveDateTime,
    experiment_id: Option<i64>,
) -> Result<Vec<ExposureRow>, StoreError> {
    db_run!(db, |conn| {
        let mut q = exposures::table
            .filter(exposures::unit_hash.eq(unit_hash))
            .filter(exposures::created_at.ge(since))
            .into_boxed();
        if let Some(id) = experiment_id {
            q = q.filter(exposures::experiment_id.eq(id));
        }
        Ok(q.order(exposures::created_at.desc()).limit(1000).select(ExposureRow::as_select()).load(conn)?)
    })
}

pub fn count_exposures(db: &Db, experiment_id: i64) -> Result<i64, StoreError> {
    db_run!(db, |conn| {
        Ok(exposures::table.filter(exposures::experiment_id.eq(experiment_id)).count().get_result(conn)?)
    })
}

pub fn exposure_ids(db: &Db, experiment_id: i64) -> Result<Vec<String>, StoreError> {
    db_run!(db, |conn| {
        Ok(exposures::table.filter(exposures::experiment_id.eq(experiment_id)).select(exposures::id).load(conn)?)
    })
}

pub fn rewards_for_exposure(db: &Db, exposure_id: &str) -> Result<Vec<RewardRow>, StoreError> {
    db_run!(db, |conn| {
        Ok(rewards::table.filter(rewards::exposure_id.eq(exposure_id)).select(RewardRow::as_select()).load(conn)?)
    })
}

// ---------------------------------------------------------------- learner feedback

#[derive(Debug, Clone, QueryableByName)]
pub struct ArmAggregate {
    #[diesel(sql_type = Text)]
    pub arm: String,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
    #[diesel(sql_type = Double)]
    pub s: f64,
    #[diesel(sql_type = Double)]
    pub ss: f64,
}

/// Per arm: the number of exposures made at or before `cutoff` in this version, and the
/// sum and sum of squares of each exposure's total reward on `metric` (0 when none
/// arrived). With `binary`, an exposure's reward is 1 if any reward on it was positive.
pub fn arm_feedback(
    db: &Db,
    experiment_id: i64,
    version: i32,
    metric: &str,
    binary: bool,
    cutoff: NaiveDateTime,
) -> Result<Vec<ArmAggregate>, StoreError> {
    let v = if binary { "(CASE WHEN r.v > 0 THEN 1.0 ELSE 0.0 END)" } else { "COALESCE(r.v, 0.0)" };
    let sql = format!(
        "SELECT e.arm AS arm, COUNT(*) AS n, CAST(COALESCE(SUM({v}), 0.0) AS DOUBLE PRECISION) AS s, \
         CAST(COALESCE(SUM({v} * {v}), 0.0) AS DOUBLE PRECISION) AS ss \
         FROM exposures e LEFT JOIN (SELECT exposure_id, SUM(value) AS v FROM rewards \
           WHERE experiment_id = ? AND version = ? AND metric = ? GROUP BY exposure_id) r ON r.exposure_id = e.id \
         WHERE e.experiment_id = ? AND e.version = ? AND e.created_at <= ? GROUP BY e.arm"
    );
    match db {
        Db::Pg(pool) => {
            let mut c = pool.get()?;
            Ok(diesel::sql_query(pg_placeholders(&sql))
                .bind::<BigInt, _>(experiment_id)
                .bind::<Integer, _>(version)
                .bind::<Text, _>(metric)
                .bind::<BigInt, _>(experiment_id)
                .bind::<Integer, _>(version)
                .bind::<Timestamp, _>(cutoff)
                .load(&mut c)?)
        }
        Db::Sqlite(pool) => {
            let mut c = pool.get()?;
            Ok(diesel::sql_query(sql)
                .bind::<BigInt, _>(experiment_id)
                .bind::<Integer, _>(version)
                .bind::<Text, _>(metric)
                .bind::<BigInt, _>(experiment_id)
                .bind::<Integer, _>(version)
                .bind::<Timestamp, _>(cutoff)
                .load(&mut c)?)
        }
    }
}

// ---------------------------------------------------------------- shadow mode

/// One exposure that carries a shadow candidate's PMF, with its reward on the primary metric.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct ShadowRow {
    #[diesel(sql_type = Text)]
    pub arm: String,
    #[diesel(sql_type = Double)]
    pub propensity: f64,
    /// JSON object arm → probability under the candidate.
    #[diesel(sql_type = Text)]
    pub shadow_pmf: String,
    /// The exposure's total reward on the metric (0 without any).
    #[diesel(sql_type = Double)]
    pub reward: f64,
    /// Its largest single reward (0 without any): a conversion is `max > 0`.
    #[diesel(sql_type = Double)]
    pub max_reward: f64,
}

/// The exposures of (experiment, version) made at or before `cutoff` that carry a
/// `shadow_pmf`, each with its rewards on `metric`.
pub fn shadow_rows(
    db: &Db,
    experiment_id: i64,
    version: i32,
    metric: &str,
    cutoff: NaiveDateTime,
) -> Result<Vec<ShadowRow>, StoreError> {
    const SQL: &str = "SELECT e.arm AS arm, e.propensity AS propensity, e.shadow_pmf AS shadow_pmf, \
         CAST(COALESCE(SUM(r.value), 0.0) AS DOUBLE PRECISION) AS reward, \
         CAST(COALESCE(MAX(r.value), 0.0) AS DOUBLE PRECISION) AS max_reward \
         FROM exposures e LEFT JOIN rewards r ON r.exposure_id = e.id AND r.metric = ? \
         WHERE e.experiment_id = ? AND e.version = ? AND e.created_at <= ? AND e.shadow_pmf IS NOT NULL \
         GROUP BY e.id, e.arm, e.propensity, e.shadow_pmf";
    let sql = if db.is_postgres() { pg_placeholders(SQL) } else { SQL.to_string() };
    Ok(db_run!(db, |conn| {
        diesel::sql_query(&sql)
            .bind::<Text, _>(metric)
            .bind::<BigInt, _>(experiment_id)
            .bind::<Integer, _>(version)
            .bind::<Timestamp, _>(cutoff)
            .load::<ShadowRow>(conn)?
    }))
}

// ---------------------------------------------------------------- API keys

pub fn insert_api_key(db: &Db, key: NewApiKey) -> Result<ApiKeyRow, StoreError> {
    db_run!(db, |conn| {
        Ok(diesel::insert_into(api_keys::table).values(key).returning(ApiKeyRow::as_returning()).get_result(conn)?)
    })
}

pub fn find_api_key(db: &Db, key_hash: &str) -> Result<Option<ApiKeyRow>, StoreError> {
    db_run!(db, |conn| {
        Ok(api_keys::table
            .filter(api_keys::key_hash.eq(key_hash))
            .select(ApiKeyRow::as_select())
            .first(conn)
            .optional()?)
    })
}

pub fn list_api_keys(db: &Db) -> Result<Vec<ApiKeyRow>, StoreError> {
    db_run!(db, |conn| { Ok(api_keys::table.order(api_keys::id.asc()).select(ApiKeyRow::as_select()).load(conn)?) })
}

/// Revokes every key whose prefix matches; returns how many.
pub fn revoke_api_key(db: &Db, prefix: &str) -> Result<usize, StoreError> {
    db_run!(db, |conn| {
        Ok(diesel::update(api_keys::table.filter(api_keys::prefix.eq(prefix)).filter(api_keys::revoked_at.is_null()))
            .set(api_keys::revoked_at.eq(Some(now())))
            .execute(conn)?)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(super::pg_placeholders("a = ? AND b = ?"), "a = $1 AND b = $2");
    }
}
