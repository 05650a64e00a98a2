DROP INDEX exposures_experiment_created;
DROP TABLE arm_covariate_stats;
