//! Fuzz target: any bytes as the JSON of a decision request. The context check
//! (`parse_context`) and the request's deserialisation (`AssignRequest`) must return
//! errors, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(map) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data) {
        let _ = strategist::experiment::context::parse_context(&map);
    }
    if let Ok(req) = serde_json::from_slice::<strategist::api::assign::AssignRequest>(data) {
        if let Some(ctx) = &req.context {
            let _ = strategist::experiment::context::parse_context(ctx);
        }
        let _ = strategist::api::assign::check_id("unit_id", "invalid_unit_id", &req.unit_id);
        let _ = strategist::api::assign::truncate(&req.experiment);
    }
});
