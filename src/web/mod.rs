//! The web dashboard at `/`: one HTML page, its stylesheet and script, embedded in the
//! binary at compile time (no build step, no CDN, no external fonts) and served by the same
//! actix server as the API. The page talks to the JSON API with the API key the user types
//! in; this module only serves files. Every response carries a Content-Security-Policy
//! that allows nothing but this origin, so the page cannot load or send anything elsewhere.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::api::error::ApiError;

/// An embedded file: its name under `/assets/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX_HTML: &[u8] = include_bytes!("assets/index.html");

const ASSETS: &[Asset] = &[
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("assets/app.js") },
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("assets/app.css") },
    Asset { name: "favicon.svg", content_type: "image/svg+xml", body: include_bytes!("assets/favicon.svg") },
];

/// Same origin only. Charts are SVG produced by our own server and inserted as DOM nodes;
/// their presentation attributes need no inline styles or scripts.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn respond(content_type: &'static str, body: &'static [u8]) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        // The files change only with the binary; revalidating costs one small request.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

async fn index() -> HttpResponse {
    respond("text/html; charset=utf-8", INDEX_HTML)
}

async fn asset(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    ASSETS
        .iter()
        .find(|a| a.name == name)
        .map(|a| respond(a.content_type, a.body))
        .ok_or_else(|| ApiError::not_found("asset_not_found", format!("no asset `{name}`")))
}

/// Registers `/` and `/assets/{name}` (GET only). Not part of the OpenAPI document, which
/// describes the JSON API.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index)).route("/assets/{name}", web::get().to(asset));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_links_is_embedded() {
        let html = std::str::from_utf8(INDEX_HTML).unwrap();
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{} is empty", a.name);
        }
        let mut linked = 0;
        for part in html.split("/assets/").skip(1) {
            let name: String = part.chars().take_while(|c| *c != '"').collect();
            assert!(ASSETS.iter().any(|a| a.name == name), "index.html links /assets/{name}, which is not embedded");
            linked += 1;
        }
        assert!(linked >= 3, "index.html links its script, stylesheet and icon");
    }

    #[test]
    fn the_page_loads_nothing_from_another_origin() {
        for (name, body) in std::iter::once(("index.html", INDEX_HTML)).chain(ASSETS.iter().map(|a| (a.name, a.body))) {
            // The SVG namespace URI is an identifier, not something fetched.
            let text = std::str::from_utf8(body).unwrap().replace("http://www.w3.org/2000/svg", "");
            for needle in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(!text.contains(needle), "{name} mentions `{needle}`");
            }
        }
    }
}
