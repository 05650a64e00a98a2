-- Strategist initial schema (SQLite, the embedded default): the same tables and columns
-- as migrations/postgres, without partitioning (SQLite has none).

CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE experiments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    salt TEXT NOT NULL,
    promoted_arm TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE experiment_versions (
    experiment_id BIGINT NOT NULL REFERENCES experiments(id),
    version INTEGER NOT NULL,
    definition TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (experiment_id, version)
);

CREATE TABLE arms (
    experiment_id BIGINT NOT NULL REFERENCES experiments(id),
    version INTEGER NOT NULL,
    position INTEGER NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    cost DOUBLE NOT NULL,
    cost_rate DOUBLE NOT NULL,
    is_control BOOLEAN NOT NULL,
    PRIMARY KEY (experiment_id, version, key)
);

CREATE TABLE policy_snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment_id BIGINT NOT NULL REFERENCES experiments(id),
    version INTEGER NOT NULL,
    policy_version BIGINT NOT NULL,
    state TEXT NOT NULL,
    n_feedback BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (experiment_id, policy_version)
);

CREATE TABLE sticky_assignments (
    experiment_id BIGINT NOT NULL,
    version INTEGER NOT NULL,
    unit_hash TEXT NOT NULL,
    arm TEXT NOT NULL,
    propensity DOUBLE NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (experiment_id, version, unit_hash)
);

CREATE TABLE exposures (
    id TEXT NOT NULL,
    experiment_id BIGINT NOT NULL,
    version INTEGER NOT NULL,
    unit_hash TEXT NOT NULL,
    request_id TEXT NOT NULL,
    arm TEXT NOT NULL,
    propensity DOUBLE NOT NULL,
    pmf TEXT NOT NULL,
    context TEXT NOT NULL,
    policy_version BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (id, created_at)
);
CREATE INDEX exposures_experiment_time ON exposures (experiment_id, version, created_at);
CREATE INDEX exposures_unit ON exposures (unit_hash, created_at);

CREATE TABLE rewards (
    id TEXT NOT NULL,
    exposure_id TEXT NOT NULL,
    experiment_id BIGINT NOT NULL,
    version INTEGER NOT NULL,
    arm TEXT NOT NULL,
    metric TEXT NOT NULL,
    value DOUBLE NOT NULL,
    raw_value DOUBLE NOT NULL,
    idempotency_key TEXT NOT NULL,
    exposure_created_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (id, created_at)
);
CREATE INDEX rewards_experiment_metric ON rewards (experiment_id, metric, exposure_id);

CREATE TABLE reward_keys (
    idempotency_key TEXT PRIMARY KEY,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment_id BIGINT NOT NULL REFERENCES experiments(id),
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    details TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX decisions_experiment ON decisions (experiment_id, created_at);

CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);
