ALTER TABLE exposures DROP COLUMN shadow_pmf;
