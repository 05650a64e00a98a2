-- Shadow mode (issue 5): with each logged decision of an experiment that has a shadow
-- candidate policy, the candidate's full PMF over the arms for the same context,
-- eligibility and floor (JSON object arm → probability, like `pmf`; NULL when the
-- experiment has no candidate). Off-policy evaluation of the candidate reads it back.
-- The candidate's own learned state travels inside the live snapshot (`policy_snapshots.state`).
ALTER TABLE exposures ADD COLUMN shadow_pmf TEXT;
