-- CUPED: per (experiment, version, arm, metric, period), the moments of a pre-exposure
-- covariate x (the unit's total of the experiment's covariate metric in the 30 days before
-- the exposure) and its cross-product with the outcome y, beside arm_stats (same key).
CREATE TABLE arm_covariate_stats (
    experiment_id BIGINT NOT NULL,
    version INTEGER NOT NULL,
    arm TEXT NOT NULL,
    metric TEXT NOT NULL,
    period BIGINT NOT NULL,
    sum_x DOUBLE NOT NULL,
    sum_x_sq DOUBLE NOT NULL,
    sum_xy DOUBLE NOT NULL,
    PRIMARY KEY (experiment_id, version, arm, metric, period)
);

-- The analyzer reads rewards per exposure (a sticky unit's visits; a unit's pre-exposure
-- rewards for CUPED) without the experiment and metric in front.
CREATE INDEX rewards_exposure ON rewards (exposure_id);
