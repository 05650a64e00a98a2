//! `strategist simulate aa|power|drift|srm`: runs one trustworthiness
//! simulation of the analysis engine (see [`crate::analysis::simulate`]) and
//! prints its figures, as one JSON object with `--json`. On a terminal, a progress bar on
//! stderr counts the finished replications.
//! `strategist simulate stream FILE.csv …` replays a contextual-bandit
//! stream instead (see [`super::stream`]).

use anyhow::Context as _;

use super::progress::Progress;
use crate::analysis::simulate::{self, AaConfig, DriftConfig, PowerConfig, SrmConfig};

/// Which simulation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Two identical arms analysed every 5 minutes for two weeks: false promotions vs naive peeking.
    Aa,
    /// A true +5% lift on 3%: share promoted and median exposures vs the fixed-horizon sample.
    Power,
    /// Drifting base rate under Thompson sampling: naive pooled vs period-stratified estimate.
    Drift,
    /// A logging bug dropping 3% of one arm's exposures: flagged and never promoted.
    Srm,
}

/// Simulations that take their own arguments.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SimulateCommand {
    /// Replay a contextual-bandit stream (CSV) with a policy learning online: regret and speed.
    Stream(super::stream::StreamArgs),
}

#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SimulateArgs {
    /// Scenario to run.
    #[arg(value_enum)]
    pub scenario: Option<Scenario>,
    #[command(subcommand)]
    pub command: Option<SimulateCommand>,
    /// Replications (default: 500 for aa, 200 for power, drift and srm).
    #[arg(long)]
    pub replications: Option<usize>,
    /// Seed; the same seed gives the same figures.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads (speed only: results do not depend on it).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Simulated days (default: the scenario's, 14 for aa and srm, 28 for power, 7 for drift).
    #[arg(long)]
    pub days: Option<f64>,
    /// Mean exposures per day and arm (default: the scenario's).
    #[arg(long)]
    pub exposures_per_day: Option<f64>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn apply(traffic: &mut simulate::Traffic, args: &SimulateArgs) {
    if let Some(d) = args.days {
        traffic.days = d;
    }
    if let Some(e) = args.exposures_per_day {
        traffic.exposures_per_day_per_arm = e;
    }
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

fn opt(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.0}")).unwrap_or_else(|| "n/a".into())
}

pub fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let scenario = match (&args.command, args.scenario) {
        (Some(SimulateCommand::Stream(stream)), _) => return super::stream::run(stream),
        (None, Some(scenario)) => scenario,
        (None, None) => anyhow::bail!("name a scenario (aa, power, drift, srm) or `stream FILE.csv`"),
    };
    if args.replications == Some(0) {
        anyhow::bail!("--replications must be at least 1");
    }
    let threads = args.threads.max(1);
    let (json, text) = match scenario {
        Scenario::Aa => {
            let mut cfg = AaConfig::new(args.replications.unwrap_or(500), args.seed);
            cfg.run.threads = threads;
            apply(&mut cfg.traffic, args);
            let bar = Progress::new(cfg.run.replications as u64, "simulate aa");
            let r = simulate::aa_with_progress(&cfg, &bar.callback()).context("A/A simulation")?;
            bar.finish();
            let text = format!(
                "A/A, {} replications x {} looks: engine false promotions {} (± {}, alpha {}); \
                 naive fixed-horizon peeking {}; fixed horizon at the last look only {}",
                cfg.run.replications,
                r.looks_per_replication,
                pct(r.false_promotion_rate),
                pct(r.false_promotion_rate_se),
                r.alpha,
                pct(r.naive_peeking_false_promotion_rate),
                pct(r.fixed_horizon_final_look_rate)
            );
            (serde_json::to_string_pretty(&r)?, text)
        }
        Scenario::Power => {
            let mut cfg = PowerConfig::new(args.replications.unwrap_or(200), args.seed);
            cfg.run.threads = threads;
            apply(&mut cfg.traffic, args);
            let bar = Progress::new(cfg.run.replications as u64, "simulate power");
            let r = simulate::power_with_progress(&cfg, &bar.callback()).context("power simulation")?;
            bar.finish();
            let text = format!(
                "power, {} replications: promoted {} within {} days; median exposures per arm at promotion {} \
                 (fixed-horizon n per arm {} for alpha {} and power {})",
                cfg.run.replications,
                pct(r.promoted_rate),
                cfg.traffic.days,
                opt(r.median_exposures_per_arm_at_promotion),
                r.fixed_horizon_n_per_arm,
                r.alpha,
                cfg.power
            );
            (serde_json::to_string_pretty(&r)?, text)
        }
        Scenario::Drift => {
            let mut cfg = DriftConfig::new(args.replications.unwrap_or(200), args.seed);
            cfg.run.threads = threads;
            apply(&mut cfg.traffic, args);
            let bar = Progress::new(cfg.run.replications as u64, "simulate drift");
            let r = simulate::drift_with_progress(&cfg, &bar.callback()).context("drift simulation")?;
            bar.finish();
            let text = format!(
                "drift, {} replications: truth {:+.5}; naive pooled {:+.5} (bias {:+.5}, z {:.1}); \
                 stratified {:+.5} (bias {:+.5}, z {:.1})",
                cfg.run.replications,
                r.truth,
                r.naive_pooled.mean,
                r.naive_pooled.bias,
                r.naive_pooled.bias_z,
                r.stratified.mean,
                r.stratified.bias,
                r.stratified.bias_z
            );
            (serde_json::to_string_pretty(&r)?, text)
        }
        Scenario::Srm => {
            let mut cfg = SrmConfig::new(args.replications.unwrap_or(200), args.seed);
            cfg.run.threads = threads;
            apply(&mut cfg.traffic, args);
            let bar = Progress::new(cfg.run.replications as u64, "simulate srm");
            let r = simulate::srm_with_progress(&cfg, &bar.callback()).context("SRM simulation")?;
            bar.finish();
            let text = format!(
                "SRM, {} replications: flagged {} (median after {} days); promoted {} ({} after the first flag); \
                 would have promoted without the SRM check {}",
                cfg.run.replications,
                pct(r.ever_flagged_rate),
                r.median_days_to_first_flag.map(|d| format!("{d:.1}")).unwrap_or_else(|| "n/a".into()),
                pct(r.promoted_rate),
                pct(r.promoted_after_first_flag_rate),
                pct(r.would_promote_without_srm_rate)
            );
            (serde_json::to_string_pretty(&r)?, text)
        }
    };
    if args.json {
        println!("{json}");
    } else {
        println!("{text}");
    }
    Ok(())
}
