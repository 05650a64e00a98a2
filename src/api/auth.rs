//! Bearer-key authorization, as route middleware so it runs before the body is read:
//! a request without a valid key gets 401 whatever its body, one with the wrong scope 403.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};

use super::error::ApiError;
use crate::app::{AppState, KeyInfo};
use crate::keys::{hash_key, Scope, KEY_PREFIX};

/// The authenticated caller, available to handlers as a request extension.
#[derive(Debug, Clone)]
pub struct Caller(pub KeyInfo);

impl Caller {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        format!("key:{}", self.0.prefix)
    }
}

async fn authorize(req: &ServiceRequest, allowed: &[Scope]) -> Result<KeyInfo, ApiError> {
    let unauthorized = |m: &str| ApiError::new(actix_web::http::StatusCode::UNAUTHORIZED, "unauthorized", m);
    let header = req.headers().get(header::AUTHORIZATION).ok_or_else(|| {
        unauthorized("send `Authorization: Bearer <key>`; create a key with `strategist keys create`")
    })?;
    let value = header.to_str().map_err(|_| unauthorized("the Authorization header is not valid text"))?;
    let key = value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|k| k.starts_with(KEY_PREFIX) && k.len() <= 128)
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer stk_…`"))?;
    let state =
        req.app_data::<web::Data<AppState>>().ok_or_else(|| ApiError::internal("application state missing"))?.clone();
    let hash = hash_key(key);
    // Known keys are answered from memory; only a miss goes to the store (off the async threads).
    let info = match state.cached_key(&hash) {
        Some(k) => Some(k),
        None => web::block(move || state.lookup_key(&hash)).await??,
    };
    let info = info.ok_or_else(|| unauthorized("unknown API key"))?;
    if info.revoked {
        return Err(unauthorized("this API key has been revoked"));
    }
    if !allowed.contains(&info.scope) {
        let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "forbidden",
            format!("this key has scope `{}`; this route needs one of: {}", info.scope.as_str(), names.join(", ")),
        ));
    }
    Ok(info)
}

async fn guard<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
    allowed: &[Scope],
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    match authorize(&req, allowed).await {
        Ok(info) => {
            req.extensions_mut().insert(Caller(info));
            Ok(next.call(req).await?.map_into_left_body())
        }
        // Answered here (not raised) so the outer middleware sees and counts the response.
        Err(e) => Ok(req.error_response(e).map_into_right_body()),
    }
}

pub async fn assign_scope<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    guard(req, next, &[Scope::Assign]).await
}

pub async fn admin_scope<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    guard(req, next, &[Scope::Admin]).await
}

/// Read routes: a read key, or an admin key (admins see what they change).
pub async fn read_scope<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    guard(req, next, &[Scope::Read, Scope::Admin]).await
}

/// Routes every valid key may call whatever its scope (`/v1/whoami`).
pub async fn any_scope<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    guard(req, next, &[Scope::Assign, Scope::Read, Scope::Admin]).await
}
