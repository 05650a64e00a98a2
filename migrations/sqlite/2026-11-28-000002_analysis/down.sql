DROP TABLE analyses;
DROP TABLE analysis_watermarks;
DROP TABLE allocation_stats;
DROP TABLE arm_stats;
