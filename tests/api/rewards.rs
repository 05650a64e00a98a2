use serde_json::json;

use crate::helpers::{definition, spawn_app, Backend};
use crate::on_both_backends;
use strategist::store::queries;

async fn a_reward_by_exposure_is_stored_once_per_idempotency_key(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("shop")).await;
    let (_, d) = app.assign(json!({"experiment": "shop", "unit_id": "u-1"})).await;
    let id = d["exposure_id"].as_str().unwrap();
    let body = json!({"exposure_id": id, "metric": "revenue", "value": 59.9, "idempotency_key": "order-881"});
    let (s, first) = app.reward(body.clone()).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["attributions"][0]["exposure_id"], id);
    let (s, again) = app.reward(body).await;
    assert_eq!(s, 200);
    assert_eq!(again["duplicate"], true);
    // The same order key on another metric is another reward.
    let (_, conv) =
        app.reward(json!({"exposure_id": id, "metric": "purchase", "value": 1, "idempotency_key": "order-881"})).await;
    assert_eq!(conv["duplicate"], false);
    let rows = queries::rewards_for_exposure(&app.db, id).unwrap();
    assert_eq!(rows.len(), 2);
    let revenue = rows.iter().find(|r| r.metric == "revenue").unwrap();
    assert_eq!(revenue.value, 59.9);
}
on_both_backends!(a_reward_by_exposure_is_stored_once_per_idempotency_key);

async fn profit_subtracts_the_arm_cost_and_lower_is_better_is_negated(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("shop")).await;
    let (_, d) = app.assign(json!({"experiment": "shop", "unit_id": "u-1", "eligible_arms": ["c"]})).await;
    let id = d["exposure_id"].as_str().unwrap();
    let (_, v) =
        app.reward(json!({"exposure_id": id, "metric": "profit", "value": 40.0, "idempotency_key": "o-1"})).await;
    assert_eq!(v["attributions"][0]["value"], 35.0, "arm c costs 5 per order");
    let (_, v) =
        app.reward(json!({"exposure_id": id, "metric": "returns", "value": 2.0, "idempotency_key": "o-1"})).await;
    assert_eq!(v["attributions"][0]["value"], -2.0);
    let rows = queries::rewards_for_exposure(&app.db, id).unwrap();
    let ret = rows.iter().find(|r| r.metric == "returns").unwrap();
    assert_eq!((ret.value, ret.raw_value), (-2.0, 2.0));
}
on_both_backends!(profit_subtracts_the_arm_cost_and_lower_is_better_is_negated);

async fn rewards_are_refused_with_a_clear_reason(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("shop")).await;
    let (_, d) = app.assign(json!({"experiment": "shop", "unit_id": "u-1"})).await;
    let id = d["exposure_id"].as_str().unwrap();
    let cases = [
        (
            json!({"exposure_id": uuid::Uuid::now_v7().to_string(), "metric": "revenue", "value": 1, "idempotency_key": "k"}),
            404,
            "exposure_not_found",
        ),
        (
            json!({"exposure_id": "not-an-id", "metric": "revenue", "value": 1, "idempotency_key": "k"}),
            422,
            "invalid_exposure_id",
        ),
        (json!({"exposure_id": id, "metric": "clicks", "value": 1, "idempotency_key": "k"}), 422, "unknown_metric"),
        (
            json!({"exposure_id": id, "metric": "purchase", "value": 0.5, "idempotency_key": "k"}),
            422,
            "invalid_reward_value",
        ),
        (
            json!({"exposure_id": id, "metric": "revenue", "value": 1, "idempotency_key": ""}),
            422,
            "invalid_idempotency_key",
        ),
        (json!({"metric": "revenue", "value": 1, "idempotency_key": "k"}), 422, "missing_target"),
        (
            json!({"exposure_id": id, "unit_id": "u-1", "metric": "revenue", "value": 1, "idempotency_key": "k"}),
            422,
            "ambiguous_target",
        ),
        (
            json!({"exposure_id": id, "experiment": "other", "metric": "revenue", "value": 1, "idempotency_key": "k"}),
            422,
            "experiment_mismatch",
        ),
        (
            json!({"unit_id": "stranger", "metric": "revenue", "value": 1, "idempotency_key": "k"}),
            422,
            "no_attributable_exposure",
        ),
    ];
    for (body, status, code) in cases {
        let (s, v) = app.reward(body.clone()).await;
        assert_eq!((s, v["error"].as_str()), (status, Some(code)), "{body} → {v}");
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    assert!(queries::rewards_for_exposure(&app.db, id).unwrap().is_empty(), "nothing refused was stored");
}
on_both_backends!(rewards_are_refused_with_a_clear_reason);

async fn a_reward_by_unit_goes_to_its_latest_exposure_inside_the_window(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut short = definition("short");
    short["primary_metric"] = json!({"name": "purchase", "kind": "conversion", "window": "1s"});
    short["guardrails"] = json!([]);
    app.create_experiment(&short).await;
    app.create_experiment(&definition("long")).await;
    let (_, old_short) = app.assign(json!({"experiment": "short", "unit_id": "shopper"})).await;
    let (_, first_long) = app.assign(json!({"experiment": "long", "unit_id": "shopper", "request_id": "1"})).await;
    let (_, last_long) = app.assign(json!({"experiment": "long", "unit_id": "shopper", "request_id": "2"})).await;
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let (s, v) =
        app.reward(json!({"unit_id": "shopper", "metric": "purchase", "value": 1, "idempotency_key": "o-1"})).await;
    assert_eq!(s, 200, "{v}");
    let attributed = v["attributions"].as_array().unwrap();
    assert_eq!(attributed.len(), 1, "the short window has closed: {v}");
    assert_eq!(attributed[0]["experiment"], "long");
    assert_eq!(attributed[0]["exposure_id"], last_long["exposure_id"], "last touch");
    assert!(queries::rewards_for_exposure(&app.db, first_long["exposure_id"].as_str().unwrap()).unwrap().is_empty());
    // By exposure id, outside the window is refused.
    let (s, v) = app
        .reward(json!({"exposure_id": old_short["exposure_id"], "metric": "purchase", "value": 1, "idempotency_key": "o-2"}))
        .await;
    assert_eq!((s, v["error"].as_str()), (422, Some("outside_attribution_window")));
    // Only the named experiment when one is given.
    let (s, v) = app
        .reward(json!({"unit_id": "shopper", "experiment": "short", "metric": "purchase", "value": 1, "idempotency_key": "o-3"}))
        .await;
    assert_eq!((s, v["error"].as_str()), (422, Some("no_attributable_exposure")));
}
on_both_backends!(a_reward_by_unit_goes_to_its_latest_exposure_inside_the_window);

async fn batch_rewards_answer_each_item(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("shop")).await;
    let (_, d) = app.assign(json!({"experiment": "shop", "unit_id": "u-1"})).await;
    let id = d["exposure_id"].clone();
    let body = json!({"rewards": [
        {"exposure_id": id, "metric": "purchase", "value": 1, "idempotency_key": "b-1"},
        {"exposure_id": id, "metric": "purchase", "value": 1, "idempotency_key": "b-1"},
        {"exposure_id": id, "metric": "nope", "value": 1, "idempotency_key": "b-2"}
    ]});
    let (s, v) = app.request("POST", "/v1/rewards/batch", Some(&app.assign_key), Some(&body)).await;
    assert_eq!(s, 200, "{v}");
    let r = v["results"].as_array().unwrap();
    let dups: Vec<bool> = r[..2].iter().map(|x| x["duplicate"].as_bool().unwrap()).collect();
    assert_eq!(dups.iter().filter(|d| !**d).count(), 1, "exactly one of two identical keys counts: {v}");
    assert_eq!(r[2]["error"], "unknown_metric");
    assert_eq!(queries::rewards_for_exposure(&app.db, id.as_str().unwrap()).unwrap().len(), 1);
}
on_both_backends!(batch_rewards_answer_each_item);
