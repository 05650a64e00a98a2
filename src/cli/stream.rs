//! `strategist simulate stream FILE.csv --policy KIND [--param k=v …]`:
//! replays a simulated contextual-bandit stream (the format of
//! `../shared/reference/sim_stream_seed777.csv`) with one of our policies
//! learning online, and prints average reward, cumulative expected regret,
//! the regret of the last 10% of rounds and rounds per second.
//!
//! Replay rule (the reference's README): at round `t` the policy gives a PMF
//! over the arms for context `x_t`; the chosen arm is the first whose
//! cumulative probability exceeds `u_action` ([`explore::draw`]); the reward
//! is 1 if `u_reward < p[arm]`, else 0; the regret is
//! `p[best_arm] - p[arm]` (expected over the reward draw, so "cumulative
//! expected regret").
//!
//! Learning: contextual kinds (`lin_ts`, `lin_ucb`) observe `(x, arm,
//! reward)` after every round by default (`--param batch=N` holds
//! observations back and applies them every `N` rounds, like a learner that
//! runs periodically). Context-free kinds (`uniform`, `epsilon_greedy`,
//! `thompson_beta`) get a new snapshot from the cumulative per-arm feedback
//! through [`policy::update_state`] every `batch` rounds — the service's
//! learner path. Every per-round seed is a hash of `(--seed, round)`
//! ([`explore::draw_seed`]), never a counter.
//!
//! `neural_pg` goes through [`neural::replay_stream`], as the service's learner
//! would run it: the network is fixed between retrains (each segment of rounds
//! is scored in one batched forward pass on `--device`), each round logs its
//! exact propensity, and the network is retrained, warm-started, on the whole
//! log after `first_retrain` rounds and then each time the log has grown by
//! `growth` (defaults 500 and 1.5). Its randomness is the network's `seed`
//! parameter (initialisation, shuffles) and the stream's own uniforms.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _};
use serde::Serialize;
use serde_json::Value;

use super::progress::Progress;
use crate::policy::{self, explore, linear, neural, ArmFeedback, PolicySpec};

/// Policies the stream can replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamPolicyKind {
    /// Linear Thompson sampling (`lin_ts`).
    #[value(name = "lin_ts")]
    LinTs,
    /// LinUCB (`lin_ucb`).
    #[value(name = "lin_ucb")]
    LinUcb,
    /// Context-free epsilon-greedy on the arms' mean rewards (`epsilon_greedy`, default epsilon 0.05).
    #[value(name = "epsilon_greedy")]
    EpsilonGreedy,
    /// Context-free Beta-Bernoulli Thompson sampling (`thompson_beta`).
    #[value(name = "thompson_beta")]
    ThompsonBeta,
    /// Uniform over the arms (`fixed` with equal weights).
    #[value(name = "uniform")]
    Uniform,
    /// The neural softmax policy (`neural_pg`), retrained off-policy on a growing schedule.
    #[value(name = "neural_pg")]
    NeuralPg,
}

impl StreamPolicyKind {
    fn name(self) -> &'static str {
        match self {
            StreamPolicyKind::LinTs => "lin_ts",
            StreamPolicyKind::LinUcb => "lin_ucb",
            StreamPolicyKind::EpsilonGreedy => "epsilon_greedy",
            StreamPolicyKind::ThompsonBeta => "thompson_beta",
            StreamPolicyKind::Uniform => "uniform",
            StreamPolicyKind::NeuralPg => "neural_pg",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct StreamArgs {
    /// The stream: a CSV with columns t, x0.., p0.., best_arm, u_action, u_reward.
    pub file: PathBuf,
    /// The policy to replay.
    #[arg(long, value_enum)]
    pub policy: StreamPolicyKind,
    /// A policy parameter as in experiment definitions (e.g. `v=0.2`, `lambda=1`, `draws=64`,
    /// `alpha=0.5`, `epsilon=0.05`; for neural_pg `hidden=16`, `epochs=5`, `learning_rate=0.01`,
    /// …), or `min_propensity=F` (floor, default 0; neural_pg 0.01) or `batch=N` (apply
    /// feedback every N rounds, default 1). neural_pg retrains after `first_retrain=N` rounds
    /// (default 500) and then each time the log grew by `growth=G` (default 1.5). Repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Seed of the policy's own randomness (the Thompson draws); the same seed gives the same figures.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Replay only the first N rounds.
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Where neural_pg trains and scores: `auto`, `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// One round of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    pub x: Vec<f64>,
    /// True click probability of each arm.
    pub p: Vec<f64>,
    pub best_arm: usize,
    pub u_action: f64,
    pub u_reward: f64,
}

/// A parsed stream: `features` context columns and `arms` arms per round.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub features: usize,
    pub arms: usize,
    pub rounds: Vec<Round>,
}

/// Parses the stream CSV (header first; columns found by name, any order;
/// `x0..x{F-1}` and `p0..p{K-1}` must be contiguous from 0). Checks that
/// features are finite, `p` in [0, 1], `best_arm < K` and the uniforms in [0, 1).
pub fn parse_stream(text: &str) -> anyhow::Result<Stream> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        bail!("the stream is empty (expected a header line)");
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| names.iter().position(|n| *n == name);
    let series = |prefix: &str| -> Vec<usize> { (0..).map_while(|i| col(&format!("{prefix}{i}"))).collect() };
    let xs = series("x");
    let ps = series("p");
    if xs.is_empty() || ps.is_empty() {
        bail!("the header must name context columns x0, x1, … and probability columns p0, p1, …");
    }
    let named = |name: &str| col(name).with_context(|| format!("the header has no `{name}` column"));
    let (best, ua, ur) = (named("best_arm")?, named("u_action")?, named("u_reward")?);
    let mut rounds = Vec::new();
    for (i, line) in lines {
        let line_no = i + 1;
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != names.len() {
            bail!("line {line_no}: {} fields, the header has {}", cells.len(), names.len());
        }
        let num = |c: usize| -> anyhow::Result<f64> {
            let v: f64 = cells[c].parse().with_context(|| format!("line {line_no}, column `{}`", names[c]))?;
            if !v.is_finite() {
                bail!("line {line_no}, column `{}`: {v} is not finite", names[c]);
            }
            Ok(v)
        };
        let x = xs.iter().map(|&c| num(c)).collect::<anyhow::Result<Vec<_>>>()?;
        let p = ps.iter().map(|&c| num(c)).collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(v) = p.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            bail!("line {line_no}: probability {v} outside [0, 1]");
        }
        let best_arm: usize =
            cells[best].parse().with_context(|| format!("line {line_no}: best_arm must be an arm index"))?;
        if best_arm >= p.len() {
            bail!("line {line_no}: best_arm {best_arm} but there are {} arms", p.len());
        }
        let (u_action, u_reward) = (num(ua)?, num(ur)?);
        if !(0.0..1.0).contains(&u_action) || !(0.0..1.0).contains(&u_reward) {
            bail!("line {line_no}: u_action and u_reward must lie in [0, 1)");
        }
        rounds.push(Round { x, p, best_arm, u_action, u_reward });
    }
    if rounds.is_empty() {
        bail!("the stream has a header but no rounds");
    }
    Ok(Stream { features: xs.len(), arms: ps.len(), rounds })
}

/// A policy being replayed, with its learning state.
enum Learner {
    Linear {
        model: linear::LinearState,
        exploration: linear::Exploration,
        /// Observations not applied yet (`batch > 1`).
        pending: Vec<(usize, usize, f64)>,
    },
    ContextFree {
        spec: PolicySpec,
        keys: Vec<String>,
        feedback: Vec<ArmFeedback>,
        pmf: Vec<f64>,
    },
    /// `neural_pg`, replayed by [`neural::replay_stream`] (segments scored in batches,
    /// retrained at the schedule's points).
    Neural {
        params: neural::NeuralParams,
        config: neural::ReplayConfig,
        device: candle_core::Device,
    },
}

/// Parameters the replay itself reads (not the policy).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayOptions {
    /// Exploration floor mixed into the PMF.
    pub min_propensity: f64,
    /// Feedback is applied every `batch` rounds.
    pub batch: usize,
    pub seed: u64,
}

/// Figures of one replay.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub policy: String,
    /// The policy's parameters as given (`--param`), with the floor and batch.
    pub params: BTreeMap<String, Value>,
    pub seed: u64,
    pub rounds: usize,
    pub arms: usize,
    pub features: usize,
    /// Mean realised reward.
    pub avg_reward: f64,
    /// Sum over rounds of `p[best_arm] - p[arm]`.
    pub cumulative_regret: f64,
    /// The same sum over the last 10% of rounds (rounded up).
    pub regret_last_10pct: f64,
    /// `regret_last_10pct` per round of that window.
    pub regret_last_10pct_per_round: f64,
    /// Mean of `p[best_arm]`: what always choosing the best arm earns on average.
    pub oracle_avg_reward: f64,
    /// Cumulative expected regret of the uniform policy, `sum (p[best] - mean p)`.
    pub uniform_cumulative_regret: f64,
    /// Rounds replayed per second of wall time (PMF, draw and update — for neural_pg
    /// batched scoring and every retrain; parsing excluded).
    pub rounds_per_second: f64,
    /// Retrains done (`neural_pg` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrains: Option<usize>,
    /// The threads candle's CPU matrix products use (`neural_pg` only): `RAYON_NUM_THREADS`,
    /// which `main` fixes at start (`scoring::settle_cpu_threads`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_threads: Option<usize>,
}

/// Parses `k=v` pairs; values are read as JSON (numbers, booleans) or else kept as strings.
pub fn parse_params(pairs: &[String]) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--param `{pair}`: expected KEY=VALUE");
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            bail!("--param `{pair}`: empty key");
        }
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        if out.insert(k.to_string(), value).is_some() {
            bail!("--param `{k}` given twice");
        }
    }
    Ok(out)
}

/// Splits the replay's own parameters (`min_propensity`, `batch`) from the
/// policy's and builds the policy: the spec goes through the same serde
/// parsing and validation as an experiment definition.
fn build(
    kind: StreamPolicyKind,
    params: &BTreeMap<String, Value>,
    stream: &Stream,
    seed: u64,
    device: candle_core::Device,
) -> anyhow::Result<(Learner, ReplayOptions)> {
    let mut spec_fields = serde_json::Map::new();
    let is_neural = kind == StreamPolicyKind::NeuralPg;
    let mut options = ReplayOptions { min_propensity: if is_neural { 0.01 } else { 0.0 }, batch: 1, seed };
    let mut schedule = neural::ReplayConfig::default();
    for (k, v) in params {
        match k.as_str() {
            "first_retrain" | "growth" if !is_neural => bail!("--param {k}: only neural_pg retrains on a schedule"),
            "first_retrain" => {
                schedule.first_retrain = v
                    .as_u64()
                    .filter(|b| *b >= 1)
                    .and_then(|b| usize::try_from(b).ok())
                    .context("first_retrain must be an integer >= 1")?;
            }
            "growth" => {
                schedule.growth =
                    v.as_f64().filter(|g| g.is_finite() && *g > 1.0).context("growth must be a number > 1")?;
            }
            "batch" | "retrain_every" | "min_new_rows" | "max_train_rows" if is_neural => {
                bail!("--param {k}: the replay retrains neural_pg at first_retrain, then each time the log grew by growth")
            }
            "min_propensity" => {
                options.min_propensity = v.as_f64().context("min_propensity must be a number")?;
            }
            "batch" => {
                options.batch = v
                    .as_u64()
                    .filter(|b| *b >= 1)
                    .and_then(|b| usize::try_from(b).ok())
                    .context("batch must be an integer >= 1")?;
            }
            "kind" | "features" => bail!("--param {k}: set by --policy and by the stream's columns"),
            _ => {
                spec_fields.insert(k.clone(), v.clone());
            }
        }
    }
    if !(0.0..=1.0 / stream.arms as f64).contains(&options.min_propensity) {
        bail!("min_propensity must lie in [0, 1/arms = {}], got {}", 1.0 / stream.arms as f64, options.min_propensity);
    }
    let kind_name = match kind {
        StreamPolicyKind::Uniform => {
            if !spec_fields.is_empty() {
                bail!("uniform takes no policy parameters (only min_propensity, batch)");
            }
            "fixed"
        }
        StreamPolicyKind::EpsilonGreedy => {
            spec_fields.entry("epsilon").or_insert(Value::from(0.05));
            "epsilon_greedy"
        }
        StreamPolicyKind::LinTs | StreamPolicyKind::LinUcb | StreamPolicyKind::NeuralPg => {
            spec_fields.insert("features".into(), Value::from(stream.features));
            kind.name()
        }
        StreamPolicyKind::ThompsonBeta => "thompson_beta",
    };
    spec_fields.insert("kind".into(), Value::from(kind_name));
    let spec: PolicySpec =
        serde_json::from_value(Value::Object(spec_fields)).with_context(|| format!("policy `{}`", kind.name()))?;
    let keys: Vec<String> = (0..stream.arms).map(|i| format!("arm{i}")).collect();
    spec.validate(&keys)?;
    if let Some(params) = spec.neural_params() {
        schedule.min_propensity = options.min_propensity;
        return Ok((Learner::Neural { params, config: schedule, device }, options));
    }
    let learner = match spec.linear_exploration() {
        Some(exploration) => Learner::Linear {
            model: policy::initial_linear_state(&spec, &keys)?,
            exploration,
            pending: Vec::with_capacity(options.batch),
        },
        None => {
            let feedback = vec![ArmFeedback::default(); stream.arms];
            let pmf = policy::update_state(&spec, &keys, &feedback, seed)?.pmf;
            Learner::ContextFree { spec, keys, feedback, pmf }
        }
    };
    Ok((learner, options))
}

/// What [`replay`] measures (timing is the caller's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayOutcome {
    pub avg_reward: f64,
    pub cumulative_regret: f64,
    pub regret_last_10pct: f64,
    /// Rounds in the last-10% window.
    pub last_window: usize,
    /// Retrains done (`neural_pg` only).
    pub retrains: Option<usize>,
}

/// `neural_pg`: [`neural::replay_stream`] over the stream's rounds (no seed of its own:
/// the network's `seed` parameter drives initialisation and shuffles; the draws are the
/// stream's `u_action`). Its last-10% window is the last `floor(n / 10)` rounds.
fn replay_neural(
    stream: &Stream,
    params: &neural::NeuralParams,
    config: &neural::ReplayConfig,
    device: &candle_core::Device,
    progress: &dyn Fn(u64),
) -> anyhow::Result<ReplayOutcome> {
    let rounds: Vec<neural::StreamRound> = stream
        .rounds
        .iter()
        .map(|r| neural::StreamRound {
            context: r.x.clone(),
            probs: r.p.clone(),
            best_arm: r.best_arm,
            u_action: r.u_action,
            u_reward: r.u_reward,
        })
        .collect();
    let out = neural::replay_stream(params.clone(), &rounds, config, device)?;
    progress(rounds.len() as u64);
    Ok(ReplayOutcome {
        avg_reward: out.avg_reward,
        cumulative_regret: out.cumulative_regret,
        regret_last_10pct: out.regret_last_10pct,
        last_window: (rounds.len() / 10).max(1),
        retrains: Some(out.retrains),
    })
}

/// Replays `stream` (see the module docs); `progress` is called with the
/// number of rounds done since the last call.
fn replay(
    stream: &Stream,
    learner: &mut Learner,
    options: ReplayOptions,
    progress: &dyn Fn(u64),
) -> anyhow::Result<ReplayOutcome> {
    if let Learner::Neural { params, config, device } = learner {
        return replay_neural(stream, params, config, device, progress);
    }
    let n = stream.rounds.len();
    let last_window = n.div_ceil(10);
    let eligible = vec![true; stream.arms];
    let salt = format!("simulate-stream:{}", options.seed);
    let (mut reward_sum, mut regret, mut regret_last) = (0.0, 0.0, 0.0);
    const PROGRESS_EVERY: usize = 1_024;
    for (t, round) in stream.rounds.iter().enumerate() {
        let seed = explore::draw_seed(&salt, "round", &t.to_string());
        let pmf = match learner {
            Learner::Linear { model, exploration, .. } => {
                model.pmf(*exploration, &round.x, &eligible, options.min_propensity, seed)?
            }
            Learner::ContextFree { pmf, .. } => explore::restrict_and_floor(pmf, &eligible, options.min_propensity)?,
            Learner::Neural { .. } => bail!("neural_pg is replayed by replay_neural"),
        };
        let arm = explore::draw(&pmf, round.u_action);
        let reward = if round.u_reward < round.p[arm] { 1.0 } else { 0.0 };
        let r = round.p[round.best_arm] - round.p[arm];
        reward_sum += reward;
        regret += r;
        if t >= n - last_window {
            regret_last += r;
        }
        let apply = (t + 1) % options.batch == 0;
        match learner {
            Learner::Linear { model, pending, .. } => {
                pending.push((t, arm, reward));
                if apply {
                    for (s, a, y) in pending.drain(..) {
                        model.observe(a, &stream.rounds[s].x, y)?;
                    }
                }
            }
            Learner::ContextFree { spec, keys, feedback, pmf } => {
                let fb = &mut feedback[arm];
                fb.n += 1;
                fb.sum += reward;
                fb.sum_sq += reward * reward;
                if apply {
                    let seed = explore::draw_seed(&salt, "snapshot", &t.to_string());
                    *pmf = policy::update_state(spec, keys, feedback, seed)?.pmf;
                }
            }
            Learner::Neural { .. } => {}
        }
        if (t + 1) % PROGRESS_EVERY == 0 {
            progress(PROGRESS_EVERY as u64);
        }
    }
    progress((n % PROGRESS_EVERY) as u64);
    Ok(ReplayOutcome {
        avg_reward: reward_sum / n as f64,
        cumulative_regret: regret,
        regret_last_10pct: regret_last,
        last_window,
        retrains: None,
    })
}

/// Reads `file`, replays the first `rounds` rounds (all by default) and measures the
/// speed; `neural_pg` trains and scores on the CPU (see [`simulate_on`]).
pub fn simulate(
    file: &Path,
    kind: StreamPolicyKind,
    params: &BTreeMap<String, Value>,
    seed: u64,
    rounds: Option<usize>,
    progress: &Progress,
) -> anyhow::Result<StreamReport> {
    simulate_on(file, kind, params, seed, rounds, progress, candle_core::Device::Cpu)
}

/// [`simulate`] with `neural_pg` on `device`.
pub fn simulate_on(
    file: &Path,
    kind: StreamPolicyKind,
    params: &BTreeMap<String, Value>,
    seed: u64,
    rounds: Option<usize>,
    progress: &Progress,
    device: candle_core::Device,
) -> anyhow::Result<StreamReport> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut stream = parse_stream(&text).with_context(|| format!("parsing {}", file.display()))?;
    if let Some(r) = rounds {
        if r == 0 {
            bail!("--rounds must be at least 1");
        }
        stream.rounds.truncate(r);
    }
    let (mut learner, options) = build(kind, params, &stream, seed, device)?;
    progress.set_length(stream.rounds.len() as u64);
    let start = Instant::now();
    let out = replay(&stream, &mut learner, options, &progress.callback())?;
    let elapsed = start.elapsed().as_secs_f64();
    progress.finish();
    let n = stream.rounds.len();
    let oracle = stream.rounds.iter().map(|r| r.p[r.best_arm]).sum::<f64>() / n as f64;
    let uniform_regret: f64 =
        stream.rounds.iter().map(|r| r.p[r.best_arm] - r.p.iter().sum::<f64>() / r.p.len() as f64).sum();
    let mut shown = params.clone();
    shown.insert("min_propensity".into(), Value::from(options.min_propensity));
    let cpu_threads = match &learner {
        Learner::Neural { config, .. } => {
            shown.insert("first_retrain".into(), Value::from(config.first_retrain));
            shown.insert("growth".into(), Value::from(config.growth));
            Some(crate::scoring::cpu_threads())
        }
        _ => {
            shown.insert("batch".into(), Value::from(options.batch));
            None
        }
    };
    Ok(StreamReport {
        policy: kind.name().into(),
        params: shown,
        seed,
        rounds: n,
        arms: stream.arms,
        features: stream.features,
        avg_reward: out.avg_reward,
        cumulative_regret: out.cumulative_regret,
        regret_last_10pct: out.regret_last_10pct,
        regret_last_10pct_per_round: out.regret_last_10pct / out.last_window as f64,
        oracle_avg_reward: oracle,
        uniform_cumulative_regret: uniform_regret,
        rounds_per_second: if elapsed > 0.0 { n as f64 / elapsed } else { f64::INFINITY },
        retrains: out.retrains,
        cpu_threads,
    })
}

pub fn run(args: &StreamArgs) -> anyhow::Result<()> {
    let params = parse_params(&args.params)?;
    let device = args
        .device
        .parse::<crate::scoring::DeviceSpec>()
        .and_then(|d| d.resolve())
        .map_err(|e| anyhow::anyhow!("--device {}: {e}", args.device))?;
    let progress = Progress::new(0, "simulate stream");
    let r = simulate_on(&args.file, args.policy, &params, args.seed, args.rounds, &progress, device)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{} on {} rounds ({} arms, {} features), seed {}: average reward {:.4} (best arm always: {:.4}); \
             cumulative expected regret {:.1} ({:.4} per round; uniform: {:.1}); last 10% of rounds {:.1} \
             ({:.4} per round); {:.0} rounds/s{}",
            r.policy,
            r.rounds,
            r.arms,
            r.features,
            r.seed,
            r.avg_reward,
            r.oracle_avg_reward,
            r.cumulative_regret,
            r.cumulative_regret / r.rounds as f64,
            r.uniform_cumulative_regret,
            r.regret_last_10pct,
            r.regret_last_10pct_per_round,
            r.rounds_per_second,
            r.retrains.map(|n| format!("; {n} retrains")).unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/sim_stream_seed777.csv")
    }

    fn params(pairs: &[&str]) -> BTreeMap<String, Value> {
        parse_params(&pairs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn tiny() -> Stream {
        // Two arms, one feature; arm 0 pays when x > 0, arm 1 otherwise.
        let mut text = String::from("t,x0,p0,p1,best_arm,u_action,u_reward\n");
        for t in 0..400 {
            let x = if t % 2 == 0 { 1.0 } else { -1.0 };
            let (p0, p1, best) = if x > 0.0 { (0.9, 0.1, 0) } else { (0.1, 0.9, 1) };
            let u = ((t * 7919) % 1000) as f64 / 1000.0;
            let v = ((t * 104_729) % 997) as f64 / 997.0;
            text.push_str(&format!("{t},{x},{p0},{p1},{best},{u},{v}\n"));
        }
        parse_stream(&text).unwrap()
    }

    #[test]
    fn parse_reads_the_columns_and_rejects_bad_rows() {
        let s = tiny();
        assert_eq!((s.features, s.arms, s.rounds.len()), (1, 2, 400));
        assert_eq!(s.rounds[1].x, vec![-1.0]);
        assert_eq!(s.rounds[1].best_arm, 1);
        let head = "t,x0,p0,p1,best_arm,u_action,u_reward\n";
        for (row, what) in [
            ("0,1,0.5,0.5,2,0.1,0.1", "best_arm 2"),
            ("0,1,1.5,0.5,0,0.1,0.1", "outside [0, 1]"),
            ("0,NaN,0.5,0.5,0,0.1,0.1", "not finite"),
            ("0,1,0.5,0.5,0,1.0,0.1", "u_action"),
            ("0,1,0.5,0.5,0,0.1", "fields"),
            ("0,abc,0.5,0.5,0,0.1,0.1", "column `x0`"),
        ] {
            let err = format!("{:#}", parse_stream(&format!("{head}{row}\n")).unwrap_err());
            assert!(err.contains(what), "{row}: {err}");
        }
        assert!(parse_stream("").is_err());
        assert!(parse_stream(head).is_err());
        assert!(parse_stream("t,a,b\n1,2,3\n").is_err());
    }

    #[test]
    fn params_are_typed_and_policy_parameters_are_validated() {
        let p = params(&["v=0.3", "intercept=false", "name=abc"]);
        assert_eq!(p["v"], Value::from(0.3));
        assert_eq!(p["intercept"], Value::Bool(false));
        assert_eq!(p["name"], Value::from("abc"));
        assert!(parse_params(&["v".into()]).is_err());
        assert!(parse_params(&["v=1".into(), "v=2".into()]).is_err());
        let s = tiny();
        let err = |kind, pairs: &[&str]| {
            format!("{:#}", build(kind, &params(pairs), &s, 1, candle_core::Device::Cpu).err().unwrap())
        };
        assert!(err(StreamPolicyKind::LinTs, &["v=-1"]).contains("`v`"));
        assert!(err(StreamPolicyKind::LinTs, &["alpha=1"]).contains("unknown field `alpha`"));
        assert!(err(StreamPolicyKind::LinUcb, &["features=3"]).contains("features"));
        assert!(err(StreamPolicyKind::LinUcb, &["batch=0"]).contains("batch"));
        assert!(err(StreamPolicyKind::Uniform, &["min_propensity=0.6"]).contains("min_propensity"));
        assert!(err(StreamPolicyKind::Uniform, &["epsilon=0.1"]).contains("no policy parameters"));
    }

    #[test]
    fn linear_policies_learn_the_context_and_uniform_does_not() {
        let s = tiny();
        let run = |kind, pairs: &[&str]| {
            let (mut learner, options) = build(kind, &params(pairs), &s, 3, candle_core::Device::Cpu).unwrap();
            replay(&s, &mut learner, options, &|_| {}).unwrap()
        };
        let uniform = run(StreamPolicyKind::Uniform, &[]);
        // Uniform regret is 0.4 per round exactly in expectation.
        assert!((uniform.cumulative_regret / 400.0 - 0.4).abs() < 0.1, "{uniform:?}");
        for (kind, pairs) in
            [(StreamPolicyKind::LinTs, &["v=0.2"][..]), (StreamPolicyKind::LinUcb, &["alpha=0.5", "batch=10"][..])]
        {
            let out = run(kind, pairs);
            assert!(out.cumulative_regret < 0.2 * uniform.cumulative_regret, "{kind:?}: {out:?} vs {uniform:?}");
            assert_eq!(out.last_window, 40);
            assert!(out.regret_last_10pct < 2.0, "{kind:?}: {out:?}");
        }
        // The context-free epsilon-greedy cannot beat 0.4 per round by much here.
        let eg = run(StreamPolicyKind::EpsilonGreedy, &[]);
        assert!(eg.cumulative_regret > 100.0, "{eg:?}");
        // Same seed, same figures.
        assert_eq!(run(StreamPolicyKind::LinTs, &["v=0.2"]), run(StreamPolicyKind::LinTs, &["v=0.2"]));
    }

    #[test]
    fn neural_pg_replays_with_scheduled_retrains_and_checks_its_parameters() {
        let s = tiny();
        let run = |kind, pairs: &[&str]| {
            let (mut learner, options) = build(kind, &params(pairs), &s, 3, candle_core::Device::Cpu).unwrap();
            replay(&s, &mut learner, options, &|_| {}).unwrap()
        };
        let uniform = run(StreamPolicyKind::Uniform, &[]);
        let pairs = ["hidden=8", "embedding=4", "epochs=10", "learning_rate=0.05", "first_retrain=50", "growth=1.5"];
        let out = run(StreamPolicyKind::NeuralPg, &pairs);
        // Retrains at 50, 75, 113, 170, 255 and 383 rounds.
        assert_eq!(out.retrains, Some(6), "{out:?}");
        assert_eq!(out.last_window, 40);
        assert!(out.cumulative_regret < 0.75 * uniform.cumulative_regret, "{out:?} vs {uniform:?}");
        assert_eq!(run(StreamPolicyKind::NeuralPg, &pairs), out, "same seed, same figures");
        let err = |pairs: &[&str]| {
            format!(
                "{:#}",
                build(StreamPolicyKind::NeuralPg, &params(pairs), &s, 1, candle_core::Device::Cpu).err().unwrap()
            )
        };
        assert!(err(&["temperature=0"]).contains("`temperature`"));
        assert!(err(&["hiden=3"]).contains("unknown field `hiden`"));
        assert!(err(&["growth=1"]).contains("growth"));
        assert!(err(&["first_retrain=0"]).contains("first_retrain"));
        assert!(err(&["batch=5"]).contains("batch"));
        assert!(err(&["retrain_every=\"1h\""]).contains("retrain_every"));
        let lin =
            build(StreamPolicyKind::LinTs, &params(&["growth=2"]), &s, 1, candle_core::Device::Cpu).err().unwrap();
        assert!(format!("{lin:#}").contains("only neural_pg"));
    }

    /// The first 3,000 rounds of the reference stream (the full replay is in
    /// the README; debug builds are slow): linear Thompson sampling leaves
    /// less than half of uniform's regret, and in the last 10% of those
    /// rounds less than a third of uniform's per-round regret.
    #[test]
    fn lin_ts_beats_uniform_by_far_on_the_reference_stream() {
        let p = BTreeMap::new();
        let ts = simulate(&reference(), StreamPolicyKind::LinTs, &p, 1, Some(3_000), &Progress::hidden()).unwrap();
        assert_eq!((ts.rounds, ts.arms, ts.features), (3_000, 10, 20));
        let uniform_per_round = ts.uniform_cumulative_regret / 3_000.0;
        assert!(
            ts.cumulative_regret < 0.5 * ts.uniform_cumulative_regret,
            "lin_ts {} vs uniform {}",
            ts.cumulative_regret,
            ts.uniform_cumulative_regret
        );
        assert!(ts.regret_last_10pct_per_round < uniform_per_round / 3.0, "{ts:?}");
    }
}
