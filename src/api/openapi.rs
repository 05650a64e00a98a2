//! The OpenAPI document, generated from the handlers' annotations (utoipa). A test checks
//! that it lists exactly the routes `api::ROUTES` registers.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{assign, events, experiments, ops, reports, rewards, whoami};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// Adds the answers every operation of a kind can give, where its annotation does not list
/// them already: 500 `internal_error` everywhere; 401, 403 and 503 `database_unavailable` (a
/// key looked up in the store while it is down) where a key is needed; 400 `invalid_json`,
/// 413 `payload_too_large`, 415 `unsupported_media_type` and 422 `invalid_request` where a
/// body is read; 404 where the path has parameters. Fuzzing (schemathesis) checks that every
/// status an operation answers is documented.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{Operation, ParameterIn};
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        let add = |op: &mut Operation, code: &str, what: &str| {
            op.responses.responses.entry(code.to_string()).or_insert_with(|| error(what).into());
        };
        for item in openapi.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.put, &mut item.post].into_iter().flatten() {
                add(op, "500", "`internal_error`: an unexpected failure (logged)");
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    add(op, "401", "`unauthorized`: a missing, unknown or revoked key");
                    add(op, "403", "`forbidden`: the key lacks the scope this route needs");
                    add(op, "503", "`database_unavailable`: retry after `Retry-After` seconds");
                }
                if op.request_body.is_some() {
                    add(op, "400", "`invalid_json`: the body is not JSON");
                    add(op, "413", "`payload_too_large`: the body is over `max_body_bytes`");
                    add(op, "415", "`unsupported_media_type`: send `Content-Type: application/json`");
                    add(op, "422", "`invalid_request`: JSON that does not match the schema");
                }
                let in_path = |p: &utoipa::openapi::path::Parameter| matches!(p.parameter_in, ParameterIn::Path);
                if op.parameters.as_ref().is_some_and(|ps| ps.iter().any(in_path)) {
                    add(op, "404", "No such resource");
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Strategist", description = "Contextual-bandit experimentation for e-commerce marketing"),
    paths(
        assign::assign, assign::assign_batch,
        rewards::rewards, rewards::rewards_batch,
        events::event, events::event_batch, events::profile,
        experiments::list, experiments::create, experiments::get, experiments::update,
        experiments::action, experiments::decisions, experiments::results,
        experiments::shadow, experiments::shadow_promote, experiments::shadow_drop,
        reports::experiment_charts, reports::weekly, reports::list, reports::download,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
        whoami::whoami,
    ),
    modifiers(&BearerAuth, &CommonResponses)
)]
pub struct ApiDoc;
