-- The analyzer's state: sufficient statistics maintained incrementally from watermarks,
-- and the analyses it writes.

-- Mature outcome statistics per (experiment, version, arm, metric, period). A period is a
-- span of fixed allocation: the policy version the exposures were drawn under. An exposure
-- enters once its metric's attribution window has closed, with its final reward total y.
-- Plain moments (n, sum, sum_sq) and inverse-propensity moments with w = 1/propensity.
CREATE TABLE arm_stats (
    experiment_id BIGINT NOT NULL,
    version INTEGER NOT NULL,
    arm TEXT NOT NULL,
    metric TEXT NOT NULL,
    period BIGINT NOT NULL,
    n BIGINT NOT NULL,
    sum DOUBLE NOT NULL,
    sum_sq DOUBLE NOT NULL,
    sum_w DOUBLE NOT NULL,
    sum_wy DOUBLE NOT NULL,
    sum_wy2 DOUBLE NOT NULL,
    sum_w2 DOUBLE NOT NULL,
    sum_w2y DOUBLE NOT NULL,
    sum_w2y2 DOUBLE NOT NULL,
    PRIMARY KEY (experiment_id, version, arm, metric, period)
);

-- Allocation per (experiment, version, period, arm): exposures observed, and exposures
-- expected = the sum of this arm's logged PMF entry over every exposure (for SRM under
-- adaptive allocation).
CREATE TABLE allocation_stats (
    experiment_id BIGINT NOT NULL,
    version INTEGER NOT NULL,
    period BIGINT NOT NULL,
    arm TEXT NOT NULL,
    n BIGINT NOT NULL,
    expected DOUBLE NOT NULL,
    PRIMARY KEY (experiment_id, version, period, arm)
);

-- How far each stream of an experiment has been folded in: `allocation`, or `metric:NAME`.
CREATE TABLE analysis_watermarks (
    experiment_id BIGINT NOT NULL,
    stream TEXT NOT NULL,
    until_at TIMESTAMP NOT NULL,
    PRIMARY KEY (experiment_id, stream)
);

-- Each analysis run's result per experiment (JSON), newest last.
CREATE TABLE analyses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment_id BIGINT NOT NULL REFERENCES experiments(id),
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    result TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX analyses_experiment_time ON analyses (experiment_id, created_at);
