//! `GET /v1/whoami`: tells any valid key who it is and what it may do, so a client (the web
//! dashboard) can show exactly the controls the key is allowed to use.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use crate::app::AppState;
use crate::store::queries;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// The name given when the key was created (`strategist keys create --name`).
    pub name: String,
    /// The key's public prefix (the part listings and the audit log show).
    pub prefix: String,
    /// The key's scopes: `assign`, `read` or `admin` (an admin key also reads).
    pub scopes: Vec<String>,
}

/// Who the calling key is and its scopes (any valid key).
#[utoipa::path(get, path = "/v1/whoami", tag = "keys",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn whoami(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::internal("whoami reached without an authenticated caller"))?;
    let st = state.clone();
    let id = caller.0.id;
    // Keys are few (one per service or person): a scan beats a query for one admin call.
    let name =
        web::block(move || queries::list_api_keys(&st.db)).await??.into_iter().find(|k| k.id == id).map(|k| k.name);
    let name = name.ok_or_else(|| {
        ApiError::new(actix_web::http::StatusCode::UNAUTHORIZED, "unauthorized", "this API key no longer exists")
    })?;
    Ok(HttpResponse::Ok().json(WhoAmI {
        name,
        prefix: caller.0.prefix.clone(),
        scopes: vec![caller.0.scope.as_str().to_string()],
    }))
}
