//! The `strategist ope` subcommand: evaluate a target policy on logged bandit feedback and
//! print a table (or `--json`).
//!
//! ```text
//! strategist ope --logged obd:PATH.csv --target uniform|dist:PATH.csv|bts|fixed:item=w,...|arm:ITEM
//!                [--seed S] [--bootstrap 1000] [--folds 2] [--json]
//! strategist ope --logged experiment:KEY[@VERSION] [--database-url URL]
//!                --target uniform|arm:KEY|snapshot|snapshot:N|fixed:arm=w,...|dist:PATH.csv
//!                [--seed S] [--bootstrap 1000] [--folds 2] [--json]
//! strategist ope learn --data DIR [--campaign all] [--policies lin_ts,lin_ucb,neural_pg]
//!                [--holdout-days 2] [--min-propensity F] [--epochs N] [--hidden N] … [--json]
//! ```
//!
//! `ope learn` trains the contextual policies on the Open Bandit Dataset's uniform-random logs
//! of the earlier days and evaluates them on the held-out days ([`super::learn`]).
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
use super::learn::{learn_obd, LearnConfig, LearnReport, LearnedKind, NeuralSettings, OnPolicyValue};
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

/// Arguments of `strategist ope`: `--logged` and `--target` are required unless a subcommand
/// (`learn`) is given, which takes its own arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct OpeArgs {
    #[command(subcommand)]
    pub command: Option<OpeCommand>,
    /// Logged bandit feedback with propensities: `obd:PATH.csv` (an Open Bandit Dataset log
    /// file) or `experiment:KEY[@VERSION]` (an experiment's exposure log in the store, its
    /// current version by default; mature exposures only).
    #[arg(long, required = true, value_name = "obd:PATH.csv|experiment:KEY[@VERSION]")]
    pub logged: Option<LoggedSource>,
    /// Target policy: `uniform`; `arm:KEY` (always that arm or item); `fixed:item=w,...`
    /// (fixed weights, the same at every position); `dist:PATH.csv` (action distribution: item
    /// × position matrix or `item,position,probability` rows); `bts` (Bernoulli Thompson
    /// sampling fitted on the logged data; OBD logs only); `snapshot` / `snapshot:N` (the
    /// experiment's latest policy snapshot for the logged version / policy version N, as served
    /// with its exploration floor — for lin_ts, lin_ucb and neural_pg, per exposure from the
    /// context it logged; experiment logs only).
    #[arg(long, required = true, value_name = "uniform|arm:KEY|fixed:item=w,...|dist:PATH.csv|bts|snapshot[:N]")]
    pub target: Option<TargetSpec>,
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

/// Subcommands of `strategist ope`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum OpeCommand {
    /// Train lin_ts, lin_ucb and neural_pg on the Open Bandit Dataset's `random` logs of the
    /// earlier days and estimate their value on the held-out days, against the production `bts`.
    Learn(LearnArgs),
}

/// Arguments of `strategist ope learn`.
#[derive(Debug, Clone, clap::Args)]
pub struct LearnArgs {
    /// Folder of the Open Bandit Dataset, holding `random/CAMPAIGN/CAMPAIGN.csv` and
    /// `bts/CAMPAIGN/CAMPAIGN.csv`.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Campaign: `all`, `men` or `women`.
    #[arg(long, default_value = "all", value_parser = parse_campaign)]
    pub campaign: String,
    /// Policies to train, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "lin_ts,lin_ucb,neural_pg")]
    pub policies: Vec<LearnedKind>,
    /// Calendar days held out for evaluation (the latest ones).
    #[arg(long, default_value_t = 2)]
    pub holdout_days: usize,
    /// Exploration floor mixed into every learned PMF (0 = the policies as they rank).
    #[arg(long, default_value_t = 0.0)]
    pub min_propensity: f64,
    /// Ridge prior precision of lin_ts and lin_ucb.
    #[arg(long, default_value_t = crate::policy::linear::DEFAULT_LAMBDA)]
    pub lambda: f64,
    /// lin_ts exploration scale.
    #[arg(long, default_value_t = crate::policy::linear::DEFAULT_V)]
    pub v: f64,
    /// lin_ts Monte Carlo draws per row.
    #[arg(long, default_value_t = crate::policy::linear::DEFAULT_LIN_TS_DRAWS)]
    pub draws: u32,
    /// lin_ucb confidence width.
    #[arg(long, default_value_t = crate::policy::linear::DEFAULT_ALPHA)]
    pub alpha: f64,
    /// neural_pg training epochs [default: the policy's default].
    #[arg(long)]
    pub epochs: Option<u32>,
    /// neural_pg hidden width [default: the policy's default].
    #[arg(long)]
    pub hidden: Option<usize>,
    /// neural_pg embedding width [default: the policy's default].
    #[arg(long)]
    pub embedding: Option<usize>,
    /// neural_pg learning rate [default: the policy's default].
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// neural_pg softmax temperature [default: the policy's default].
    #[arg(long)]
    pub temperature: Option<f64>,
    /// neural_pg importance-weight clip [default: the policy's default].
    #[arg(long)]
    pub clip: Option<f64>,
    /// neural_pg training objective: `snipw` or `dr` [default: the policy's default].
    #[arg(long, value_parser = parse_objective)]
    pub objective: Option<crate::policy::neural::Objective>,
    /// Seed of every random step.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Bootstrap resamples for the percentile intervals (0 skips the bootstrap).
    #[arg(long, default_value_t = 1_000, value_name = "RESAMPLES")]
    pub bootstrap: usize,
    /// Cross-fitting folds of the reward model (DR).
    #[arg(long, default_value_t = 2)]
    pub folds: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_objective(s: &str) -> Result<crate::policy::neural::Objective, String> {
    serde_json::from_value(serde_json::Value::String(s.trim().to_string()))
        .map_err(|_| format!("unknown objective {s:?}: expected snipw or dr"))
}

fn parse_campaign(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("campaign {s:?} must be a folder name such as all, men or women"))
    }
}

impl LearnArgs {
    /// The settings of [`learn_obd`].
    pub fn config(&self) -> LearnConfig {
        let d = NeuralSettings::default();
        LearnConfig {
            policies: self.policies.clone(),
            holdout_days: self.holdout_days,
            lambda: self.lambda,
            v: self.v,
            draws: self.draws,
            alpha: self.alpha,
            neural: NeuralSettings {
                hidden: self.hidden.unwrap_or(d.hidden),
                embedding: self.embedding.unwrap_or(d.embedding),
                epochs: self.epochs.unwrap_or(d.epochs),
                learning_rate: self.learning_rate.unwrap_or(d.learning_rate),
                temperature: self.temperature.unwrap_or(d.temperature),
                clip: self.clip.unwrap_or(d.clip),
                batch_size: d.batch_size,
                objective: self.objective.unwrap_or(d.objective),
            },
            min_propensity: self.min_propensity,
            seed: self.seed,
            bootstrap: self.bootstrap,
            folds: self.folds,
        }
    }
}

/// Runs `strategist ope learn`.
pub fn run_learn(args: &LearnArgs) -> anyhow::Result<()> {
    let result = learn_obd(&args.data, &args.campaign, &args.config(), &mut progress)
        .with_context(|| format!("offline learning on {} campaign {}", args.data.display(), args.campaign))
        .and_then(|report| {
            let text = if args.json {
                let mut s = serde_json::to_string_pretty(&report).context("serialising the report")?;
                s.push('\n');
                s
            } else {
                render_learn_table(&report)
            };
            print(&text)
        });
    finish_progress();
    result.map_err(|err| fail(err, args.json))
}

fn value_line(v: &OnPolicyValue) -> String {
    let boot = v.bootstrap_ci95.map_or_else(String::new, |ci| format!(", bootstrap {}", interval(ci)));
    let wilson = v.wilson_ci95.map_or_else(String::new, |ci| format!(", Wilson {}", interval(ci)));
    format!("{:.6} {}{}{} ({} rows, {} clicks)", v.value, interval(v.ci95), boot, wilson, v.n, v.clicks)
}

fn day_range(days: &[String]) -> String {
    match (days.first(), days.last()) {
        (Some(a), Some(b)) if a != b => format!("{a}..{b}"),
        (Some(a), _) => a.clone(),
        _ => "-".into(),
    }
}

/// The terminal table of `strategist ope learn`.
pub fn render_learn_table(r: &LearnReport) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        s,
        "Offline learning on the Open Bandit Dataset, campaign {} ({} items, {} positions)",
        r.campaign, r.n_items, r.n_positions
    );
    let how = match r.split.kind {
        super::learn::SplitKind::ByDay => "split by day",
        super::learn::SplitKind::ByTimeOrder => "too few days: split by time order",
    };
    let _ = writeln!(
        s,
        "{how}: train {} ({} rows, {} clicks), evaluate {} ({} rows, {} clicks)",
        day_range(&r.split.train.days),
        r.split.train.rows,
        r.split.train.clicks,
        day_range(&r.split.test.days),
        r.split.test.rows,
        r.split.test.clicks
    );
    let e = &r.encoding;
    let _ = writeln!(
        s,
        "context: {} features = {} user one-hot + {} ln(1 + affinity) + {} position one-hot | floor {} | seed {} | \
         {} bootstrap resamples",
        e.dim, e.user_one_hot, e.affinities, e.positions, r.config.min_propensity, r.config.seed, r.config.bootstrap
    );
    let _ = writeln!(s, "bts on-policy value, all days:      {}", value_line(&r.bts_on_policy));
    if let Some(v) = &r.bts_on_policy_heldout_days {
        let _ = writeln!(s, "bts on-policy value, held-out days: {}", value_line(v));
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<18} {:<9} {:>9}  {:<22}  {:<22}  {:<22}  {:>7}  {:<24}",
        "policy",
        "estimator",
        "value",
        "95% CI (normal)",
        "bootstrap 95% CI",
        "Wilson(ESS) 95% CI",
        "ESS",
        "minus bts (all days)"
    );
    for row in &r.table {
        let boot = row.bootstrap_ci95.map_or_else(|| "-".to_string(), interval);
        let wilson = row.wilson_ess_ci95.map_or_else(|| "-".to_string(), interval);
        let _ = writeln!(
            s,
            "{:<18} {:<9} {:>9.6}  {:<22}  {:<22}  {:<22}  {:>7.1}  {:+.6} {}",
            row.policy,
            row.estimator,
            row.value,
            interval(row.ci95),
            boot,
            wilson,
            row.ess,
            row.vs_bts,
            row.vs_bts_ci95.map_or_else(|| "n/a (few clicks)".to_string(), interval)
        );
    }
    let _ = writeln!(s);
    for p in &r.policies {
        let _ = write!(
            s,
            "{}: mean largest probability {:.3}, {} distinct top items, logged item on top in {:.1}% of rows, \
             {:.2} clicks in the effective sample (ESS × SNIPW){}",
            p.policy.key(),
            p.shape.mean_max_prob,
            p.shape.distinct_top_items,
            100.0 * p.shape.logged_is_top,
            p.report.ess * p.report.estimators.snipw.estimate,
            if p.report.ess * p.report.estimators.snipw.estimate < super::learn::MIN_EFFECTIVE_CLICKS {
                " < 5: trust only the Wilson interval"
            } else {
                ""
            }
        );
        if let Some(t) = &p.train {
            let _ = write!(
                s,
                "; training-set clipped SNIPW {:.6} → {:.6} in {} steps",
                t.snips_before, t.snips_after, t.steps
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "Each (row, position) is one decision; the learned policies are scored by their per-position \
         distributions. With no click among the rows a policy gives weight, the normal and bootstrap intervals \
         collapse to the point: read the Wilson(ESS) interval. The SNIPW row's difference with bts is Newcombe's \
         interval, the others' normal (n/a under 5 effective clicks). A difference whose interval contains 0 is not \
         evidence either way."
    );
    s
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
    if let Some(OpeCommand::Learn(learn)) = &args.command {
        return run_learn(learn);
    }
    let result = match required(&args.logged, "--logged") {
        Err(e) => Err(e.into()),
        Ok(LoggedSource::Obd(path)) => {
            progress("loading the logged data");
            load_obd(path, &ObdOptions::default())
                .with_context(|| format!("loading --logged obd:{}", path.display()))
                .and_then(|data| run_with_data(args, &data))
        }
        Ok(LoggedSource::Experiment(source)) => run_experiment(args, source),
    };
    finish_progress();
    result.map_err(|err| fail(err, args.json))
}

/// Adds the stable code to a failure (and prints it as JSON on stdout with `--json`).
fn fail(err: anyhow::Error, json: bool) -> anyhow::Error {
    let code = err.chain().find_map(|e| e.downcast_ref::<OpeError>()).map_or("ope_failed", OpeError::code);
    if json {
        let body = serde_json::json!({"error": code, "message": format!("{err:#}")});
        // The error itself is returned below; a failed write to stdout cannot add to it.
        let _ = writeln!(std::io::stdout().lock(), "{body}");
    }
    err.context(format!("strategist ope failed [{code}]"))
}

/// A flag clap requires without a subcommand (checked again for callers that build `OpeArgs`).
fn required<'a, T>(value: &'a Option<T>, flag: &str) -> Result<&'a T, OpeError> {
    value.as_ref().ok_or_else(|| OpeError::InvalidConfig { message: format!("{flag} is required") })
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
        TargetSpec::Snapshot(policy_version) => snapshot_policy(db, log, *policy_version),
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
    let target = experiment_target(required(&args.target, "--target")?, db, log, args.seed)?;
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
    let target = required(&args.target, "--target")?.build(data, args.seed)?;
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
        assert_eq!(a.logged, Some(LoggedSource::Obd("x.csv".into())));
        assert_eq!(a.target, Some(TargetSpec::Uniform));
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
        assert_eq!(a.logged, Some(LoggedSource::Experiment(ExperimentRef { key: "checkout".into(), version: None })));
        assert_eq!(a.target, Some(TargetSpec::Fixed(vec![("1".into(), 2.0), ("3".into(), 1.0)])));
        assert_eq!((a.seed, a.bootstrap, a.folds, a.json), (9, 50, 3, true));
        assert!(parse(&["--logged", "s3:x", "--target", "uniform"]).is_err());
        assert!(parse(&["--logged", "obd:x.csv", "--target", "greedy"]).is_err());
    }

    #[test]
    fn experiment_sources_and_store_targets_parse() {
        let a =
            parse(&["--logged", "experiment:checkout@3", "--target", "snapshot:2", "--database-url", "x.db"]).unwrap();
        assert_eq!(
            a.logged,
            Some(LoggedSource::Experiment(ExperimentRef { key: "checkout".into(), version: Some(3) }))
        );
        assert_eq!(a.target, Some(TargetSpec::Snapshot(Some(2))));
        assert_eq!(a.database_url.as_deref(), Some("x.db"));
        let a = parse(&["--logged", "experiment:checkout", "--target", "arm:b"]).unwrap();
        assert_eq!(a.logged, Some(LoggedSource::Experiment(ExperimentRef { key: "checkout".into(), version: None })));
        assert_eq!(a.target, Some(TargetSpec::Arm("b".into())));
        assert_eq!(
            parse(&["--logged", "experiment:x", "--target", "snapshot"]).unwrap().target,
            Some(TargetSpec::Snapshot(None))
        );
        for bad in ["experiment:", "experiment:x@", "experiment:x@0", "experiment:x@v2", "experiment:@2"] {
            assert!(parse(&["--logged", bad, "--target", "uniform"]).is_err(), "{bad}");
        }
        for bad in ["snapshot:", "snapshot:0", "snapshot:latest", "arm:"] {
            assert!(parse(&["--logged", "experiment:x", "--target", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn learn_is_a_subcommand_with_its_own_arguments_and_the_flat_form_still_needs_both_flags() {
        let a =
            parse(&["learn", "--data", "obd", "--policies", "lin_ucb,neural_pg", "--epochs", "3", "--json"]).unwrap();
        let Some(OpeCommand::Learn(l)) = &a.command else { panic!("no learn subcommand: {a:?}") };
        assert_eq!(l.data, PathBuf::from("obd"));
        assert_eq!(l.campaign, "all");
        assert_eq!(l.policies, vec![LearnedKind::LinUcb, LearnedKind::NeuralPg]);
        assert!(l.json);
        let c = l.config();
        assert_eq!(c.neural.epochs, 3);
        assert_eq!(c.neural.hidden, NeuralSettings::default().hidden);
        assert_eq!((c.holdout_days, c.min_propensity, c.bootstrap), (2, 0.0, 1000));
        assert_eq!(
            parse(&["learn", "--data", "d"]).unwrap().command.map(|OpeCommand::Learn(l)| l.policies.len()),
            Some(3)
        );
        assert!(parse(&["learn", "--data", "d", "--policies", "greedy"]).is_err());
        let objective = |a: OpeArgs| a.command.map(|OpeCommand::Learn(l)| l.config().neural.objective);
        assert_eq!(objective(parse(&["learn", "--data", "d"]).unwrap()), Some(crate::policy::neural::Objective::Snipw));
        assert_eq!(
            objective(parse(&["learn", "--data", "d", "--objective", "dr"]).unwrap()),
            Some(crate::policy::neural::Objective::Dr)
        );
        assert!(parse(&["learn", "--data", "d", "--objective", "ips"]).is_err());
        assert!(parse(&["learn", "--data", "d", "--campaign", "../x"]).is_err());
        assert!(parse(&["learn"]).is_err(), "--data is required");
        assert!(parse(&["--logged", "obd:x.csv"]).is_err(), "--target is required without a subcommand");
        assert!(parse(&["--target", "uniform"]).is_err(), "--logged is required without a subcommand");
        assert!(parse(&["--logged", "obd:x.csv", "--target", "uniform", "learn", "--data", "d"]).is_err());
    }

    #[test]
    fn learn_reports_a_missing_data_folder_with_a_stable_code() {
        let a = parse(&["learn", "--data", "/nonexistent/obd", "--bootstrap", "0"]).unwrap();
        let err = run(&a).unwrap_err();
        assert!(err.to_string().contains("[ope_io]"), "{err:#}");
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
