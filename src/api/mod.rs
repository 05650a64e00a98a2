//! The HTTP API (actix-web): routes, auth, errors, metrics middleware. Only HTTP lives
//! here; decisions, storage and learning are in their own rooms.

pub mod assign;
pub mod auth;
pub mod error;
pub mod experiments;
pub mod openapi;
pub mod ops;
pub mod rewards;

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
    ("get", "/v1/experiments"),
    ("post", "/v1/experiments"),
    ("get", "/v1/experiments/{key}"),
    ("put", "/v1/experiments/{key}"),
    ("post", "/v1/experiments/{key}/{action}"),
    ("get", "/v1/experiments/{key}/decisions"),
    ("get", "/v1/experiments/{key}/results"),
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

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    ))
}

async fn route_not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("route_not_found", "no such route; see /openapi.json"))
}

/// Registers every route.
pub fn config(cfg: &mut web::ServiceConfig) {
    use auth::{admin_scope, assign_scope, read_scope};
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
        web::resource("/v1/experiments")
            .route(web::get().to(experiments::list).wrap(from_fn(read_scope)))
            .route(web::post().to(experiments::create).wrap(from_fn(admin_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/experiments/{key}/decisions")
            .route(web::get().to(experiments::decisions).wrap(from_fn(admin_scope)))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/experiments/{key}/results")
            .route(web::get().to(experiments::results).wrap(from_fn(read_scope)))
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
    .route("/healthz", web::get().to(ops::healthz))
    .route("/readyz", web::get().to(ops::readyz))
    .route("/metrics", web::get().to(ops::metrics))
    .route("/openapi.json", web::get().to(ops::openapi))
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
