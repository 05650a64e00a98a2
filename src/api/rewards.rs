//! `POST /v1/rewards` and `POST /v1/rewards/batch`: outcomes joined to exposures.
//!
//! A reward names an exposure, or a unit (then it goes to that unit's latest exposure in
//! each running experiment that defines the metric and whose attribution window still
//! covers it: last touch). Each reward carries an idempotency key, scoped to its metric:
//! a repeat is stored once and answered `duplicate: true`.

use std::collections::HashSet;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::assign::{check_id, truncate};
use super::error::{ApiError, ErrorBody};
use crate::app::AppState;
use crate::experiment::definition::{
    parse_duration, time_before, to_chrono, valid_key, Direction, MetricDef, MetricKind,
};
use crate::experiment::registry::LiveExperiment;
use crate::experiment::Status;
use crate::keys::pseudonymise;
use crate::store::models::{ExposureRow, RewardRow};
use crate::store::queries;
use crate::store::writer::{RewardWrite, WriteItem, WriteOutcome};

pub const MAX_BATCH: usize = 500;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardRequest {
    /// The exposure this outcome belongs to (from `/v1/assign`).
    #[serde(default)]
    #[schema(pattern = "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")]
    pub exposure_id: Option<String>,
    /// Or the unit: attributed to its latest exposure in each running experiment.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub unit_id: Option<String>,
    /// With `unit_id`: only this experiment.
    #[serde(default)]
    pub experiment: Option<String>,
    /// A metric of the experiment (primary or guardrail).
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub metric: String,
    /// conversion: 0 or 1; revenue and profit: the order's revenue; custom: any number.
    pub value: f64,
    /// A repeat of the same key for the same metric counts once.
    #[schema(min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub idempotency_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Attribution {
    pub experiment: String,
    pub exposure_id: String,
    pub arm: String,
    /// The value stored: profit after the arm's cost, negated for lower-is-better metrics.
    pub value: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RewardResponse {
    pub accepted: bool,
    /// True when this idempotency key was already stored: nothing new was counted.
    pub duplicate: bool,
    pub attributions: Vec<Attribution>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardBatchRequest {
    #[schema(min_items = 1, max_items = 500)]
    pub rewards: Vec<RewardRequest>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum RewardResult {
    Ok(RewardResponse),
    Err(ErrorBody),
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RewardBatchResponse {
    pub results: Vec<RewardResult>,
}

/// The value to store for a reported one, or why it is refused.
pub fn stored_value(metric: &MetricDef, value: f64, cost: f64, cost_rate: f64) -> Result<f64, ApiError> {
    if !value.is_finite() {
        return Err(ApiError::unprocessable("invalid_reward_value", "`value` must be a finite number"));
    }
    let v = match metric.kind {
        MetricKind::Conversion if value != 0.0 && value != 1.0 => {
            return Err(ApiError::unprocessable(
                "invalid_reward_value",
                format!("`{}` is a conversion metric: `value` must be 0 or 1", metric.name),
            ))
        }
        MetricKind::Profit => value * (1.0 - cost_rate) - cost,
        _ => value,
    };
    Ok(match metric.direction {
        Direction::Higher => v,
        Direction::Lower => -v,
    })
}

fn attribution_for(
    exp: &LiveExperiment,
    exposure: &ExposureRow,
    metric: &MetricDef,
    value: f64,
    key: &str,
    now: chrono::NaiveDateTime,
) -> Result<RewardRow, ApiError> {
    let window = parse_duration(&metric.window).map_err(ApiError::internal)?;
    // Saturating: a window stored before `validate` bounded it (365 days) covers everything.
    if now.signed_duration_since(exposure.created_at) > to_chrono(window) {
        return Err(ApiError::unprocessable(
            "outside_attribution_window",
            format!("exposure {} is older than the `{}` window of {}", exposure.id, metric.name, metric.window),
        ));
    }
    let (cost, rate) =
        exp.definition.arms.iter().find(|a| a.key == exposure.arm).map(|a| (a.cost, a.cost_rate)).unwrap_or((0.0, 0.0));
    let stored = stored_value(metric, value, cost, rate)?;
    Ok(RewardRow {
        id: crate::keys::time_ordered_id().to_string(),
        exposure_id: exposure.id.clone(),
        experiment_id: exposure.experiment_id,
        version: exposure.version,
        arm: exposure.arm.clone(),
        metric: metric.name.clone(),
        value: stored,
        raw_value: value,
        idempotency_key: key.to_string(),
        exposure_created_at: exposure.created_at,
        created_at: now,
    })
}

fn store_down() -> ApiError {
    ApiError::unavailable(
        "the database is unavailable; retry after `Retry-After` seconds with the same idempotency key",
    )
}

fn unknown_metric(exp: &LiveExperiment, metric: &str) -> ApiError {
    let names: Vec<&str> = exp.definition.metrics().map(|m| m.name.as_str()).collect();
    ApiError::unprocessable(
        "unknown_metric",
        format!("`{}` is not a metric of `{}` (metrics: {})", truncate(metric), exp.key, names.join(", ")),
    )
}

/// Validates, attributes, stores and answers one reward.
pub async fn reward_one(state: &web::Data<AppState>, req: RewardRequest) -> Result<RewardResponse, ApiError> {
    check_id("idempotency_key", "invalid_idempotency_key", &req.idempotency_key)?;
    if !valid_key(&req.metric) {
        return Err(ApiError::unprocessable("unknown_metric", "`metric` must name a metric of the experiment"));
    }
    if !req.value.is_finite() {
        return Err(ApiError::unprocessable("invalid_reward_value", "`value` must be a finite number"));
    }
    // Known down (the refresher's probe or a failed commit): 503 at once, not after the
    // pool's connection timeout.
    if !state.db_up() {
        return Err(store_down());
    }
    let now = crate::store::now();
    let rows: Vec<RewardRow> = match (&req.exposure_id, &req.unit_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::unprocessable("ambiguous_target", "send `exposure_id` or `unit_id`, not both"))
        }
        (None, None) => return Err(ApiError::unprocessable("missing_target", "send `exposure_id` or `unit_id`")),
        (Some(id), None) => {
            let uuid = uuid::Uuid::parse_str(id).map_err(|_| {
                ApiError::unprocessable("invalid_exposure_id", "`exposure_id` is not an id returned by /v1/assign")
            })?;
            let hint = uuid.get_timestamp().and_then(|ts| {
                let (secs, nanos) = ts.to_unix();
                chrono::DateTime::from_timestamp(secs as i64, nanos).map(|d| d.naive_utc())
            });
            let st = state.clone();
            let id = id.clone();
            let exposure = match web::block(move || queries::find_exposure(&st.db, &id, hint)).await? {
                Ok(e) => e,
                Err(crate::store::StoreError::NotFound) => {
                    return Err(ApiError::not_found("exposure_not_found", "no exposure with this id"))
                }
                Err(e) => return Err(e.into()),
            };
            let registry = state.registry.load();
            let exp = registry.by_id(exposure.experiment_id).cloned().ok_or_else(|| {
                ApiError::not_found("experiment_not_found", "the exposure's experiment is not loaded yet; retry")
            })?;
            if let Some(k) = &req.experiment {
                if *k != exp.key {
                    return Err(ApiError::unprocessable(
                        "experiment_mismatch",
                        format!("exposure {} belongs to `{}`, not `{}`", exposure.id, exp.key, truncate(k)),
                    ));
                }
            }
            let metric = exp.definition.metric(&req.metric).ok_or_else(|| unknown_metric(&exp, &req.metric))?;
            vec![attribution_for(&exp, &exposure, metric, req.value, &req.idempotency_key, now)?]
        }
        (None, Some(unit)) => {
            check_id("unit_id", "invalid_unit_id", unit)?;
            let registry = state.registry.load();
            let only = match &req.experiment {
                Some(k) => Some(registry.get(k).cloned().ok_or_else(|| {
                    ApiError::not_found("experiment_not_found", format!("no experiment `{}`", truncate(k)))
                })?),
                None => None,
            };
            let candidates: Vec<_> = registry
                .iter()
                .filter(|e| e.status == Status::Running && e.definition.metric(&req.metric).is_some())
                .filter(|e| only.as_ref().is_none_or(|o| o.id == e.id))
                .cloned()
                .collect();
            drop(registry);
            if let Some(o) = &only {
                if o.definition.metric(&req.metric).is_none() {
                    return Err(unknown_metric(o, &req.metric));
                }
            }
            let longest = candidates
                .iter()
                .filter_map(|e| e.definition.metric(&req.metric).and_then(|m| parse_duration(&m.window).ok()))
                .max()
                .unwrap_or_default();
            let since = time_before(now, longest);
            let unit_hash = pseudonymise(&state.unit_secret, unit);
            let st = state.clone();
            let only_id = only.as_ref().map(|o| o.id);
            let exposures = if candidates.is_empty() {
                Vec::new()
            } else {
                web::block(move || queries::unit_exposures(&st.db, &unit_hash, since, only_id)).await??
            };
            let mut seen = HashSet::new();
            let mut rows = Vec::new();
            // Newest first: the first exposure seen per experiment is the last touch.
            for x in &exposures {
                if !seen.insert(x.experiment_id) {
                    continue;
                }
                let Some(exp) = candidates.iter().find(|e| e.id == x.experiment_id) else { continue };
                let Some(metric) = exp.definition.metric(&req.metric) else { continue };
                match attribution_for(exp, x, metric, req.value, &req.idempotency_key, now) {
                    Ok(row) => rows.push(row),
                    Err(e) if e.code == "outside_attribution_window" => {}
                    Err(e) => return Err(e),
                }
            }
            if rows.is_empty() {
                return Err(ApiError::unprocessable(
                    "no_attributable_exposure",
                    "this unit has no exposure in a running experiment with this metric inside its attribution window",
                ));
            }
            rows
        }
    };
    let registry = state.registry.load();
    let attributions: Vec<Attribution> = rows
        .iter()
        .map(|r| Attribution {
            experiment: registry.by_id(r.experiment_id).map(|e| e.key.clone()).unwrap_or_default(),
            exposure_id: r.exposure_id.clone(),
            arm: r.arm.clone(),
            value: r.value,
        })
        .collect();
    drop(registry);
    let key = format!("{}:{}", req.metric, req.idempotency_key);
    let outcome = state.writer.write(WriteItem::Reward(RewardWrite { idempotency_key: key, rows })).await?;
    let duplicate = outcome == WriteOutcome::Duplicate;
    for a in &attributions {
        let label = if duplicate { "duplicate" } else { "stored" };
        state.metrics.rewards.with_label_values(&[&a.experiment, &req.metric, label]).inc();
    }
    Ok(RewardResponse { accepted: true, duplicate, attributions })
}

/// Report an outcome.
#[utoipa::path(
    post, path = "/v1/rewards", tag = "rewards",
    request_body = RewardRequest,
    responses(
        (status = 200, description = "Stored (or a duplicate of a stored reward)", body = RewardResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown key", body = ErrorBody),
        (status = 403, description = "Key lacks the `assign` scope", body = ErrorBody),
        (status = 404, description = "Unknown exposure (`exposure_not_found`) or experiment", body = ErrorBody),
        (status = 422, description = "Refused: unknown metric, outside the attribution window, bad value…", body = ErrorBody),
        (status = 503, description = "The store is unavailable; retry after `Retry-After` seconds", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn rewards(state: web::Data<AppState>, body: web::Json<RewardRequest>) -> Result<HttpResponse, ApiError> {
    let res = reward_one(&state, body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(res))
}

/// Report up to 500 outcomes at once; each result is a response or an error.
#[utoipa::path(
    post, path = "/v1/rewards/batch", tag = "rewards",
    request_body = RewardBatchRequest,
    responses(
        (status = 200, description = "One result per reward, in order", body = RewardBatchResponse),
        (status = 401, description = "Missing or unknown key", body = ErrorBody),
        (status = 403, description = "Key lacks the `assign` scope", body = ErrorBody),
        (status = 422, description = "Empty or oversized batch", body = ErrorBody),
        (status = 503, description = "The store is known to be down: nothing was stored; retry the batch after `Retry-After` seconds", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn rewards_batch(
    state: web::Data<AppState>,
    body: web::Json<RewardBatchRequest>,
) -> Result<HttpResponse, ApiError> {
    // Nothing in the batch could be stored: one 503 with Retry-After for the whole batch.
    if !state.db_up() {
        return Err(store_down());
    }
    let results = super::run_batch(body.into_inner().rewards, MAX_BATCH, |r| {
        let state = state.clone();
        async move { reward_one(&state, r).await }
    })
    .await?
    .into_iter()
    .map(|r| r.map_or_else(RewardResult::Err, RewardResult::Ok))
    .collect();
    Ok(HttpResponse::Ok().json(RewardBatchResponse { results }))
}
