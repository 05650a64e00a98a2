//! `POST /v1/events` and `POST /v1/events/batch`: behaviour events (view, click,
//! add_to_cart, purchase) that build user profiles; `GET /v1/units/{unit_id}/profile`:
//! the features a contextual policy would read for a unit now.
//!
//! An event is idempotent by its `event_id`: a repeat is answered `duplicate: true` and
//! folded once. An event is acknowledged only after the transaction that stored it and
//! updated the profile committed.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::assign::{check_id, truncate};
use super::error::{ApiError, ErrorBody};
use crate::app::AppState;
use crate::keys::pseudonymise;
use crate::profile::{Event, EventKind, HISTORY_DAYS};
use crate::store::profiles::{self, NewEvent};

pub const MAX_BATCH: usize = 500;
pub const MAX_CATEGORY_LEN: usize = 64;
/// Largest order amount accepted (guards against unit mistakes such as cents × 10⁶).
pub const MAX_AMOUNT: f64 = 1e9;
/// How far in the future an event's timestamp may be (client clocks drift).
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    /// Unique per event: a repeat of the same id is stored once.
    #[schema(min_length = 1, max_length = 256)]
    pub event_id: String,
    /// The shopper (or session) id; stored only as a keyed hash.
    #[schema(min_length = 1, max_length = 256)]
    pub unit_id: String,
    /// `view`, `click`, `add_to_cart` or `purchase`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened (RFC 3339); now if absent. At most 90 days old, 5 minutes ahead.
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    /// Purchases: the order amount (≥ 0). Not allowed on other types.
    #[serde(default)]
    pub amount: Option<f64>,
    /// Product category (1–64 characters).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    pub category: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventResponse {
    pub accepted: bool,
    /// True when this event id was already stored: nothing new was counted.
    pub duplicate: bool,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBatchRequest {
    pub events: Vec<EventRequest>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EventResult {
    Ok(EventResponse),
    Err(ErrorBody),
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventBatchResponse {
    pub results: Vec<EventResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProfileResponse {
    /// Events folded into this profile (0 for a unit never seen).
    pub events: i64,
    /// Feature name → value at the time of the request.
    pub features: BTreeMap<String, f64>,
    /// The unit's last events (at most 20), oldest first.
    #[schema(value_type = Vec<Object>)]
    pub recent: Vec<Event>,
}

fn parse_event(state: &AppState, req: EventRequest, now: DateTime<Utc>) -> Result<NewEvent, ApiError> {
    check_id("event_id", "invalid_event_id", &req.event_id)?;
    check_id("unit_id", "invalid_unit_id", &req.unit_id)?;
    let kind = EventKind::parse(&req.kind).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_event_type",
            format!("`type` must be view, click, add_to_cart or purchase (got `{}`)", truncate(&req.kind)),
        )
    })?;
    let at = req.timestamp.unwrap_or(now);
    if at > now + chrono::Duration::seconds(MAX_CLOCK_SKEW_SECS) {
        return Err(ApiError::unprocessable(
            "event_in_future",
            format!("`timestamp` is more than {MAX_CLOCK_SKEW_SECS} s ahead of the server's clock"),
        ));
    }
    if at < now - chrono::Duration::days(HISTORY_DAYS) {
        return Err(ApiError::unprocessable(
            "event_too_old",
            format!("`timestamp` is more than {HISTORY_DAYS} days old: it cannot enter any profile feature"),
        ));
    }
    let amount = match (kind, req.amount) {
        (EventKind::Purchase, Some(a)) if a.is_finite() && (0.0..=MAX_AMOUNT).contains(&a) => a,
        (EventKind::Purchase, Some(_)) => {
            return Err(ApiError::unprocessable(
                "invalid_amount",
                format!("`amount` must be a finite number in [0, {MAX_AMOUNT}]"),
            ))
        }
        (EventKind::Purchase, None) => {
            return Err(ApiError::unprocessable("invalid_amount", "a purchase needs an `amount`"))
        }
        (_, Some(_)) => return Err(ApiError::unprocessable("invalid_amount", "`amount` is only allowed on purchases")),
        (_, None) => 0.0,
    };
    if let Some(c) = &req.category {
        if c.is_empty() || c.chars().count() > MAX_CATEGORY_LEN || c.chars().any(char::is_control) {
            return Err(ApiError::unprocessable(
                "invalid_category",
                format!("`category` must be 1–{MAX_CATEGORY_LEN} characters without control characters"),
            ));
        }
    }
    Ok(NewEvent {
        event_id: req.event_id,
        unit_hash: pseudonymise(&state.unit_secret, &req.unit_id),
        event: Event { kind, at: at.naive_utc(), amount, category: req.category },
    })
}

async fn store(state: &web::Data<AppState>, batch: Vec<NewEvent>) -> Result<Vec<bool>, ApiError> {
    if !state.db_up() {
        return Err(ApiError::unavailable("the store is unavailable; nothing was stored"));
    }
    let st = state.clone();
    let now = crate::store::now();
    Ok(web::block(move || profiles::record_events(&st.db, &batch, now)).await??)
}

/// Record one behaviour event.
#[utoipa::path(
    post, path = "/v1/events", tag = "profiles",
    request_body = EventRequest,
    responses(
        (status = 200, description = "Stored (or a duplicate of a stored event)", body = EventResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown key", body = ErrorBody),
        (status = 403, description = "Key lacks the `assign` scope", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Invalid field (`invalid_event_type`, `invalid_amount`, `event_too_old`…)", body = ErrorBody),
        (status = 503, description = "The store is unavailable; retry after `Retry-After` seconds", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn event(state: web::Data<AppState>, body: web::Json<EventRequest>) -> Result<HttpResponse, ApiError> {
    let ev = parse_event(&state, body.into_inner(), Utc::now())?;
    let inserted = store(&state, vec![ev]).await?;
    let duplicate = !inserted.first().copied().unwrap_or(false);
    state.metrics.events.with_label_values(&[if duplicate { "duplicate" } else { "stored" }]).inc();
    Ok(HttpResponse::Ok().json(EventResponse { accepted: true, duplicate }))
}

/// Record up to 500 events in one transaction; an invalid event gets its error and the
/// others are stored.
#[utoipa::path(
    post, path = "/v1/events/batch", tag = "profiles",
    request_body = EventBatchRequest,
    responses(
        (status = 200, description = "One result per event, in order", body = EventBatchResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown key", body = ErrorBody),
        (status = 403, description = "Key lacks the `assign` scope", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Empty or oversized batch", body = ErrorBody),
        (status = 503, description = "The store is unavailable: nothing was stored", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn event_batch(
    state: web::Data<AppState>,
    body: web::Json<EventBatchRequest>,
) -> Result<HttpResponse, ApiError> {
    let events = body.into_inner().events;
    if events.is_empty() || events.len() > MAX_BATCH {
        return Err(ApiError::unprocessable(
            "invalid_batch_size",
            format!("a batch holds 1–{MAX_BATCH} events (got {})", events.len()),
        ));
    }
    let now = Utc::now();
    let parsed: Vec<Result<NewEvent, ApiError>> = events.into_iter().map(|e| parse_event(&state, e, now)).collect();
    let valid: Vec<NewEvent> = parsed.iter().filter_map(|p| p.as_ref().ok().cloned()).collect();
    let mut inserted = if valid.is_empty() { Vec::new() } else { store(&state, valid).await? }.into_iter();
    let results = parsed
        .into_iter()
        .map(|p| match p {
            Ok(_) => {
                let duplicate = !inserted.next().unwrap_or(false);
                state.metrics.events.with_label_values(&[if duplicate { "duplicate" } else { "stored" }]).inc();
                EventResult::Ok(EventResponse { accepted: true, duplicate })
            }
            Err(e) => EventResult::Err(e.body()),
        })
        .collect();
    Ok(HttpResponse::Ok().json(EventBatchResponse { results }))
}

/// A unit's profile features as a contextual policy would read them now.
#[utoipa::path(
    get, path = "/v1/units/{unit_id}/profile", tag = "profiles",
    params(("unit_id" = String, Path, description = "The unit, as sent to /v1/events")),
    responses(
        (status = 200, description = "Features (a unit never seen gets the empty profile's)", body = ProfileResponse),
        (status = 401, description = "Missing or unknown key", body = ErrorBody),
        (status = 403, description = "Key lacks the `read` scope", body = ErrorBody),
        (status = 422, description = "Invalid unit id", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn profile(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let unit = path.into_inner();
    check_id("unit_id", "invalid_unit_id", &unit)?;
    let unit_hash = pseudonymise(&state.unit_secret, &unit);
    let st = state.clone();
    let stored = web::block(move || profiles::load_profile(&st.db, &unit_hash)).await??;
    let now = crate::store::now();
    let (state_, events) = stored.map(|p| (p.state, p.events)).unwrap_or_default();
    Ok(HttpResponse::Ok().json(ProfileResponse {
        events,
        features: state_.features(now),
        recent: state_.recent.into_iter().collect(),
    }))
}
