//! Operations: liveness, readiness, Prometheus metrics, the OpenAPI document.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::error::ErrorBody;
use crate::app::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub database: String,
    pub backend: String,
    pub experiments: usize,
    pub writer_queue: usize,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
        database: if state.db_up() { "up".into() } else { "down".into() },
        backend: state.db.backend_name().into(),
        experiments: state.registry.load().len(),
        writer_queue: state.writer.queue_depth(),
    })
}

/// Readiness: the store answers now (503 otherwise).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let st = state.clone();
    let ok = matches!(web::block(move || st.db.ping()).await, Ok(Ok(())));
    let body = Health {
        status: if ok { "ready".into() } else { "not_ready".into() },
        database: if ok { "up".into() } else { "down".into() },
        backend: state.db.backend_name().into(),
        experiments: state.registry.load().len(),
        writer_queue: state.writer.queue_depth(),
    };
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().insert_header(("Retry-After", "1")).json(body)
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus metrics", body = String, content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.writer_queue_depth.set(state.writer.queue_depth() as i64);
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(super::openapi::ApiDoc::openapi())
}
