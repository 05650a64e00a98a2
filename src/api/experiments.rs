//! `/v1/experiments`: create, read, update, list, lifecycle actions and the audit log.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use crate::app::AppState;
use crate::experiment::admin::{self, Action, AdminError};
use crate::experiment::definition::{text_problem, valid_key, Definition};
use crate::store::queries::{self, StoredExperiment, UpdateOutcome};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExperimentView {
    pub key: String,
    pub name: String,
    pub status: String,
    pub version: i32,
    pub promoted_arm: Option<String>,
    /// Policy version now served by this process (null until loaded).
    pub policy_version: Option<i64>,
    /// Probability of each arm under the served snapshot, before eligibility and the floor.
    #[schema(value_type = Option<Object>)]
    pub pmf: Option<serde_json::Map<String, serde_json::Value>>,
    /// UTC, ISO 8601 without an offset (e.g. `2026-11-29T06:00:25.356093`).
    #[schema(value_type = String)]
    pub created_at: chrono::NaiveDateTime,
    /// UTC, ISO 8601 without an offset.
    #[schema(value_type = String)]
    pub updated_at: chrono::NaiveDateTime,
    pub definition: Definition,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UpdateResponse {
    /// `unchanged`, `updated_in_place` or `new_version`.
    pub outcome: String,
    pub experiment: ExperimentView,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// Why: goes to the audit log.
    #[serde(default)]
    #[schema(max_length = 2000, pattern = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$")]
    pub reason: String,
    /// With `conclude`: the arm served to everyone from now on. With `promote` (required):
    /// the arm to promote.
    #[serde(default)]
    pub winner: Option<String>,
    /// With `promote`: share of traffic kept on control, in [0, 1); default: the
    /// experiment's `analysis.holdout`.
    #[serde(default)]
    #[schema(minimum = 0.0, exclusive_maximum = 1.0)]
    pub holdout: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DecisionView {
    pub id: i64,
    pub action: String,
    pub actor: String,
    pub reason: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// UTC, ISO 8601 without an offset.
    #[schema(value_type = String)]
    pub created_at: chrono::NaiveDateTime,
}

fn view(state: &AppState, e: &StoredExperiment) -> ExperimentView {
    let registry = state.registry.load();
    let live = registry.get(&e.row.key).filter(|l| l.version == e.row.current_version);
    ExperimentView {
        key: e.row.key.clone(),
        name: e.row.name.clone(),
        status: e.row.status.clone(),
        version: e.row.current_version,
        promoted_arm: e.row.promoted_arm.clone(),
        policy_version: live.map(|l| l.policy_version),
        pmf: live.map(|l| {
            l.definition
                .arms
                .iter()
                .zip(&l.snapshot.policy.pmf)
                .map(|(a, p)| (a.key.clone(), serde_json::Value::from(*p)))
                .collect()
        }),
        created_at: e.row.created_at,
        updated_at: e.row.updated_at,
        definition: e.definition.clone(),
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(_) => ApiError::unprocessable("invalid_definition", e.to_string()),
            AdminError::Exists(_) => ApiError::conflict("experiment_exists", e.to_string()),
            AdminError::NotFound(_) => ApiError::not_found("experiment_not_found", e.to_string()),
            AdminError::Transition { .. } => ApiError::conflict("invalid_transition", e.to_string()),
            AdminError::UnknownArm(_) => ApiError::unprocessable("unknown_arm", e.to_string()),
            AdminError::InvalidRequest(_) => ApiError::unprocessable("invalid_request", e.to_string()),
            AdminError::NothingToRollBack(_) => ApiError::conflict("nothing_to_roll_back", e.to_string()),
            AdminError::NoShadow(_) => ApiError::not_found("no_shadow_policy", e.to_string()),
            AdminError::Store(s) => s.into(),
        }
    }
}

fn actor(req: &HttpRequest) -> String {
    req.extensions().get::<Caller>().map(|c| c.actor()).unwrap_or_else(|| "unknown".into())
}

/// After a change made here, reload at once so this process serves it immediately.
async fn reload(state: &web::Data<AppState>) {
    state.invalidate();
    let st = state.clone();
    match web::block(move || st.refresh_registry()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "registry reload after change failed"),
        Err(e) => tracing::warn!(error = %e, "registry reload after change failed"),
    }
}

/// List experiments.
#[utoipa::path(get, path = "/v1/experiments", tag = "experiments",
    responses((status = 200, body = Vec<ExperimentView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let st = state.clone();
    let all = web::block(move || queries::list_experiments(&st.db)).await??;
    let views: Vec<ExperimentView> = all.iter().map(|e| view(&state, e)).collect();
    Ok(HttpResponse::Ok().json(views))
}

/// Create an experiment (status `draft` unless the definition asks for `running`).
#[utoipa::path(post, path = "/v1/experiments", tag = "experiments", request_body = Definition,
    responses((status = 201, body = ExperimentView), (status = 409, description = "`experiment_exists`", body = ErrorBody),
        (status = 422, description = "`invalid_definition`: every field and reason", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Definition>,
) -> Result<HttpResponse, ApiError> {
    let def = body.into_inner();
    let who = actor(&req);
    let st = state.clone();
    let created = web::block(move || admin::create(&st.db, &def, &who)).await??;
    reload(&state).await;
    Ok(HttpResponse::Created().json(view(&state, &created)))
}

fn check_path_key(key: &str) -> Result<(), ApiError> {
    if valid_key(key) {
        Ok(())
    } else {
        Err(ApiError::not_found("experiment_not_found", "no such experiment"))
    }
}

async fn load(state: &web::Data<AppState>, key: String) -> Result<StoredExperiment, ApiError> {
    check_path_key(&key)?;
    let st = state.clone();
    let k = key.clone();
    match web::block(move || queries::get_experiment(&st.db, &k)).await? {
        Ok(e) => Ok(e),
        Err(crate::store::StoreError::NotFound) => {
            Err(ApiError::not_found("experiment_not_found", format!("no experiment `{key}`")))
        }
        Err(e) => Err(e.into()),
    }
}

/// Read one experiment.
#[utoipa::path(get, path = "/v1/experiments/{key}", tag = "experiments",
    params(("key" = String, Path, description = "Experiment key")),
    responses((status = 200, body = ExperimentView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let e = load(&state, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(view(&state, &e)))
}

/// Replace an experiment's definition. Changing arms or policy makes a new version.
#[utoipa::path(put, path = "/v1/experiments/{key}", tag = "experiments", request_body = Definition,
    params(("key" = String, Path, description = "Experiment key")),
    responses((status = 200, body = UpdateResponse), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<Definition>,
) -> Result<HttpResponse, ApiError> {
    let key = path.into_inner();
    check_path_key(&key)?;
    let def = body.into_inner();
    if def.key != key {
        return Err(ApiError::unprocessable(
            "key_mismatch",
            format!("the body's key `{}` differs from the path's `{key}`", def.key),
        ));
    }
    let who = actor(&req);
    let st = state.clone();
    let (stored, outcome) = web::block(move || admin::update(&st.db, &def, &who)).await??;
    reload(&state).await;
    let outcome = match outcome {
        UpdateOutcome::Unchanged => "unchanged",
        UpdateOutcome::UpdatedInPlace => "updated_in_place",
        UpdateOutcome::NewVersion(_) => "new_version",
    };
    Ok(HttpResponse::Ok().json(UpdateResponse { outcome: outcome.into(), experiment: view(&state, &stored) }))
}

/// Lifecycle: `start`, `pause`, `resume`, `conclude` (optionally with a winner), `stop`,
/// `promote` (with `winner`, optionally `holdout`) or `rollback` (undo the last promotion or
/// version change). Each goes to the audit log with the latest analysis.
#[utoipa::path(post, path = "/v1/experiments/{key}/{action}", tag = "experiments", request_body = Option<ActionRequest>,
    params(("key" = String, Path, description = "Experiment key"), ("action" = Action, Path, description = "start | pause | resume | conclude | stop | promote | rollback")),
    responses((status = 200, body = ExperimentView), (status = 404, body = ErrorBody),
        (status = 409, description = "`invalid_transition`", body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn action(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Raw, so an empty body needs no content type; read under the same limit as JSON bodies.
    let body = super::error::read_body(payload, state.max_body_bytes).await?;
    let (key, action) = path.into_inner();
    check_path_key(&key)?;
    let action = Action::parse(&action).ok_or_else(|| {
        ApiError::not_found("unknown_action", "actions are start, pause, resume, conclude, stop, promote and rollback")
    })?;
    let body: ActionRequest = optional_body(&body)?;
    check_reason(&body.reason)?;
    let who = actor(&req);
    let st = state.clone();
    let stored = web::block(move || match action {
        admin::Action::Promote => {
            let arm = body.winner.as_deref().ok_or_else(|| {
                admin::AdminError::InvalidRequest("`promote` needs the arm to promote in `winner`".into())
            })?;
            let holdout = match body.holdout {
                Some(h) => h,
                None => queries::get_experiment(&st.db, &key)
                    .map(|e| e.definition.analysis.holdout)
                    .map_err(admin::AdminError::Store)?,
            };
            admin::promote(&st.db, &key, arm, holdout, &who, &body.reason, serde_json::Value::Null)
        }
        _ => admin::transition(&st.db, &key, action, &who, &body.reason, body.winner.as_deref()),
    })
    .await??;
    reload(&state).await;
    Ok(HttpResponse::Ok().json(view(&state, &stored)))
}

/// The audit log of one experiment: every change and decision, oldest first.
#[utoipa::path(get, path = "/v1/experiments/{key}/decisions", tag = "experiments",
    params(("key" = String, Path, description = "Experiment key")),
    responses((status = 200, body = Vec<DecisionView>), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn decisions(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let e = load(&state, path.into_inner()).await?;
    let st = state.clone();
    let rows = web::block(move || queries::list_decisions(&st.db, e.row.id)).await??;
    let out: Vec<DecisionView> = rows
        .into_iter()
        .map(|d| DecisionView {
            id: d.id,
            action: d.action,
            actor: d.actor,
            reason: d.reason,
            details: serde_json::from_str(&d.details).unwrap_or(serde_json::Value::Null),
            created_at: d.created_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ResultsQuery {
    /// An RFC 3339 time: the analysis in force then (the newest made at or before it).
    pub at: Option<String>,
}

/// The latest analysis of an experiment (or the one in force at `?at=`): per arm and
/// metric, mature and immature exposures, conversions, means, uplift (absolute and
/// relative, each with the always-valid and the fixed-horizon interval), p-values
/// (always-valid, fixed-horizon, Holm-adjusted), P(best), expected loss, SRM, guardrails,
/// the decision state and what is still missing for a decision.
#[utoipa::path(get, path = "/v1/experiments/{key}/results", tag = "experiments",
    params(("key" = String, Path, description = "Experiment key"), ResultsQuery),
    responses((status = 200, body = crate::analysis::job::StoredResult),
        (status = 404, description = "`experiment_not_found` or `no_analysis_yet`", body = ErrorBody),
        (status = 422, description = "`invalid_query`", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn results(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<ResultsQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::unprocessable("invalid_query", format!("the query string is not understood: {e}")))?;
    let at = match &query.at {
        None => None,
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| {
                    ApiError::unprocessable(
                        "invalid_query",
                        format!("`at` must be an RFC 3339 time such as 2026-11-29T10:00:00Z ({e})"),
                    )
                })?
                .naive_utc(),
        ),
    };
    let e = load(&state, path.into_inner()).await?;
    let st = state.clone();
    let id = e.row.id;
    let row = web::block(move || crate::store::analysis::latest_analysis(&st.db, id, None, at)).await??;
    match row {
        Some(row) => Ok(HttpResponse::Ok().content_type("application/json").body(row.result)),
        None => Err(ApiError::not_found(
            "no_analysis_yet",
            format!(
                "`{}` has no analysis{}; the analyzer runs every analyzer_interval (default 5m)",
                e.row.key,
                if at.is_some() { " at or before that time" } else { " yet" }
            ),
        )),
    }
}

// ---------------------------------------------------------------- shadow mode

/// A shadow candidate and how it compares with the live policy on the logged data.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShadowView {
    pub experiment: String,
    pub version: i32,
    /// The live policy's kind.
    pub live_kind: String,
    /// The candidate's kind.
    pub candidate_kind: String,
    pub auto_promote: bool,
    /// Exposures made at or before this time (UTC; `now − reward_wait`) are evaluated.
    #[schema(value_type = String)]
    pub cutoff: chrono::NaiveDateTime,
    /// The candidate's context-free PMF (before eligibility and the floor), as its latest
    /// state has it; null for a contextual candidate or before any state is loaded.
    #[schema(value_type = Option<Object>)]
    pub candidate_pmf: Option<serde_json::Map<String, serde_json::Value>>,
    pub evaluation: crate::learner::shadow::ShadowEvaluation,
}

/// Body of the shadow actions (optional).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowActionRequest {
    /// Why: goes to the audit log.
    #[serde(default)]
    #[schema(max_length = 2000, pattern = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$")]
    pub reason: String,
}

async fn shadow_reason(state: &web::Data<AppState>, payload: web::Payload) -> Result<String, ApiError> {
    let body = super::error::read_body(payload, state.max_body_bytes).await?;
    let body: ShadowActionRequest = optional_body(&body)?;
    check_reason(&body.reason)?;
    Ok(body.reason)
}

/// An optional JSON body: empty (or blank) is the type's default; malformed JSON is a 400,
/// JSON of the wrong shape a 422.
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::unprocessable("invalid_request", format!("the request does not match the schema: {e}"))
        } else {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        }
    })
}

/// An audit-log reason: at most 2000 characters, no control characters but newlines and tabs.
fn check_reason(reason: &str) -> Result<(), ApiError> {
    if reason.chars().count() > 2000 {
        return Err(ApiError::unprocessable("invalid_reason", "`reason` is at most 2000 characters"));
    }
    if let Some(why) = text_problem(reason, true) {
        return Err(ApiError::unprocessable("invalid_reason", format!("`reason` {why}")));
    }
    Ok(())
}

/// Shadow mode: the candidate's off-policy value (SNIPW over the matured exposures that
/// logged its PMF, with its interval at `shadow.confidence`), the live policy's on-policy
/// value over the same exposures, the effective sample size, and the rule's decision
/// (`promote` when the candidate's lower bound beats the live value after
/// `shadow.min_exposures` exposures, else `keep_live` or `insufficient_data`).
#[utoipa::path(get, path = "/v1/experiments/{key}/shadow", tag = "experiments",
    params(("key" = String, Path, description = "Experiment key")),
    responses((status = 200, body = ShadowView),
        (status = 404, description = "`experiment_not_found` or `no_shadow_policy`", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn shadow(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let e = load(&state, path.into_inner()).await?;
    let Some(candidate) = e.definition.shadow.clone() else {
        return Err(AdminError::NoShadow(e.row.key.clone()).into());
    };
    let cutoff = crate::experiment::definition::time_before(crate::store::now(), e.definition.reward_wait_duration());
    let st = state.clone();
    let stored = e.clone();
    let evaluation = web::block(move || crate::learner::shadow::evaluate_stored(&st.db, &stored, cutoff))
        .await??
        .ok_or_else(|| ApiError::from(AdminError::NoShadow(e.row.key.clone())))?;
    let candidate_pmf = if candidate.policy.is_contextual() {
        None
    } else {
        let registry = state.registry.load();
        registry.get(&e.row.key).filter(|l| l.version == e.row.current_version).and_then(|l| {
            l.snapshot.shadow.as_ref().map(|s| {
                l.definition
                    .arms
                    .iter()
                    .zip(&s.policy.pmf)
                    .map(|(a, p)| (a.key.clone(), serde_json::Value::from(*p)))
                    .collect()
            })
        })
    };
    Ok(HttpResponse::Ok().json(ShadowView {
        experiment: e.row.key.clone(),
        version: e.row.current_version,
        live_kind: e.definition.policy.kind().into(),
        candidate_kind: candidate.policy.kind().into(),
        auto_promote: candidate.auto_promote,
        cutoff,
        candidate_pmf,
        evaluation,
    }))
}

/// Shadow mode: an admin makes the candidate live now, whatever the numbers (a new version
/// whose policy is the candidate); audited as `promote_shadow` with the caller as actor and
/// the evaluation at that moment.
#[utoipa::path(post, path = "/v1/experiments/{key}/shadow/promote", tag = "experiments",
    request_body = Option<ShadowActionRequest>,
    params(("key" = String, Path, description = "Experiment key")),
    responses((status = 200, body = ExperimentView),
        (status = 404, description = "`experiment_not_found` or `no_shadow_policy`", body = ErrorBody),
        (status = 409, description = "`invalid_transition`: not running or paused", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn shadow_promote(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    shadow_action(state, req, path, payload, |db, key, who, reason| {
        let current = queries::get_experiment(db, &key).map_err(|e| match e {
            crate::store::StoreError::NotFound => AdminError::NotFound(key.clone()),
            other => AdminError::Store(other),
        })?;
        let cutoff =
            crate::experiment::definition::time_before(crate::store::now(), current.definition.reward_wait_duration());
        let evaluation = crate::learner::shadow::evaluate_stored(db, &current, cutoff)?
            .map(|e| serde_json::to_value(e).unwrap_or_default())
            .unwrap_or_default();
        admin::promote_shadow(db, &key, &who, &reason, evaluation)
    })
    .await
}

/// The shared shape of the shadow actions: the path key, the optional reason, the caller as
/// actor, the change in the blocking pool, then the registry reload and the new view.
async fn shadow_action(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    act: impl FnOnce(&crate::store::Db, String, String, String) -> Result<queries::StoredExperiment, AdminError>
        + Send
        + 'static,
) -> Result<HttpResponse, ApiError> {
    let key = path.into_inner();
    check_path_key(&key)?;
    let reason = shadow_reason(&state, payload).await?;
    let who = actor(&req);
    let st = state.clone();
    let stored = web::block(move || act(&st.db, key, who, reason)).await??;
    reload(&state).await;
    Ok(HttpResponse::Ok().json(view(&state, &stored)))
}

/// Shadow mode: drop the candidate (a new version without `[shadow]`), audited as
/// `drop_shadow`.
#[utoipa::path(delete, path = "/v1/experiments/{key}/shadow", tag = "experiments",
    request_body = Option<ShadowActionRequest>,
    params(("key" = String, Path, description = "Experiment key")),
    responses((status = 200, body = ExperimentView),
        (status = 404, description = "`experiment_not_found` or `no_shadow_policy`", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn shadow_drop(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    shadow_action(state, req, path, payload, |db, key, who, reason| admin::drop_shadow(db, &key, &who, &reason)).await
}
