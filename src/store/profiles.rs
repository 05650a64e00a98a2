//! Behaviour events and the profiles they fold into.
//!
//! `record_events` stores a batch of events (a repeated event id is skipped) and folds
//! the new ones into their units' profiles in the same transaction, so a profile always
//! equals the fold of its stored events. Units are locked in a fixed order (sorted
//! hashes; `SELECT … FOR UPDATE` on Postgres, an immediate transaction on SQLite) so two
//! concurrent batches for the same unit serialise instead of losing an update.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::{Db, StoreError};
use crate::profile::{Event, ProfileState};

diesel::table! {
    events (event_id) {
        event_id -> Text,
        unit_hash -> Text,
        kind -> Text,
        amount -> Double,
        category -> Nullable<Text>,
        occurred_at -> Timestamp,
        received_at -> Timestamp,
    }
}

diesel::table! {
    profiles (unit_hash) {
        unit_hash -> Text,
        state -> Text,
        events -> BigInt,
        updated_at -> Timestamp,
    }
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = events)]
struct EventRow<'a> {
    event_id: &'a str,
    unit_hash: &'a str,
    kind: &'a str,
    amount: f64,
    category: Option<&'a str>,
    occurred_at: NaiveDateTime,
    received_at: NaiveDateTime,
}

/// One event to store: its id (idempotency), pseudonymised unit, and content.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub unit_hash: String,
    pub event: Event,
}

/// A stored profile.
#[derive(Debug, Clone)]
pub struct StoredProfile {
    pub state: ProfileState,
    pub events: i64,
    pub updated_at: NaiveDateTime,
}

fn parse_state(text: &str) -> Result<ProfileState, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("profile state: {e}")))
}

fn state_json(state: &ProfileState) -> Result<String, StoreError> {
    serde_json::to_string(state).map_err(|e| StoreError::Corrupt(format!("profile state: {e}")))
}

/// Stores the events and folds the new ones into their profiles, in one transaction.
/// Returns, per event in order, whether it was new (false: its id was already stored).
pub fn record_events(db: &Db, batch: &[NewEvent], now: NaiveDateTime) -> Result<Vec<bool>, StoreError> {
    // The same steps on both backends; only the profile read differs: Postgres locks the
    // row (`FOR UPDATE`), SQLite's immediate transaction already holds the write lock.
    macro_rules! fold_batch {
        ($conn:expr, |$q:ident| $load:expr) => {{
            let conn = $conn;
            let mut inserted = Vec::with_capacity(batch.len());
            let mut per_unit: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
            for e in batch {
                let n = diesel::insert_into(events::table)
                    .values(&EventRow {
                        event_id: &e.event_id,
                        unit_hash: &e.unit_hash,
                        kind: e.event.kind.as_str(),
                        amount: e.event.amount,
                        category: e.event.category.as_deref(),
                        occurred_at: e.event.at,
                        received_at: now,
                    })
                    .on_conflict_do_nothing()
                    .execute(conn)?;
                inserted.push(n == 1);
                if n == 1 {
                    per_unit.entry(e.unit_hash.as_str()).or_default().push(&e.event);
                }
            }
            // BTreeMap order: every batch locks its units in the same (sorted) order.
            for (unit, new_events) in per_unit {
                let $q =
                    profiles::table.filter(profiles::unit_hash.eq(unit)).select((profiles::state, profiles::events));
                let row: Option<(String, i64)> = $load.first(conn).optional()?;
                let (mut state, count) = match row {
                    Some((s, n)) => (parse_state(&s)?, n),
                    None => (ProfileState::default(), 0),
                };
                for e in &new_events {
                    state.fold(e);
                }
                let json = state_json(&state)?;
                let total = count + new_events.len() as i64;
                diesel::insert_into(profiles::table)
                    .values((
                        profiles::unit_hash.eq(unit),
                        profiles::state.eq(&json),
                        profiles::events.eq(total),
                        profiles::updated_at.eq(now),
                    ))
                    .on_conflict(profiles::unit_hash)
                    .do_update()
                    .set((profiles::state.eq(&json), profiles::events.eq(total), profiles::updated_at.eq(now)))
                    .execute(conn)?;
            }
            Ok::<_, StoreError>(inserted)
        }};
    }
    match db {
        Db::Pg(pool) => {
            let mut conn = pool.get()?;
            // A unit seen for the first time has no row to lock: create it empty first
            // (a concurrent batch then waits on that row instead of racing the insert).
            conn.transaction(|c| {
                let mut units: Vec<&str> = batch.iter().map(|e| e.unit_hash.as_str()).collect();
                units.sort_unstable();
                units.dedup();
                let empty = state_json(&ProfileState::default())?;
                for u in units {
                    diesel::insert_into(profiles::table)
                        .values((
                            profiles::unit_hash.eq(u),
                            profiles::state.eq(&empty),
                            profiles::events.eq(0i64),
                            profiles::updated_at.eq(now),
                        ))
                        .on_conflict_do_nothing()
                        .execute(c)?;
                }
                fold_batch!(c, |q| q.for_update())
            })
        }
        Db::Sqlite(pool) => {
            let mut conn = pool.get()?;
            conn.immediate_transaction(|c| fold_batch!(c, |q| q))
        }
    }
}

/// A unit's stored profile, if it has one.
pub fn load_profile(db: &Db, unit_hash: &str) -> Result<Option<StoredProfile>, StoreError> {
    let row: Option<(String, i64, NaiveDateTime)> = crate::db_run!(db, |conn| {
        profiles::table
            .filter(profiles::unit_hash.eq(unit_hash))
            .select((profiles::state, profiles::events, profiles::updated_at))
            .first(conn)
            .optional()?
    });
    row.map(|(s, events, updated_at)| Ok(StoredProfile { state: parse_state(&s)?, events, updated_at })).transpose()
}

/// One matured exposure of a contextual policy, with what the learner needs.
#[derive(Debug, Clone, PartialEq, diesel::QueryableByName)]
pub struct LearningRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub arm: String,
    /// The encoded context (JSON array) the policy scored.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub features: String,
    #[diesel(sql_type = diesel::sql_types::Timestamp)]
    pub created_at: NaiveDateTime,
    /// The exposure's total of `metric` (0 without a reward).
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub reward: f64,
}

/// The exposures of (experiment, version) created in `(after, until]` that carry an
/// encoded context, each with its total reward on `metric`, oldest first.
pub fn learning_rows(
    db: &Db,
    experiment_id: i64,
    version: i32,
    metric: &str,
    after: NaiveDateTime,
    until: NaiveDateTime,
) -> Result<Vec<LearningRow>, StoreError> {
    use diesel::sql_types::{BigInt, Integer, Text, Timestamp};
    const SQL: &str = "SELECT e.arm AS arm, e.features AS features, e.created_at AS created_at, \
         COALESCE(SUM(r.value), 0.0) AS reward \
         FROM exposures e LEFT JOIN rewards r ON r.exposure_id = e.id AND r.metric = ? \
         WHERE e.experiment_id = ? AND e.version = ? AND e.created_at > ? AND e.created_at <= ? \
         AND e.features IS NOT NULL \
         GROUP BY e.id, e.arm, e.features, e.created_at ORDER BY e.created_at, e.id";
    let sql = if db.is_postgres() { super::queries::pg_placeholders(SQL) } else { SQL.to_string() };
    Ok(crate::db_run!(db, |conn| {
        diesel::sql_query(&sql)
            .bind::<Text, _>(metric)
            .bind::<BigInt, _>(experiment_id)
            .bind::<Integer, _>(version)
            .bind::<Timestamp, _>(after)
            .bind::<Timestamp, _>(until)
            .load::<LearningRow>(conn)?
    }))
}
