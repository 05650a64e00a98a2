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
use crate::report::{data, model, render, Format, ReportError, Week};
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
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(ChartsResponse {
        experiment: key,
        from,
        to,
        charts: charts::charts(&built),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WeeklyQuery {
    /// ISO week, e.g. 2026-W48 [default: the last closed week].
    pub week: Option<String>,
    /// html, md, csv or json [default: html].
    pub format: Option<String>,
    /// Only this experiment [default: every experiment that ran that week].
    pub experiment: Option<String>,
}

fn document(week: &str, format: Format, content: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("inline; filename=\"strategist-report-{week}.{}\"", format.as_str()),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(content)
}

/// The weekly uplift report of one ISO week, made now from the store: a self-contained
/// HTML page (inline SVG charts, prints well), Markdown, CSV (one row per experiment and
/// arm) or JSON, all with the same numbers.
#[utoipa::path(get, path = "/v1/reports/weekly", tag = "reports", params(WeeklyQuery),
    responses((status = 200, description = "The report, as text/html, text/markdown, text/csv or application/json", body = String),
        (status = 400, description = "`invalid_week`, `invalid_format` or `invalid_query`", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn weekly(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let q: WeeklyQuery = web::Query::<WeeklyQuery>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .map_err(|e| ApiError::bad_request("invalid_query", format!("the query string is not understood: {e}")))?;
    let now = crate::store::now();
    let week = match &q.week {
        Some(w) => Week::parse(w)?,
        None => Week::last_closed(now),
    };
    if week.start() > now {
        return Err(ApiError::bad_request("invalid_week", format!("{week} has not started yet")));
    }
    let format = match &q.format {
        Some(f) => Format::parse(f)?,
        None => Format::Html,
    };
    if let Some(k) = &q.experiment {
        if !valid_key(k) {
            return Err(ApiError::not_found("experiment_not_found", "no such experiment"));
        }
    }
    let st = state.clone();
    let content = web::block(move || -> Result<String, ApiError> {
        let report = model::build_weekly(&st.db, week, q.experiment.as_deref(), now, |_| {})?;
        Ok(render::render(&report, format).map_err(ReportError::from)?)
    })
    .await??;
    Ok(document(&week.to_string(), format, content))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoredWeek {
    pub week: String,
    /// Formats stored for this week, with their sizes.
    pub formats: Vec<StoredFormat>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoredFormat {
    pub format: String,
    pub bytes: i64,
    /// Where to download it.
    pub href: String,
}

/// The stored weekly reports (written by the report job when each week closes), newest
/// week first.
#[utoipa::path(get, path = "/v1/reports", tag = "reports",
    responses((status = 200, body = Vec<StoredWeek>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let st = state.clone();
    let rows = web::block(move || data::list_reports(&st.db)).await??;
    let mut out: Vec<StoredWeek> = Vec::new();
    for r in rows {
        let f = StoredFormat { href: format!("/v1/reports/{}/{}", r.week, r.format), format: r.format, bytes: r.bytes };
        match out.last_mut() {
            Some(w) if w.week == r.week => {
                w.created_at = w.created_at.max(r.created_at);
                w.formats.push(f);
            }
            _ => out.push(StoredWeek { week: r.week, formats: vec![f], created_at: r.created_at }),
        }
    }
    Ok(HttpResponse::Ok().json(out))
}

/// One stored weekly report in one format.
#[utoipa::path(get, path = "/v1/reports/{week}/{format}", tag = "reports",
    params(("week" = String, Path, description = "ISO week, e.g. 2026-W48"), ("format" = String, Path, description = "html | md | csv | json")),
    responses((status = 200, description = "The stored report", body = String),
        (status = 400, description = "`invalid_week` or `invalid_format`", body = ErrorBody),
        (status = 404, description = "`report_not_found`", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn download(state: web::Data<AppState>, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (week, format) = path.into_inner();
    let week = Week::parse(&week)?.to_string();
    let format = Format::parse(&format)?;
    let st = state.clone();
    let w = week.clone();
    let content = web::block(move || data::get_report(&st.db, &w, format.as_str())).await??;
    match content {
        Some(c) => Ok(document(&week, format, c)),
        None => Err(ApiError::not_found(
            "report_not_found",
            format!(
                "no stored {} report for {week}; reports are stored when a week closes (report_schedule), \
                 or make one now with GET /v1/reports/weekly?week={week}",
                format.as_str()
            ),
        )),
    }
}
