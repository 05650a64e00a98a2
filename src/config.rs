//! Configuration: built-in defaults, overridden by a TOML file (`--config`), overridden by
//! environment variables and command-line flags (clap reads both). `strategist serve
//! --help` lists every option with its variable.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::experiment::definition::parse_duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `postgres://…`, `sqlite://PATH` or a file path; empty = `./data/strategist.db`.
    pub database_url: String,
    pub bind: String,
    /// Key of the keyed hash that pseudonymises unit ids. Empty = generated once and kept
    /// in the store, so every replica sharing the store uses the same one.
    pub unit_id_secret: String,
    pub pool_size: u32,
    pub workers: usize,
    pub learner_interval: String,
    pub refresh_interval: String,
    pub writer_max_batch: usize,
    pub writer_batch_wait: String,
    /// Log writer threads (each with its own connection); 0 = automatic: 2 on Postgres,
    /// 1 on SQLite (one writer at a time there anyway).
    pub writer_threads: usize,
    pub max_body_bytes: usize,
    pub run_learner: bool,
    pub analyzer_interval: String,
    pub analyzer_margin: String,
    pub run_analyzer: bool,
    /// When each week's report is written after the week closes: `"WEEKDAY HH:MM"` (UTC),
    /// e.g. `"mon 06:00"`; empty disables the report job.
    pub report_schedule: String,
    /// Where policy scoring runs: `auto` (the first GPU when built with `cuda`, else the
    /// CPU), `cpu` or `cuda:N`. Resolved once at start.
    pub device: String,
    /// The neural scorer's micro-batcher: most requests per forward pass, the longest wait
    /// for more after the first, and the largest CPU model scored inline instead (0 = always
    /// batch). See `scoring::BatchConfig`.
    pub scoring_max_batch: usize,
    pub scoring_max_wait: String,
    pub scoring_inline_max_params: usize,
    pub log_json: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: String::new(),
            bind: "127.0.0.1:8080".into(),
            unit_id_secret: String::new(),
            pool_size: 16,
            workers: 0,
            learner_interval: "30s".into(),
            refresh_interval: "1s".into(),
            writer_max_batch: 1024,
            writer_batch_wait: "0ms".into(),
            writer_threads: 0,
            max_body_bytes: 256 * 1024,
            run_learner: true,
            analyzer_interval: "5m".into(),
            analyzer_margin: "30s".into(),
            run_analyzer: true,
            report_schedule: "mon 06:00".into(),
            device: "auto".into(),
            scoring_max_batch: 256,
            scoring_max_wait: "1ms".into(),
            scoring_inline_max_params: 0,
            log_json: false,
        }
    }
}

/// Command-line / environment overrides; `None` keeps the file's or default value.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SettingsArgs {
    /// TOML file with any of the settings below (flags and variables override it).
    #[arg(long, env = "STRATEGIST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database: postgres://USER@HOST/DB, sqlite://PATH or a file path [default: ./data/strategist.db].
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "STRATEGIST_BIND")]
    pub bind: Option<String>,
    /// Secret for the keyed hash of unit ids [default: generated once, kept in the store].
    #[arg(long, env = "STRATEGIST_UNIT_ID_SECRET", hide_env_values = true)]
    pub unit_id_secret: Option<String>,
    /// Database connections in the pool [default: 16].
    #[arg(long, env = "STRATEGIST_POOL_SIZE")]
    pub pool_size: Option<u32>,
    /// HTTP worker threads [default: one per core].
    #[arg(long, env = "STRATEGIST_WORKERS")]
    pub workers: Option<usize>,
    /// How often the learner updates policies, e.g. 30s [default: 30s].
    #[arg(long, env = "STRATEGIST_LEARNER_INTERVAL")]
    pub learner_interval: Option<String>,
    /// How often a serving process checks the store for new snapshots [default: 1s].
    #[arg(long, env = "STRATEGIST_REFRESH_INTERVAL")]
    pub refresh_interval: Option<String>,
    /// Largest group commit of the log writer [default: 1024].
    #[arg(long, env = "STRATEGIST_WRITER_MAX_BATCH")]
    pub writer_max_batch: Option<usize>,
    /// Extra wait for a fuller batch, e.g. 0ms or 500us [default: 0ms: commit at once].
    #[arg(long, env = "STRATEGIST_WRITER_BATCH_WAIT")]
    pub writer_batch_wait: Option<String>,
    /// Log writer threads, each committing on its own connection, so one gathers and
    /// writes the next batch while another waits for its commit to flush; 0 = automatic
    /// (2 on Postgres, 1 on SQLite) [default: 0].
    #[arg(long, env = "STRATEGIST_WRITER_THREADS")]
    pub writer_threads: Option<usize>,
    /// Largest accepted request body in bytes [default: 262144].
    #[arg(long, env = "STRATEGIST_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Run the background learner in this process (true/false) [default: true].
    #[arg(long, env = "STRATEGIST_RUN_LEARNER")]
    pub run_learner: Option<bool>,
    /// How often the analyzer re-estimates every experiment, e.g. 5m [default: 5m].
    #[arg(long, env = "STRATEGIST_ANALYZER_INTERVAL")]
    pub analyzer_interval: Option<String>,
    /// Time given to rewards to commit after an attribution window closes, before the
    /// exposure enters the decision statistics [default: 30s].
    #[arg(long, env = "STRATEGIST_ANALYZER_MARGIN")]
    pub analyzer_margin: Option<String>,
    /// Run the background analyzer in this process (true/false) [default: true].
    #[arg(long, env = "STRATEGIST_RUN_ANALYZER")]
    pub run_analyzer: Option<bool>,
    /// When the weekly report of a closed week is written and stored: "WEEKDAY HH:MM" (UTC),
    /// e.g. "mon 06:00"; empty disables it [default: mon 06:00].
    #[arg(long, env = "STRATEGIST_REPORT_SCHEDULE")]
    pub report_schedule: Option<String>,
    /// Where policy scoring runs: auto | cpu | cuda:N (cuda needs a build with the `cuda`
    /// feature) [default: auto].
    #[arg(long, env = "STRATEGIST_DEVICE")]
    pub device: Option<String>,
    /// Most requests the neural scorer's micro-batcher puts in one forward pass (1–65536)
    /// [default: 256].
    #[arg(long, env = "STRATEGIST_SCORING_MAX_BATCH")]
    pub scoring_max_batch: Option<usize>,
    /// Longest the micro-batcher waits for more requests after a batch's first, e.g. 1ms or
    /// 0ms (no timer) [default: 1ms].
    #[arg(long, env = "STRATEGIST_SCORING_MAX_WAIT")]
    pub scoring_max_wait: Option<String>,
    /// On the CPU, neural models with at most this many parameters are scored inline, one
    /// request at a time, instead of batched (0 = always batch) [default: 0].
    #[arg(long, env = "STRATEGIST_SCORING_INLINE_MAX_PARAMS")]
    pub scoring_inline_max_params: Option<usize>,
    /// Log as JSON lines [default: false].
    #[arg(long, env = "STRATEGIST_LOG_JSON")]
    pub log_json: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("setting `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Settings {
    /// Defaults < file < environment/flags.
    pub fn load(args: &SettingsArgs) -> Result<Settings, ConfigError> {
        let mut s = match &args.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                toml::from_str::<Settings>(&text)
                    .map_err(|e| ConfigError::Parse { path: path.clone(), message: e.to_string() })?
            }
            None => Settings::default(),
        };
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = &args.$f { s.$f = v.clone(); } )* };
        }
        over!(
            database_url,
            bind,
            unit_id_secret,
            pool_size,
            workers,
            learner_interval,
            refresh_interval,
            writer_max_batch,
            writer_batch_wait,
            writer_threads,
            max_body_bytes,
            run_learner,
            analyzer_interval,
            analyzer_margin,
            run_analyzer,
            report_schedule,
            device,
            scoring_max_batch,
            scoring_max_wait,
            scoring_inline_max_params,
            log_json
        );
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<(), ConfigError> {
        for (field, v) in [
            ("learner_interval", &self.learner_interval),
            ("refresh_interval", &self.refresh_interval),
            ("writer_batch_wait", &self.writer_batch_wait),
            ("analyzer_interval", &self.analyzer_interval),
            ("analyzer_margin", &self.analyzer_margin),
            ("scoring_max_wait", &self.scoring_max_wait),
        ] {
            parse_duration(v).map_err(|reason| ConfigError::Invalid { field, reason })?;
        }
        crate::report::job::Schedule::parse(&self.report_schedule)
            .map_err(|reason| ConfigError::Invalid { field: "report_schedule", reason })?;
        self.device
            .parse::<crate::scoring::DeviceSpec>()
            .map_err(|e| ConfigError::Invalid { field: "device", reason: e.to_string() })?;
        if let Err(crate::scoring::ScoringError::InvalidConfig { field, reason }) = self.scoring_batch().validate() {
            let field = if field == "max_wait" { "scoring_max_wait" } else { "scoring_max_batch" };
            return Err(ConfigError::Invalid { field, reason });
        }
        if self.writer_max_batch == 0 {
            return Err(ConfigError::Invalid { field: "writer_max_batch", reason: "must be at least 1".into() });
        }
        if self.writer_threads > 16 {
            return Err(ConfigError::Invalid { field: "writer_threads", reason: "must be at most 16".into() });
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid { field: "max_body_bytes", reason: "must be at least 1024".into() });
        }
        Ok(())
    }

    pub fn learner_every(&self) -> Duration {
        parse_duration(&self.learner_interval).unwrap_or(Duration::from_secs(30))
    }

    pub fn analyzer_every(&self) -> Duration {
        parse_duration(&self.analyzer_interval).unwrap_or(Duration::from_secs(300))
    }

    pub fn analyzer_margin(&self) -> Duration {
        parse_duration(&self.analyzer_margin).unwrap_or(Duration::from_secs(30))
    }

    pub fn refresh_every(&self) -> Duration {
        parse_duration(&self.refresh_interval).unwrap_or(Duration::from_secs(1))
    }

    /// The report job's schedule; `None` when disabled (checked by `load`).
    pub fn report_schedule(&self) -> Option<crate::report::job::Schedule> {
        crate::report::job::Schedule::parse(&self.report_schedule).ok().flatten()
    }

    /// The neural scorer's micro-batcher bounds (queue capacity: the default).
    pub fn scoring_batch(&self) -> crate::scoring::BatchConfig {
        crate::scoring::BatchConfig {
            max_batch: self.scoring_max_batch,
            max_wait: parse_duration(&self.scoring_max_wait).unwrap_or(Duration::from_millis(1)),
            inline_max_params: self.scoring_inline_max_params,
            ..Default::default()
        }
    }

    pub fn batch_wait(&self) -> Duration {
        parse_duration(&self.writer_batch_wait).unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("strategist-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.toml");
        std::fs::write(&path, "bind = \"0.0.0.0:9000\"\npool_size = 4\n").unwrap();
        let args = SettingsArgs { config: Some(path.clone()), pool_size: Some(8), ..Default::default() };
        let s = Settings::load(&args).unwrap();
        assert_eq!(s.bind, "0.0.0.0:9000");
        assert_eq!(s.pool_size, 8);
        assert_eq!(s.learner_interval, "30s");
        std::fs::write(&path, "bnd = 1\n").unwrap();
        assert!(matches!(Settings::load(&args), Err(ConfigError::Parse { .. })));
        let bad = SettingsArgs { learner_interval: Some("soon".into()), ..Default::default() };
        assert!(matches!(Settings::load(&bad), Err(ConfigError::Invalid { field: "learner_interval", .. })));
    }

    #[test]
    fn the_device_is_auto_by_default_and_checked() {
        assert_eq!(Settings::load(&SettingsArgs::default()).unwrap().device, "auto");
        for ok in ["cpu", "cuda:1"] {
            let args = SettingsArgs { device: Some(ok.into()), ..Default::default() };
            assert_eq!(Settings::load(&args).unwrap().device, ok);
        }
        let bad = SettingsArgs { device: Some("gpu".into()), ..Default::default() };
        assert!(matches!(Settings::load(&bad), Err(ConfigError::Invalid { field: "device", .. })));
    }

    #[test]
    fn the_scoring_batcher_bounds_default_to_256_and_1ms_and_are_checked() {
        let s = Settings::load(&SettingsArgs::default()).unwrap();
        let b = s.scoring_batch();
        assert_eq!((b.max_batch, b.max_wait, b.inline_max_params), (256, Duration::from_millis(1), 0));
        let args = SettingsArgs {
            scoring_max_batch: Some(64),
            scoring_max_wait: Some("0ms".into()),
            scoring_inline_max_params: Some(5_000),
            ..Default::default()
        };
        let b = Settings::load(&args).unwrap().scoring_batch();
        assert_eq!((b.max_batch, b.max_wait, b.inline_max_params), (64, Duration::ZERO, 5_000));
        let bad = SettingsArgs { scoring_max_batch: Some(0), ..Default::default() };
        assert!(matches!(Settings::load(&bad), Err(ConfigError::Invalid { field: "scoring_max_batch", .. })));
        for wait in ["later", "2s"] {
            let bad = SettingsArgs { scoring_max_wait: Some(wait.into()), ..Default::default() };
            assert!(matches!(Settings::load(&bad), Err(ConfigError::Invalid { field: "scoring_max_wait", .. })));
        }
    }
}
