//! The HTTP API (actix-web): routes, auth, errors, metrics middleware. Only HTTP lives
//! here; decisions, storage and learning are in their own rooms.

pub mod assign;
pub mod auth;
pub mod error;
pub mod events;
pub mod experiments;
pub mod openapi;
pub mod ops;
pub mod reports;
pub mod rewards;
pub mod whoami;

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpResponse};

use crate::app::AppState;
use error::{ApiError, ErrorCode};

/// Every route: (method, path as in the OpenAPI document). The OpenAPI test checks both agree.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/assign"),
    ("post", "/v1/assign/batch"),
    ("post", "/v1/rewards"),
    ("post", "/v1/rewards/batch"),
    ("post", "/v1/events"),
    ("post", "/v1/events/batch"),
    ("get", "/v1/units/{unit_id}/profile"),
    ("get", "/v1/experiments"),
    ("post", "/v1/experiments"),
    ("get", "/v1/experiments/{key}"),
    ("put", "/v1/experiments/{key}"),
    ("post", "/v1/experiments/{key}/{action}"),
    ("get", "/v1/experiments/{key}/decisions"),
    ("get", "/v1/experiments/{key}/results"),
    ("get", "/v1/experiments/{key}/charts"),
    ("get", "/v1/experiments/{key}/shadow"),
    ("delete", "/v1/experiments/{key}/shadow"),
    ("post", "/v1/experiments/{key}/shadow/promote"),
    ("get", "/v1/reports"),
    ("get", "/v1/reports/weekly"),
    ("get", "/v1/reports/{week}/{format}"),
    ("get", "/v1/whoami"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

/// Runs `one` on every item of a batch concurrently and returns each outcome in order,
/// an error becoming that item's error body. Refuses empty or oversized batches.
pub async fn run_batch<T, R, Fut>(
    items: Vec<T>,
    max: usize,
    one: impl Fn(T) -> Fut,
) -> Result<Vec<Result<R, error::ErrorBody>>, ApiError>
where
    Fut: std::future::Future<Output = Result<R, ApiError>>,
{
    if items.is_empty() || items.len() > max {
        return Err(ApiError::unprocessable("invalid_batch_size", format!("a batch holds 1–{max} items")));
    }
    let results = futures_util::future::join_all(items.into_iter().map(one)).await;
    Ok(results.into_iter().map(|r| r.map_err(|e| e.body())).collect())
}

/// 405 `method_not_allowed`, with `Allow` listing the methods `ROUTES` registers for the
/// matched path (RFC 9110 §15.5.6 requires it).
async fn method_not_allowed(req: actix_web::HttpRequest) -> HttpResponse {
    use actix_web::http::header::{HeaderValue, ALLOW};
    let pattern = req.match_pattern();
    let allow: Vec<String> = ROUTES
        .iter()
        .filter(|(_, path)| pattern.as_deref() == Some(*path))
        .map(|(method, _)| method.to_ascii_uppercase())
        .collect();
    let allow = allow.join(", ");
    let err = ApiError::new(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route does not take that method; it takes {allow}"),
    );
    let mut res = actix_web::ResponseError::error_response(&err);
    if let Ok(v) = HeaderValue::from_str(&allow) {
        res.headers_mut().insert(ALLOW, v);
    }
    res
}

async fn route_not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("route_not_found", "no such route; see /openapi.json"))
}

/// Registers every route.
pub fn config(cfg: &mut web::ServiceConfig) {
    use auth::{admin_scope, any_scope, assign_scope, read_scope};
    cfg.service(
        web::resource("/v1/assign")
            .route(web::post().to(assign::assign).wrap(from_fn(assign_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/assign/batch")
            .route(web::post().to(assign::assign_batch).wrap(from_fn(assign_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/rewards")
            .route(web::post().to(rewards::rewards).wrap(from_fn(assign_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/rewards/batch")
            .route(web::post().to(rewards::rewards_batch).wrap(from_fn(assign_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/events")
            .route(web::post().to(events::event).wrap(from_fn(assign_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/events/batch")
            .route(web::post().to(events::event_batch).wrap(from_fn(assign_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/units/{unit_id}/profile")
            .route(web::get().to(events::profile).wrap(from_fn(read_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/experiments")
            .route(web::get().to(experiments::list).wrap(from_fn(read_scope)))
            .route(web::post().to(experiments::create).wrap(from_fn(admin_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/experiments/{key}/decisions")
            .route(web::get().to(experiments::decisions).wrap(from_fn(read_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/experiments/{key}/results")
            .route(web::get().to(experiments::results).wrap(from_fn(read_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/reports")
            .route(web::get().to(reports::list).wrap(from_fn(read_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/reports/weekly")
            .route(web::get().to(reports::weekly).wrap(from_fn(read_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/reports/{week}/{format}")
            .route(web::get().to(reports::download).wrap(from_fn(read_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/experiments/{key}/charts")
            .route(web::get().to(reports::experiment_charts).wrap(from_fn(read_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/experiments/{key}/shadow")
            .route(web::get().to(experiments::shadow).wrap(from_fn(read_scope)))
            .route(web::delete().to(experiments::shadow_drop).wrap(from_fn(admin_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/experiments/{key}/shadow/promote")
            .route(web::post().to(experiments::shadow_promote).wrap(from_fn(admin_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/experiments/{key}/{action}")
            .route(web::post().to(experiments::action).wrap(from_fn(admin_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/experiments/{key}")
            .route(web::get().to(experiments::get).wrap(from_fn(read_scope)))
            .route(web::put().to(experiments::update).wrap(from_fn(admin_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/whoami")
            .route(web::get().to(whoami::whoami).wrap(from_fn(any_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .configure(crate::web::config)
    .service(web::resource("/healthz").route(web::get().to(ops::healthz)).default_service(web::to(method_not_allowed)))
    .service(web::resource("/readyz").route(web::get().to(ops::readyz)).default_service(web::to(method_not_allowed)))
    .service(web::resource("/metrics").route(web::get().to(ops::metrics)).default_service(web::to(method_not_allowed)))
    .service(
        web::resource("/openapi.json").route(web::get().to(ops::openapi)).default_service(web::to(method_not_allowed)),
    )
    .default_service(web::to(route_not_found));
}

/// Records latency and status per route pattern, and error codes.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let method = req.method().as_str().to_ascii_lowercase();
    let res = next.call(req).await?.map_into_boxed_body();
    if let Some(state) = state {
        let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".into());
        let m = &state.metrics;
        m.http_duration.with_label_values(&[&route, &method]).observe(started.elapsed().as_secs_f64());
        m.http_responses.with_label_values(&[&route, res.status().as_str()]).inc();
        if let Some(code) = res.response().extensions().get::<ErrorCode>() {
            m.errors.with_label_values(&[code.0]).inc();
        }
    }
    Ok(res)
}
