//! `POST /v1/assign` and `POST /v1/assign/batch`: which strategy to show this unit.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use crate::app::AppState;
use crate::experiment::context::parse_context;
use crate::experiment::registry::{Draw, LiveExperiment, LoggedContext, PolicyInput, Unlogged};
use crate::keys::pseudonymise;
use crate::policy::neural::NeuralContext;
use crate::scoring::ScoringError;
use crate::store::models::ExposureRow;
use crate::store::writer::{ExposureWrite, StickyClaim, WriteItem, WriteOutcome};

pub const MAX_ID_LEN: usize = 256;
pub const MAX_BATCH: usize = 500;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    /// Experiment key.
    pub experiment: String,
    /// The shopper (or session) id; stored only as a keyed hash.
    #[schema(min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub unit_id: String,
    /// Makes the draw repeatable: the same (unit, request id) gets the same arm.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub request_id: Option<String>,
    /// Flat attributes: numbers, strings or booleans.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    /// Restrict the draw to these arms (e.g. out-of-stock bundles excluded).
    #[serde(default)]
    pub eligible_arms: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AssignResponse {
    /// Id to report rewards against; null when the decision was not logged.
    pub exposure_id: Option<String>,
    pub experiment: String,
    pub arm: String,
    #[schema(value_type = Object)]
    pub payload: Arc<serde_json::Value>,
    /// Exact probability with which this arm was drawn (1 for an unlogged default).
    pub propensity: f64,
    pub policy_version: i64,
    pub logged: bool,
    /// Why the decision was not logged (`not_running`, `outside_traffic`, `not_targeted`,
    /// `store_unavailable`); absent when logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBatchRequest {
    #[schema(min_items = 1, max_items = 500)]
    pub requests: Vec<AssignRequest>,
}

/// One result per request, in order: a decision, or an error body.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum AssignResult {
    Ok(AssignResponse),
    Err(ErrorBody),
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AssignBatchResponse {
    pub results: Vec<AssignResult>,
}

/// A unit or request id: 1–256 characters, no control characters.
pub fn check_id(field: &'static str, code: &'static str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.chars().count() > MAX_ID_LEN || v.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            code,
            format!("`{field}` must be 1–{MAX_ID_LEN} characters without control characters"),
        ));
    }
    Ok(())
}

fn unlogged(exp: &LiveExperiment, arm: usize, reason: Unlogged, state: &AppState) -> AssignResponse {
    state.metrics.unlogged_decisions.with_label_values(&[&exp.key, reason.as_str()]).inc();
    AssignResponse {
        exposure_id: None,
        experiment: exp.key.clone(),
        arm: exp.definition.arms[arm].key.clone(),
        payload: exp.payloads[arm].clone(),
        propensity: 1.0,
        policy_version: exp.policy_version,
        logged: false,
        reason: Some(reason.as_str().to_string()),
    }
}

/// Decides, logs and answers one request; a decision's latency goes to
/// `strategist_decision_duration_seconds{experiment, logged}`.
pub async fn assign_one(state: &web::Data<AppState>, req: AssignRequest) -> Result<AssignResponse, ApiError> {
    let started = std::time::Instant::now();
    let res = decide_one(state, req).await;
    if let Ok(r) = &res {
        let logged = if r.logged { "true" } else { "false" };
        state
            .metrics
            .decision_duration
            .with_label_values(&[&r.experiment, logged])
            .observe(started.elapsed().as_secs_f64());
    }
    res
}

async fn decide_one(state: &web::Data<AppState>, req: AssignRequest) -> Result<AssignResponse, ApiError> {
    check_id("unit_id", "invalid_unit_id", &req.unit_id)?;
    if let Some(r) = &req.request_id {
        check_id("request_id", "invalid_request_id", r)?;
    }
    let registry = state.registry.load();
    let exp = registry.get(&req.experiment).cloned().ok_or_else(|| {
        ApiError::not_found("experiment_not_found", format!("no experiment `{}`", truncate(&req.experiment)))
    })?;
    drop(registry);
    let ctx = match &req.context {
        Some(raw) => parse_context(raw).map_err(|e| ApiError::unprocessable("invalid_context", e.to_string()))?,
        None => Default::default(),
    };
    let n = exp.definition.arms.len();
    let eligible: Vec<bool> = match &req.eligible_arms {
        None => vec![true; n],
        Some(list) => {
            if list.is_empty() {
                return Err(ApiError::unprocessable("no_eligible_arms", "`eligible_arms` must name at least one arm"));
            }
            let mut e = vec![false; n];
            for k in list {
                let i = exp.definition.arm_index(k).ok_or_else(|| {
                    ApiError::unprocessable("unknown_arm", format!("`{}` is not an arm of `{}`", truncate(k), exp.key))
                })?;
                e[i] = true;
            }
            e
        }
    };
    let request_id = req.request_id.clone().unwrap_or_else(|| crate::keys::random_id().to_string());
    let unit_hash = pseudonymise(&state.unit_secret, &req.unit_id);
    // A contextual policy reads the unit's stored profile (plus the request's attributes),
    // encoded by the experiment's feature schema; units that get no draw skip the read.
    let features = match &exp.definition.features {
        Some(schema) if exp.excluded(&req.unit_id, &ctx).is_none() => {
            let st = state.clone();
            let uh = unit_hash.clone();
            let loaded = if state.db_up() {
                web::block(move || crate::store::profiles::load_profile(&st.db, &uh)).await.ok().and_then(Result::ok)
            } else {
                None
            };
            let Some(profile) = loaded else {
                return Ok(unlogged(&exp, exp.default_arm_among(&eligible), Unlogged::StoreUnavailable, state));
            };
            let now = crate::store::now();
            let profile = profile.map(|p| p.state).unwrap_or_default();
            let x = schema.encode(&profile.features(now), &ctx);
            // neural_pg (live or shadow candidate) also reads the unit's recent events; the
            // decision time is logged with them so the learner rebuilds exactly the scored
            // input (a linear policy beside it reads the logged `x`).
            Some(if exp.definition.logs_neural_context() {
                LoggedContext::Neural(NeuralContext::new(x, &Vec::from(profile.recent), now))
            } else {
                LoggedContext::Linear(x)
            })
        }
        _ => None,
    };
    // neural_pg: the network scores through the micro-batcher (or inline), off the draw; a
    // neural_pg shadow candidate's network scores the same context at the same time, through
    // its own batcher. The candidate never fails the request: without its PMF the exposure
    // is logged without `shadow_pmf`.
    let neural_candidate = exp.definition.shadow.as_ref().is_some_and(|s| s.policy.is_neural());
    let (scored, shadow_scored) = match features.as_ref().and_then(LoggedContext::neural) {
        Some(c) => {
            let live = async {
                if exp.definition.policy.is_neural() {
                    Some(exp.neural_pmf(c).await)
                } else {
                    None
                }
            };
            let shadow = async {
                if neural_candidate {
                    Some(exp.shadow_neural_pmf(c).await)
                } else {
                    None
                }
            };
            futures_util::future::join(live, shadow).await
        }
        None => (None, None),
    };
    let scored = scored.transpose().map_err(|e| match e {
        ScoringError::Overloaded { .. } => {
            ApiError::new(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, e.code(), e.to_string())
        }
        ScoringError::Model { code: "invalid_context", .. } => ApiError::unprocessable(e.code(), e.to_string()),
        other => ApiError::internal(other),
    })?;
    let shadow_scored = match shadow_scored {
        Some(Err(e)) => {
            tracing::warn!(experiment = %exp.key, error = %e, "neural shadow candidate could not score the request");
            None
        }
        other => other.and_then(Result::ok),
    };
    let input = PolicyInput::for_spec(&exp.definition.policy, features.as_ref(), scored.as_deref());
    let draw = exp
        .decide(&req.unit_id, &request_id, &ctx, input, &eligible)
        .map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
    let (mut arm, mut propensity, pmf) = match draw {
        Draw::Default { arm, reason } => return Ok(unlogged(&exp, arm, reason, state)),
        Draw::Drawn { arm, propensity, pmf } => (arm, propensity, pmf),
    };
    if !state.db_up() {
        return Ok(unlogged(&exp, exp.default_arm_among(&eligible), Unlogged::StoreUnavailable, state));
    }
    let created_at = crate::store::now();
    // Sticky: a unit keeps its first arm (and that draw's propensity) for the version while
    // that arm is eligible. A remembered assignment is applied here; otherwise the draw goes
    // to the log writer as the unit's claim, and the writer resolves it in the same
    // transaction that logs the exposure (one commit for the batch, no extra round trip).
    let mut sticky = None;
    let cache_key = exp.definition.sticky.then(|| (exp.id, exp.version, unit_hash.clone()));
    if let Some(key) = &cache_key {
        match state.sticky_cached(key) {
            Some((stored_arm, stored_propensity)) => {
                if let Some(i) = exp.definition.arm_index(&stored_arm).filter(|i| eligible[*i]) {
                    arm = i;
                    propensity = stored_propensity;
                }
            }
            None => {
                sticky = Some(StickyClaim { eligible: req.eligible_arms.clone() });
            }
        }
    }
    let pmf_json = pmf_object(&exp, &pmf);
    // Shadow mode: the candidate's PMF for the same request, logged beside the live one;
    // the served arm and its propensity stay the live policy's.
    let shadow_input = match &exp.definition.shadow {
        Some(s) => PolicyInput::for_spec(&s.policy, features.as_ref(), shadow_scored.as_deref()),
        None => PolicyInput::None,
    };
    let shadow_pmf = match exp.shadow_pmf(&req.unit_id, &request_id, shadow_input, &eligible) {
        // A neural candidate that could not score (warned above) logs nothing.
        _ if neural_candidate && shadow_scored.is_none() => None,
        Ok(p) => p.map(|p| serde_json::Value::Object(pmf_object(&exp, &p)).to_string()),
        Err(e) => {
            tracing::warn!(experiment = %exp.key, error = %e, "shadow candidate could not score the request");
            None
        }
    };
    let exposure_id = crate::keys::time_ordered_id().to_string();
    let row = ExposureRow {
        id: exposure_id.clone(),
        experiment_id: exp.id,
        version: exp.version,
        unit_hash,
        request_id,
        arm: exp.definition.arms[arm].key.clone(),
        propensity,
        pmf: serde_json::Value::Object(pmf_json).to_string(),
        context: serde_json::to_string(&ctx).map_err(ApiError::internal)?,
        policy_version: exp.policy_version,
        created_at,
        features: features.map(|x| serde_json::to_string(&x)).transpose().map_err(ApiError::internal)?,
        shadow_pmf,
    };
    match state.writer.write(WriteItem::Exposure(ExposureWrite { row, sticky })).await {
        Ok(WriteOutcome::Logged { arm: logged_arm, propensity, sticky }) => {
            if let (Some(key), Some(held)) = (cache_key, sticky) {
                state.sticky_remember(key, held);
            }
            let arm = exp.definition.arm_index(&logged_arm).unwrap_or(arm);
            state.metrics.decisions.with_label_values(&[&exp.key, &exp.definition.arms[arm].key]).inc();
            Ok(AssignResponse {
                exposure_id: Some(exposure_id),
                experiment: exp.key.clone(),
                arm: exp.definition.arms[arm].key.clone(),
                payload: exp.payloads[arm].clone(),
                propensity,
                policy_version: exp.policy_version,
                logged: true,
                reason: None,
            })
        }
        Ok(other) => Err(ApiError::internal(format!("the log writer answered {other:?} for an exposure"))),
        Err(e) => {
            if !e.is_unavailable() {
                tracing::error!(error = %e, experiment = %exp.key, "exposure not stored");
            }
            Ok(unlogged(&exp, exp.default_arm_among(&eligible), Unlogged::StoreUnavailable, state))
        }
    }
}

/// A PMF over the experiment's arms as the JSON object logged with exposures (arm →
/// probability, zero entries left out).
fn pmf_object(exp: &LiveExperiment, pmf: &[f64]) -> serde_json::Map<String, serde_json::Value> {
    exp.definition
        .arms
        .iter()
        .zip(pmf)
        .filter(|(_, p)| **p > 0.0)
        .map(|(a, p)| (a.key.clone(), serde_json::Value::from(*p)))
        .collect()
}

/// Cuts user-supplied text echoed in messages to a sane length.
pub fn truncate(s: &str) -> String {
    let mut t: String = s.chars().filter(|c| !c.is_control()).take(80).collect();
    if s.chars().count() > 80 {
        t.push('…');
    }
    t
}

/// Choose an arm for one unit.
#[utoipa::path(
    post, path = "/v1/assign", tag = "decisions",
    request_body = AssignRequest,
    responses(
        (status = 200, description = "The decision", body = AssignResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown key", body = ErrorBody),
        (status = 403, description = "Key lacks the `assign` scope", body = ErrorBody),
        (status = 404, description = "Unknown experiment (`experiment_not_found`)", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn assign(state: web::Data<AppState>, body: web::Json<AssignRequest>) -> Result<HttpResponse, ApiError> {
    let res = assign_one(&state, body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(res))
}

/// Choose arms for up to 500 requests at once; each result is a decision or an error.
#[utoipa::path(
    post, path = "/v1/assign/batch", tag = "decisions",
    request_body = AssignBatchRequest,
    responses(
        (status = 200, description = "One result per request, in order", body = AssignBatchResponse),
        (status = 401, description = "Missing or unknown key", body = ErrorBody),
        (status = 403, description = "Key lacks the `assign` scope", body = ErrorBody),
        (status = 422, description = "Empty or oversized batch", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn assign_batch(
    state: web::Data<AppState>,
    body: web::Json<AssignBatchRequest>,
) -> Result<HttpResponse, ApiError> {
    let results = super::run_batch(body.into_inner().requests, MAX_BATCH, |r| {
        let state = state.clone();
        async move { assign_one(&state, r).await }
    })
    .await?
    .into_iter()
    .map(|r| r.map_or_else(AssignResult::Err, AssignResult::Ok))
    .collect();
    Ok(HttpResponse::Ok().json(AssignBatchResponse { results }))
}
