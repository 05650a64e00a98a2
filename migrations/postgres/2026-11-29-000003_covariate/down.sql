DROP INDEX rewards_exposure;
DROP TABLE arm_covariate_stats;
