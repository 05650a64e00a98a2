DROP TABLE arm_covariate_stats;
