//! Reports and charts over HTTP: an experiment's four charts over a time range (what the
//! dashboard shows), the weekly uplift report made on request, and the stored weekly
//! reports (listed and downloaded). All read scope.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use crate::app::AppState;
use crate::experiment::definition::valid_key;
use crate::report::charts::{self, Chart};
use crate::report::model;
use crate::report::ReportError;
use crate::store::queries;

/// The longest range the charts endpoint draws.
const MAX_CHART_DAYS: i64 = 92;

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::InvalidWeek(m) => ApiError::bad_request("invalid_week", m),
            ReportError::InvalidFormat(m) => ApiError::bad_request("invalid_format", m),
            ReportError::UnknownExperiment(k) => {
                ApiError::not_found("experiment_not_found", format!("no experiment `{k}`"))
            }
            ReportError::Store(s) => s.into(),
            ReportError::Json(j) => ApiError::internal(j),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ChartsQuery {
    /// RFC 3339 start of the range [default: `to` − 7 days].
    pub from: Option<String>,
    /// RFC 3339 end of the range [default: now].
    pub to: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChartsResponse {
    pub experiment: String,
    pub from: NaiveDateTime,
    pub to: NaiveDateTime,
    /// `allocation`, `cumulative`, `uplift`, `p_best`, in this order.
    pub charts: Vec<Chart>,
}

fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .map_err(|e| ApiError::unprocessable("invalid_query", format!("the query string is not understood: {e}")))
}

fn time(name: &str, v: &str) -> Result<NaiveDateTime, ApiError> {
    chrono::DateTime::parse_from_rfc3339(v).map(|t| t.naive_utc()).map_err(|e| {
        ApiError::unprocessable(
            "invalid_query",
            format!("`{name}` must be an RFC 3339 time such as 2026-11-29T10:00:00Z ({e})"),
        )
    })
}

/// An experiment's charts over a time range, as SVG: traffic allocation, cumulative
/// primary metric per arm, relative uplift with its always-valid band, probability of
/// being best. The same charts as the weekly report; arms keep their colour everywhere.
#[utoipa::path(get, path = "/v1/experiments/{key}/charts", tag = "reports",
    params(("key" = String, Path, description = "Experiment key"), ChartsQuery),
    responses((status = 200, body = ChartsResponse),
        (status = 404, description = "`experiment_not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_query`: bad time, `from` not before `to`, or a range over 92 days", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn experiment_charts(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = path.into_inner();
    let q: ChartsQuery = query(&req)?;
    let to = match &q.to {
        Some(t) => time("to", t)?,
        None => crate::store::now(),
    };
    let from = match &q.from {
        Some(t) => time("from", t)?,
        None => to - chrono::Duration::days(7),
    };
    if from >= to {
        return Err(ApiError::unprocessable("invalid_query", "`from` must be before `to`"));
    }
    if to - from > chrono::Duration::days(MAX_CHART_DAYS) {
        return Err(ApiError::unprocessable("invalid_query", format!("the range is at most {MAX_CHART_DAYS} days")));
    }
    if !valid_key(&key) {
        return Err(ApiError::not_found("experiment_not_found", "no such experiment"));
    }
    let st = state.clone();
    let k = key.clone();
    let built = web::block(move || -> Result<_, ApiError> {
        let stored = match queries::get_experiment(&st.db, &k) {
            Ok(e) => e,
            Err(crate::store::StoreError::NotFound) => {
                return Err(ApiError::not_found("experiment_not_found", format!("no experiment `{k}`")))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(model::build_experiment(&st.db, &stored, from, to)?)
    })
    .await??;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(ChartsResponse { experiment: key, from, to, charts: charts::charts(&built) }))
}
