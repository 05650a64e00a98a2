//! Diesel table definitions shared by both backends. Only portable SQL types are used
//! (Text, BigInt, Integer, Double, Bool, Timestamp) so one schema serves Postgres and
//! SQLite; JSON is stored as Text and parsed in the domain layer.

diesel::table! {
    settings (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    experiments (id) {
        id -> BigInt,
        key -> Text,
        name -> Text,
        status -> Text,
        current_version -> Integer,
        salt -> Text,
        promoted_arm -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    experiment_versions (experiment_id, version) {
        experiment_id -> BigInt,
        version -> Integer,
        definition -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    arms (experiment_id, version, key) {
        experiment_id -> BigInt,
        version -> Integer,
        position -> Integer,
        key -> Text,
        payload -> Text,
        cost -> Double,
        cost_rate -> Double,
        is_control -> Bool,
    }
}

diesel::table! {
    policy_snapshots (id) {
        id -> BigInt,
        experiment_id -> BigInt,
        version -> Integer,
        policy_version -> BigInt,
        state -> Text,
        n_feedback -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    sticky_assignments (experiment_id, version, unit_hash) {
        experiment_id -> BigInt,
        version -> Integer,
        unit_hash -> Text,
        arm -> Text,
        propensity -> Double,
        created_at -> Timestamp,
    }
}

diesel::table! {
    exposures (id, created_at) {
        id -> Text,
        experiment_id -> BigInt,
        version -> Integer,
        unit_hash -> Text,
        request_id -> Text,
        arm -> Text,
        propensity -> Double,
        pmf -> Text,
        context -> Text,
        policy_version -> BigInt,
        created_at -> Timestamp,
        features -> Nullable<Text>,
        shadow_pmf -> Nullable<Text>,
    }
}

diesel::table! {
    rewards (id, created_at) {
        id -> Text,
        exposure_id -> Text,
        experiment_id -> BigInt,
        version -> Integer,
        arm -> Text,
        metric -> Text,
        value -> Double,
        raw_value -> Double,
        idempotency_key -> Text,
        exposure_created_at -> Timestamp,
        created_at -> Timestamp,
    }
}

diesel::table! {
    reward_keys (idempotency_key) {
        idempotency_key -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    decisions (id) {
        id -> BigInt,
        experiment_id -> BigInt,
        action -> Text,
        actor -> Text,
        reason -> Text,
        details -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    api_keys (id) {
        id -> BigInt,
        key_hash -> Text,
        prefix -> Text,
        scope -> Text,
        name -> Text,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    experiments,
    experiment_versions,
    arms,
    policy_snapshots,
    exposures,
    rewards,
    decisions
);

diesel::table! {
    arm_stats (experiment_id, version, arm, metric, period) {
        experiment_id -> BigInt,
        version -> Integer,
        arm -> Text,
        metric -> Text,
        period -> BigInt,
        n -> BigInt,
        sum -> Double,
        sum_sq -> Double,
        sum_w -> Double,
        sum_wy -> Double,
        sum_wy2 -> Double,
        sum_w2 -> Double,
        sum_w2y -> Double,
        sum_w2y2 -> Double,
    }
}

diesel::table! {
    arm_covariate_stats (experiment_id, version, arm, metric, period) {
        experiment_id -> BigInt,
        version -> Integer,
        arm -> Text,
        metric -> Text,
        period -> BigInt,
        sum_x -> Double,
        sum_x_sq -> Double,
        sum_xy -> Double,
    }
}

diesel::table! {
    allocation_stats (experiment_id, version, period, arm) {
        experiment_id -> BigInt,
        version -> Integer,
        period -> BigInt,
        arm -> Text,
        n -> BigInt,
        expected -> Double,
    }
}

diesel::table! {
    analysis_watermarks (experiment_id, stream) {
        experiment_id -> BigInt,
        stream -> Text,
        until_at -> Timestamp,
    }
}

diesel::table! {
    analyses (id) {
        id -> BigInt,
        experiment_id -> BigInt,
        version -> Integer,
        state -> Text,
        result -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    reports (id) {
        id -> BigInt,
        week -> Text,
        format -> Text,
        content -> Text,
        bytes -> BigInt,
        created_at -> Timestamp,
    }
}
