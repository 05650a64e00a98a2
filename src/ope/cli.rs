//! The `strategist ope` subcommand: evaluate a target policy on logged bandit feedback and
//! print a table (or `--json`).
//!
//! ```text
//! strategist ope --logged obd:PATH.csv --target uniform|dist:PATH.csv|bts|fixed:item=w,...|arm:ITEM
//!                [--seed S] [--bootstrap 1000] [--folds 2] [--json]
//! strategist ope --logged experiment:KEY[@VERSION] [--database-url URL]
//!                --target uniform|arm:KEY|snapshot|snapshot:N|fixed:arm=w,...|dist:PATH.csv
//!                [--seed S] [--bootstrap 1000] [--folds 2] [--json]
//! ```
//!
//! `experiment:KEY` reads the platform's own exposure log from the store
//! ([`super::platform::load_experiment_log`]); its JSON report adds a `source` object (version,
//! metric, cutoff, mature and immature counts, features). A failure exits non-zero with a
//! stable code (`OpeError::code`) in the message; with `--json` it also prints
//! `{"error": CODE, "message": TEXT}` on stdout. A loader that builds a [`LoggedData`] itself
//! calls [`run_with_data`].

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::Context;
use serde::Serialize;

use super::estimators::Estimator;
use super::platform::{load_experiment_log, snapshot_policy, ExperimentLog, ExperimentLogInfo, ExperimentRef};
use super::{
    evaluate_with_progress, load_obd, LoggedData, ObdOptions, OpeConfig, OpeError, OpeReport, RewardModelKind,
    TargetPolicy, TargetSpec,
};

/// Where the logged data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoggedSource {
    /// An Open Bandit Dataset CSV file (`obd:PATH.csv`).
    Obd(PathBuf),
    /// An experiment's exposure log in the store (`experiment:KEY` or `experiment:KEY@VERSION`).
    Experiment(ExperimentRef),
}

impl FromStr for LoggedSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("obd:") {
            if path.is_empty() {
                return Err("obd: needs a path, as in obd:random/all/all.csv".into());
            }
            return Ok(Self::Obd(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("experiment:") {
            let (key, version) = match rest.split_once('@') {
                Some((key, v)) => {
                    let v = v.trim().parse::<i32>().ok().filter(|v| *v > 0).ok_or_else(|| {
                        format!("experiment:{rest}: the version after @ must be a positive integer, as in {key}@2")
                    })?;
                    (key, Some(v))
                }
                None => (rest, None),
            };
            let key = key.trim();
            if key.is_empty() {
                return Err("experiment: needs an experiment key, as in experiment:checkout".into());
            }
            return Ok(Self::Experiment(ExperimentRef { key: key.to_string(), version }));
        }
        Err(format!("unknown logged-data source {s:?}: expected obd:PATH.csv or experiment:KEY[@VERSION]"))
    }
}

/// Arguments of `strategist ope`.
#[derive(Debug, Clone, clap::Args)]
pub struct OpeArgs {
    /// Logged bandit feedback with propensities: `obd:PATH.csv` (an Open Bandit Dataset log
    /// file) or `experiment:KEY[@VERSION]` (an experiment's exposure log in the store, its
    /// current version by default; mature exposures only).
    #[arg(long, value_name = "obd:PATH.csv|experiment:KEY[@VERSION]")]
    pub logged: LoggedSource,
    /// Target policy: `uniform`; `arm:KEY` (always that arm or item); `fixed:item=w,...`
    /// (fixed weights, the same at every position); `dist:PATH.csv` (action distribution: item
    /// × position matrix or `item,position,probability` rows); `bts` (Bernoulli Thompson
    /// sampling fitted on the logged data; OBD logs only); `snapshot` / `snapshot:N` (the
    /// experiment's latest policy snapshot for the logged version / policy version N, as served
    /// with its exploration floor; experiment logs only).
    #[arg(long, value_name = "uniform|arm:KEY|fixed:item=w,...|dist:PATH.csv|bts|snapshot[:N]")]
    pub target: TargetSpec,
    /// Database of `--logged experiment:KEY`: postgres://USER@HOST/DB, sqlite://PATH or a file
    /// path [default: ./data/strategist.db].
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Seed of every random step (folds, bootstrap, Thompson sampling draws).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Bootstrap resamples for the percentile intervals (0 skips the bootstrap).
    #[arg(long, default_value_t = 1_000, value_name = "RESAMPLES")]
    pub bootstrap: usize,
    /// Cross-fitting folds of the reward model (1 = no cross-fitting).
    #[arg(long, default_value_t = 2)]
    pub folds: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The run's spinner: drawn on stderr only when stderr is a terminal (quiet in pipes).
static PROGRESS: std::sync::OnceLock<crate::cli::progress::Progress> = std::sync::OnceLock::new();

/// Shows the stage in progress beside the spinner.
fn progress(message: &str) {
    let bar = PROGRESS.get_or_init(|| crate::cli::progress::Progress::spinner("ope"));
    bar.set_message(format!("{message}…"));
    bar.inc(1);
}

/// Clears the spinner before the report (or an error) is printed.
fn finish_progress() {
    if let Some(bar) = PROGRESS.get() {
        bar.finish();
    }
}

/// Runs `strategist ope`. A failure carries its [`OpeError::code`] in the message (and, with
/// `--json`, is also printed as `{"error": CODE, "message": TEXT}` on stdout).
pub fn run(args: &OpeArgs) -> anyhow::Result<()> {
    let result = match &args.logged {
        LoggedSource::Obd(path) => {
            progress("loading the logged data");
            load_obd(path, &ObdOptions::default())
                .with_context(|| format!("loading --logged obd:{}", path.display()))
                .and_then(|data| run_with_data(args, &data))
        }
        LoggedSource::Experiment(source) => run_experiment(args, source),
    };
    finish_progress();
    result.map_err(|err| {
        let code = err.downcast_ref::<OpeError>().map_or("ope_failed", OpeError::code);
        if args.json {
            let body = serde_json::json!({"error": code, "message": format!("{err:#}")});
            // The error itself is returned below; a failed write to stdout cannot add to it.
            let _ = writeln!(std::io::stdout().lock(), "{body}");
        }
        err.context(format!("strategist ope failed [{code}]"))
    })
}

/// Evaluates `args.target` on an experiment's exposure log in the store.
fn run_experiment(args: &OpeArgs, source: &ExperimentRef) -> anyhow::Result<()> {
    progress("opening the store");
    let settings = crate::config::Settings {
        database_url: args.database_url.clone().unwrap_or_default(),
        pool_size: 2,
        ..crate::config::Settings::default()
    };
    let db = crate::startup::open_store(&settings).map_err(|e| OpeError::Store { message: format!("{e:#}") })?;
    progress("reading the exposure log");
    let log = load_experiment_log(&db, source, crate::store::now())?;
    let report = experiment_report(args, &db, &log)?;
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&ExperimentReport { report: &report, source: &log.info })
            .context("serialising the report")?;
        s.push('\n');
        s
    } else {
        let mut s = render_source(&log.info);
        s.push_str(&render_table(&report));
        s
    };
    print(&text)
}

/// The JSON report of an experiment log: the OPE report with the `source` it was computed on.
#[derive(Debug, Serialize)]
struct ExperimentReport<'a> {
    #[serde(flatten)]
    report: &'a OpeReport,
    source: &'a ExperimentLogInfo,
}

/// The target policy for an experiment's log (snapshots are read from `db`).
pub fn experiment_target(
    spec: &TargetSpec,
    db: &crate::store::Db,
    log: &ExperimentLog,
    seed: u64,
) -> Result<Box<dyn TargetPolicy>, OpeError> {
    match spec {
        TargetSpec::Snapshot(policy_version) => Ok(Box::new(snapshot_policy(db, log, *policy_version)?)),
        TargetSpec::Bts => Err(OpeError::TargetNotApplicable {
            target: spec.to_string(),
            source_kind: "an experiment's exposure log",
            reason: "bts is Thompson sampling over an Open Bandit Dataset slate; evaluate the experiment's own \
                     Thompson policy with --target snapshot"
                .into(),
        }),
        _ => spec.build(&log.data, seed),
    }
}

/// The report `strategist ope --logged experiment:KEY` prints. The reward model also uses the
/// numeric context attributes (business features such as a cart value, unlike OBD's affinities).
pub fn experiment_report(args: &OpeArgs, db: &crate::store::Db, log: &ExperimentLog) -> Result<OpeReport, OpeError> {
    progress("building the target policy");
    let target = experiment_target(&args.target, db, log, args.seed)?;
    let mut config = OpeConfig::with_seed(args.seed, args.bootstrap, args.folds);
    config.reward_model.use_numeric = true;
    evaluate_with_progress(&log.data, target.as_ref(), &config, &mut progress)
}

/// Evaluates `args.target` on already-loaded `data` and prints the result (table or JSON).
pub fn run_with_data(args: &OpeArgs, data: &LoggedData) -> anyhow::Result<()> {
    let report = report(args, data)?;
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&report).context("serialising the report")?;
        s.push('\n');
        s
    } else {
        render_table(&report)
    };
    print(&text)
}

fn print(text: &str) -> anyhow::Result<()> {
    finish_progress();
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).context("writing the report")
}

/// The report `strategist ope` prints for `args` on `data`.
pub fn report(args: &OpeArgs, data: &LoggedData) -> Result<OpeReport, OpeError> {
    progress("building the target policy");
    let target = args.target.build(data, args.seed)?;
    let config = OpeConfig::with_seed(args.seed, args.bootstrap, args.folds);
    evaluate_with_progress(data, target.as_ref(), &config, &mut progress)
}

/// The lines above the table for an experiment log.
pub fn render_source(info: &ExperimentLogInfo) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        s,
        "experiment {} version {} | reward: {} within {} | {} mature exposures, {} left out as immature \
         (created after {} UTC)",
        info.experiment,
        info.version,
        info.metric,
        info.window,
        info.n_mature,
        info.n_immature,
        info.cutoff.format("%Y-%m-%d %H:%M:%S")
    );
    if !info.dropped_features.is_empty() {
        let _ = writeln!(s, "context attributes left out (too many values): {}", info.dropped_features.join(", "));
    }
    s
}

fn interval(ci: [f64; 2]) -> String {
    format!("[{:.6}, {:.6}]", ci[0], ci[1])
}

/// The terminal table of a report.
pub fn render_table(report: &OpeReport) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(s, "Off-policy evaluation of {} on {} logged rows", report.target, report.n);
    let _ = writeln!(
        s,
        "logged policy value {:.6} | ESS {:.1} | max weight {:.3} | reward model {}, {} fold(s) | \
         {} bootstrap resamples | seed {}",
        report.on_policy_value,
        report.ess,
        report.max_weight,
        match report.reward_model {
            RewardModelKind::Linear => "linear",
            _ => "logistic",
        },
        report.folds,
        report.bootstrap_resamples,
        report.seed
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<10} {:>10}  {:<24}  {:<24}  {:>9}",
        "estimator", "value", "95% CI", "bootstrap 95% CI", "vs logged"
    );
    for e in Estimator::ALL {
        let r = report.estimators.get(e);
        let boot = r.bootstrap_ci95.map_or_else(|| "-".to_string(), interval);
        let rel = r.relative_to_logged.map_or_else(|| "n/a".to_string(), |x| format!("{:+.1}%", 100.0 * x));
        let _ =
            writeln!(s, "{:<10} {:>10.6}  {:<24}  {:<24}  {:>9}", e.label(), r.estimate, interval(r.ci95), boot, rel);
    }
    let _ = writeln!(s);
    if let Some(tau) = report.estimators.switch_dr.tau {
        if tau >= report.max_weight {
            let _ = writeln!(
                s,
                "Switch-DR threshold τ = {tau:.3} ≥ the largest weight: no row switched (Switch-DR = DR (β=1))"
            );
        } else {
            let _ = writeln!(
                s,
                "Switch-DR threshold τ = {tau:.3}: rows with a larger importance weight use the direct method"
            );
        }
    }
    if let Some(beta) = report.estimators.dr.beta {
        let _ = writeln!(
            s,
            "DR = IPW − β·(w·q̂ − q̂^π) with β = {beta:.4} fitted by least squares (β = 0 is IPW, β = 1 the \
             DR (β=1) row): asymptotically never less precise than either."
        );
    }
    let _ = writeln!(
        s,
        "DM's interval is conditional on the fitted reward model (it ignores the model's own estimation error)."
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ope::obd::tests::reference_dir;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        ope: OpeArgs,
    }

    fn parse(args: &[&str]) -> Result<OpeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("ope").chain(args.iter().copied())).map(|c| c.ope)
    }

    #[test]
    fn parses_the_documented_shape_with_defaults() {
        let a = parse(&["--logged", "obd:x.csv", "--target", "uniform"]).unwrap();
        assert_eq!(a.logged, LoggedSource::Obd("x.csv".into()));
        assert_eq!(a.target, TargetSpec::Uniform);
        assert_eq!((a.seed, a.bootstrap, a.folds, a.json), (0, 1000, 2, false));
        let a = parse(&[
            "--logged",
            "experiment:checkout",
            "--target",
            "fixed:1=2,3=1",
            "--seed",
            "9",
            "--bootstrap",
            "50",
            "--folds",
            "3",
            "--json",
        ])
        .unwrap();
        assert_eq!(a.logged, LoggedSource::Experiment(ExperimentRef { key: "checkout".into(), version: None }));
        assert_eq!(a.target, TargetSpec::Fixed(vec![("1".into(), 2.0), ("3".into(), 1.0)]));
        assert_eq!((a.seed, a.bootstrap, a.folds, a.json), (9, 50, 3, true));
        assert!(parse(&["--logged", "s3:x", "--target", "uniform"]).is_err());
        assert!(parse(&["--logged", "obd:x.csv", "--target", "greedy"]).is_err());
    }

    #[test]
    fn experiment_sources_and_store_targets_parse() {
        let a =
            parse(&["--logged", "experiment:checkout@3", "--target", "snapshot:2", "--database-url", "x.db"]).unwrap();
        assert_eq!(a.logged, LoggedSource::Experiment(ExperimentRef { key: "checkout".into(), version: Some(3) }));
        assert_eq!(a.target, TargetSpec::Snapshot(Some(2)));
        assert_eq!(a.database_url.as_deref(), Some("x.db"));
        let a = parse(&["--logged", "experiment:checkout", "--target", "arm:b"]).unwrap();
        assert_eq!(a.logged, LoggedSource::Experiment(ExperimentRef { key: "checkout".into(), version: None }));
        assert_eq!(a.target, TargetSpec::Arm("b".into()));
        assert_eq!(
            parse(&["--logged", "experiment:x", "--target", "snapshot"]).unwrap().target,
            TargetSpec::Snapshot(None)
        );
        for bad in ["experiment:", "experiment:x@", "experiment:x@0", "experiment:x@v2", "experiment:@2"] {
            assert!(parse(&["--logged", bad, "--target", "uniform"]).is_err(), "{bad}");
        }
        for bad in ["snapshot:", "snapshot:0", "snapshot:latest", "arm:"] {
            assert!(parse(&["--logged", "experiment:x", "--target", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn snapshot_targets_do_not_apply_to_obd_logs() {
        let path = reference_dir().join("obd/random/men/men.csv");
        let arg = format!("obd:{}", path.display());
        let a = parse(&["--logged", &arg, "--target", "snapshot", "--bootstrap", "0"]).unwrap();
        let err = run(&a).unwrap_err();
        assert_eq!(err.downcast_ref::<OpeError>().map(OpeError::code), Some("ope_target_not_applicable"));
        assert!(err.to_string().contains("[ope_target_not_applicable]"), "{err:#}");
    }

    #[test]
    fn json_report_has_the_documented_shape() {
        let path = reference_dir().join("obd/random/men/men.csv");
        let arg = format!("obd:{}", path.display());
        let a = parse(&["--logged", &arg, "--target", "uniform", "--bootstrap", "100"]).unwrap();
        let data = load_obd(&path, &ObdOptions::default()).unwrap();
        let r = report(&a, &data).unwrap();
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for key in ["n", "ess", "max_weight", "on_policy_value"] {
            assert!(v[key].is_number(), "{key}");
        }
        for e in ["ipw", "snipw", "dm", "dr", "dr_classic", "switch_dr"] {
            let est = &v["estimators"][e];
            assert!(est["estimate"].is_number(), "{e}");
            assert_eq!(est["ci95"].as_array().map(Vec::len), Some(2), "{e}");
            assert_eq!(est["bootstrap_ci95"].as_array().map(Vec::len), Some(2), "{e}");
        }
        let table = render_table(&r);
        assert!(v["estimators"]["dr"]["beta"].is_number() && v["estimators"]["ipw"].get("beta").is_none());
        assert!(table.contains("Switch-DR") && table.contains("bootstrap 95% CI") && table.contains("DR (β=1)"));
    }
}
