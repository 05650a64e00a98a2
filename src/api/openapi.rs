//! The OpenAPI document, generated from the handlers' annotations (utoipa). A test checks
//! that it lists exactly the routes `api::ROUTES` registers.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{assign, reports, events, experiments, ops, rewards, whoami};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
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
        reports::experiment_charts,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
        whoami::whoami,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;
