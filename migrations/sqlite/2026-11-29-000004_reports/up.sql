-- Weekly uplift reports, written by the scheduled report job when a week closes (or by
-- `strategist report weekly --store`), one row per (ISO week, format), so any replica can
-- list and serve them. A rewrite of the same week replaces its rows.
CREATE TABLE reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    week TEXT NOT NULL,
    format TEXT NOT NULL,
    content TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (week, format)
);
