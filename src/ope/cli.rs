//! The `strategist ope` subcommand: evaluate a target policy on logged bandit feedback and
//! print a table (or `--json`).
//!
//! ```text
//! strategist ope --logged obd:PATH.csv --target uniform|dist:PATH.csv|bts|fixed:item=w,...
//!                [--seed S] [--bootstrap 1000] [--folds 2] [--json]
//! ```
//!
//! `--logged experiment:KEY` (the platform's exposure log) parses but needs the store; until
//! the store-backed loader is wired, [`run`] answers with [`OpeError::NeedsDatabase`]. A loader
//! that builds a [`LoggedData`] itself calls [`run_with_data`].

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::Context;

use super::estimators::Estimator;
use super::{
    evaluate_with_progress, load_obd, LoggedData, ObdOptions, OpeConfig, OpeError, OpeReport, RewardModelKind,
    TargetSpec,
};

/// Where the logged data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoggedSource {
    /// An Open Bandit Dataset CSV file (`obd:PATH.csv`).
    Obd(PathBuf),
    /// An experiment's exposure log in the store (`experiment:KEY`).
    Experiment(String),
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
        if let Some(key) = s.strip_prefix("experiment:") {
            if key.is_empty() {
                return Err("experiment: needs an experiment key".into());
            }
            return Ok(Self::Experiment(key.to_string()));
        }
        Err(format!("unknown logged-data source {s:?}: expected obd:PATH.csv or experiment:KEY"))
    }
}

/// Arguments of `strategist ope`.
#[derive(Debug, Clone, clap::Args)]
pub struct OpeArgs {
    /// Logged bandit feedback with propensities: `obd:PATH.csv` (an Open Bandit Dataset log
    /// file) or `experiment:KEY` (an experiment's exposure log; needs a database).
    #[arg(long, value_name = "obd:PATH.csv|experiment:KEY")]
    pub logged: LoggedSource,
    /// Target policy: `uniform`, `dist:PATH.csv` (action distribution: item × position matrix
    /// or `item,position,probability` rows), `bts` (Bernoulli Thompson sampling fitted on the
    /// logged data) or `fixed:item=w,...` (fixed weights, the same at every position).
    #[arg(long, value_name = "uniform|dist:PATH.csv|bts|fixed:item=w,...")]
    pub target: TargetSpec,
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

/// Progress messages on stderr, only when stderr is a terminal.
fn progress(message: &str) {
    let mut err = std::io::stderr();
    if err.is_terminal() {
        // Progress is best effort: a failed write to the terminal must not fail the run.
        let _ = writeln!(err, "ope: {message}…");
    }
}

/// Runs `strategist ope`.
pub fn run(args: &OpeArgs) -> anyhow::Result<()> {
    let data = match &args.logged {
        LoggedSource::Obd(path) => {
            progress("loading the logged data");
            load_obd(path, &ObdOptions::default())
                .with_context(|| format!("loading --logged obd:{}", path.display()))?
        }
        LoggedSource::Experiment(key) => return Err(OpeError::NeedsDatabase { key: key.clone() }.into()),
    };
    run_with_data(args, &data)
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
            let _ =
                writeln!(s, "Switch-DR threshold τ = {tau:.3} ≥ the largest weight: no row switched (Switch-DR = DR)");
        } else {
            let _ = writeln!(
                s,
                "Switch-DR threshold τ = {tau:.3}: rows with a larger importance weight use the direct method"
            );
        }
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
        assert_eq!(a.logged, LoggedSource::Experiment("checkout".into()));
        assert_eq!(a.target, TargetSpec::Fixed(vec![("1".into(), 2.0), ("3".into(), 1.0)]));
        assert_eq!((a.seed, a.bootstrap, a.folds, a.json), (9, 50, 3, true));
        assert!(parse(&["--logged", "s3:x", "--target", "uniform"]).is_err());
        assert!(parse(&["--logged", "obd:x.csv", "--target", "greedy"]).is_err());
    }

    #[test]
    fn experiment_source_asks_for_a_database() {
        let a = parse(&["--logged", "experiment:checkout", "--target", "bts"]).unwrap();
        let err = run(&a).unwrap_err();
        let ope = err.downcast_ref::<OpeError>().map(OpeError::code);
        assert_eq!(ope, Some("ope_needs_database"));
        assert!(err.to_string().contains("needs a database: pass --database-url"));
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
        for e in ["ipw", "snipw", "dm", "dr", "switch_dr"] {
            let est = &v["estimators"][e];
            assert!(est["estimate"].is_number(), "{e}");
            assert_eq!(est["ci95"].as_array().map(Vec::len), Some(2), "{e}");
            assert_eq!(est["bootstrap_ci95"].as_array().map(Vec::len), Some(2), "{e}");
        }
        let table = render_table(&r);
        assert!(table.contains("Switch-DR") && table.contains("bootstrap 95% CI"));
    }
}
