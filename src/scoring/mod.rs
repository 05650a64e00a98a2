//! Scoring through candle: which device policies score on, and the
//! micro-batcher that scores concurrent requests for one model in a single
//! forward pass.
//!
//! The device is a plain value resolved once at start from
//! `--device auto|cpu|cuda:N` ([`DeviceSpec`]) and handed to the models (as in
//! candle: `Device::cuda_if_available`). `auto` is the first CUDA device when
//! the binary was built with the `cuda` feature and a GPU answers, else the
//! CPU; `cuda:N` without the feature is an error that says so.
//!
//! [`MicroBatcher`] owns a dedicated OS thread (never an actix/tokio worker):
//! callers send `(input, oneshot reply)` on a bounded channel; the thread takes
//! the first waiting request, then everything already queued, then waits for
//! more until `max_batch` requests or `max_wait` after the first one, scores
//! them with one [`BatchScorer::score_batch`] call and answers each caller
//! with its own PMF. `max_wait = 0` means "whatever is queued when the model
//! becomes free" (no timer: batches grow with load only). A full queue is
//! refused at once ([`ScoringError::Overloaded`]) instead of blocking the
//! caller. [`Scoring`] picks inline scoring (no thread hop) for small models
//! on the CPU and the batcher otherwise.
//!
//! Both report to Prometheus through [`ScorerMetrics`] (see `telemetry::ScoringMetrics`):
//! requests per forward pass, each request's wait for its batch, the forward pass's
//! duration, the queue depth and refusals of a full queue.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::Device;
use tokio::sync::oneshot;

use crate::policy::neural::{NeuralInput, NeuralPolicy};
use crate::telemetry::ScorerMetrics;

/// Errors of device selection and batched scoring; [`code`](Self::code) is stable.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ScoringError {
    /// The `--device` value is not `auto`, `cpu` or `cuda:N`.
    #[error("invalid device `{value}`: expected `auto`, `cpu` or `cuda:N` (N = 0, 1, …)")]
    InvalidDevice { value: String },
    /// `cuda:N` was asked for but the binary has no CUDA support.
    #[error(
        "device `cuda:{ordinal}` needs GPU support, but this binary was built without the `cuda` cargo feature \
         (rebuild with `--features cuda`, see ../shared/gpu/build-cuda.sh, or use `--device cpu`)"
    )]
    CudaNotCompiled { ordinal: usize },
    /// The device could not be opened.
    #[error("device `{device}` is not available: {reason}")]
    DeviceUnavailable { device: String, reason: String },
    /// A batcher parameter is out of range.
    #[error("invalid scoring parameter `{field}`: {reason}")]
    InvalidConfig { field: String, reason: String },
    /// The batcher's queue is full.
    #[error("the scoring queue is full ({capacity} requests waiting)")]
    Overloaded { capacity: usize },
    /// The batcher's thread has stopped.
    #[error("the scoring thread has stopped")]
    Stopped,
    /// The model refused an input or failed; `code` is the model's error code.
    #[error("{message}")]
    Model { code: &'static str, message: String },
}

impl ScoringError {
    /// Stable snake_case code for API error bodies and logs.
    pub fn code(&self) -> &'static str {
        match self {
            ScoringError::InvalidDevice { .. } => "invalid_device",
            ScoringError::CudaNotCompiled { .. } => "cuda_not_compiled",
            ScoringError::DeviceUnavailable { .. } => "device_unavailable",
            ScoringError::InvalidConfig { .. } => "invalid_scoring_parameter",
            ScoringError::Overloaded { .. } => "scoring_overloaded",
            ScoringError::Stopped => "scoring_stopped",
            ScoringError::Model { code, .. } => code,
        }
    }
}

/// A `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// CUDA device 0 when built with `cuda` and available, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// CUDA device `N`.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = ScoringError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ScoringError::InvalidDevice { value: s.to_string() };
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(invalid)?;
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid());
                }
                n.parse().map(DeviceSpec::Cuda).map_err(|_| invalid())
            }
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Fixes candle's CPU thread count for the life of the process, once, at start.
///
/// candle 0.11 asks `candle_core::utils::get_num_threads` for a thread count on every
/// matrix product; unless `RAYON_NUM_THREADS` is set, that counts the physical cores by
/// reading and parsing `/proc/cpuinfo` each time, which took ~40% of a debug replay of
/// the reference stream (perf: `show_cpuinfo`/`vsnprintf` in the kernel) and a
/// comparable share of a small forward pass. Setting the variable to the count candle
/// would have computed keeps its behaviour and removes the reads. An existing value is
/// left as it is; [`cpu_threads`] reports the count.
///
/// Environment writes race with any thread that reads the environment (libpq and the
/// resolver do, from C), so call it first thing in `main`, before any thread starts.
pub fn settle_cpu_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", cpu_threads().to_string());
    }
}

/// The threads candle's CPU matrix products use (`RAYON_NUM_THREADS` once
/// [`settle_cpu_threads`] ran), for logs and reports.
pub fn cpu_threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// Whether this binary was built with the `cuda` feature.
pub fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

impl DeviceSpec {
    /// Opens the device. Call once at start and pass the `Device` down.
    pub fn resolve(&self) -> Result<Device, ScoringError> {
        match *self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            // Without the feature `cuda_if_available` returns the CPU; with it,
            // a failure to open an existing GPU is an error, not a silent CPU.
            DeviceSpec::Auto => Device::cuda_if_available(0)
                .map_err(|e| ScoringError::DeviceUnavailable { device: "cuda:0".into(), reason: e.to_string() }),
            DeviceSpec::Cuda(ordinal) => {
                if !cuda_compiled() {
                    return Err(ScoringError::CudaNotCompiled { ordinal });
                }
                Device::new_cuda(ordinal)
                    .map_err(|e| ScoringError::DeviceUnavailable { device: self.to_string(), reason: e.to_string() })
            }
        }
    }
}

/// Short name of a resolved device for logs and metrics: `cpu` or `cuda:N`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// A model that scores many inputs in one call, one PMF per input.
pub trait BatchScorer: Send + Sync + 'static {
    type Input: Send + 'static;

    /// One PMF per input, in order.
    fn score_batch(&self, inputs: &[&Self::Input]) -> Result<Vec<Vec<f64>>, ScoringError>;

    /// Trainable numbers in the model (for the inline bypass).
    fn parameter_count(&self) -> usize;

    /// Whether the model lives on a GPU (then batching always pays).
    fn on_gpu(&self) -> bool;
}

impl BatchScorer for NeuralPolicy {
    type Input = NeuralInput;

    fn score_batch(&self, inputs: &[&NeuralInput]) -> Result<Vec<Vec<f64>>, ScoringError> {
        self.pmfs_of(inputs).map_err(|e| ScoringError::Model { code: e.code(), message: e.to_string() })
    }

    fn parameter_count(&self) -> usize {
        NeuralPolicy::parameter_count(self)
    }

    fn on_gpu(&self) -> bool {
        !self.device().is_cpu()
    }
}

/// Micro-batcher bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most requests scored in one forward pass, 1..=65,536.
    pub max_batch: usize,
    /// Longest wait after a batch's first request for more (0 = no timer).
    pub max_wait: Duration,
    /// Requests that may wait in the queue before new ones are refused, >= 1.
    pub queue_capacity: usize,
    /// On the CPU, models with at most this many parameters are scored
    /// inline by [`Scoring::new`] (0 = always batch).
    pub inline_max_params: usize,
}

/// 256 requests / 1 ms per batch, 16,384 queued, small CPU models inline.
impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch: 256,
            max_wait: Duration::from_millis(1),
            queue_capacity: 16_384,
            inline_max_params: DEFAULT_INLINE_MAX_PARAMS,
        }
    }
}

/// Default of [`BatchConfig::inline_max_params`]: see the README's crossover figures.
pub const DEFAULT_INLINE_MAX_PARAMS: usize = 0;

impl BatchConfig {
    pub fn validate(&self) -> Result<(), ScoringError> {
        let bad = |field: &str, reason: String| Err(ScoringError::InvalidConfig { field: field.into(), reason });
        if !(1..=65_536).contains(&self.max_batch) {
            return bad("max_batch", format!("must be between 1 and 65536, got {}", self.max_batch));
        }
        if self.max_wait > Duration::from_secs(1) {
            return bad("max_wait", format!("must be at most 1 s, got {:?}", self.max_wait));
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity", "must be at least 1".into());
        }
        Ok(())
    }
}

type Reply = oneshot::Sender<Result<Vec<f64>, ScoringError>>;

struct Request<I> {
    input: I,
    reply: Reply,
    /// When it was queued, for the queue-wait histogram.
    queued: Instant,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    batches: AtomicU64,
    largest: AtomicU64,
}

/// What a batcher has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    pub requests: u64,
    pub batches: u64,
    pub largest_batch: u64,
}

/// Collects concurrent requests for one model and scores them together on a
/// dedicated thread (see the module docs). Dropping it lets the thread finish
/// what is queued and joins it.
pub struct MicroBatcher<S: BatchScorer> {
    tx: Option<SyncSender<Request<S::Input>>>,
    worker: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    capacity: usize,
    metrics: ScorerMetrics,
}

impl<S: BatchScorer> MicroBatcher<S> {
    /// Starts the scoring thread (reporting to no registry).
    pub fn spawn(scorer: Arc<S>, config: BatchConfig) -> Result<Self, ScoringError> {
        Self::spawn_observed(scorer, config, ScorerMetrics::unregistered())
    }

    /// Starts the scoring thread, reporting to `metrics`.
    pub fn spawn_observed(scorer: Arc<S>, config: BatchConfig, metrics: ScorerMetrics) -> Result<Self, ScoringError> {
        config.validate()?;
        let (tx, rx) = mpsc::sync_channel::<Request<S::Input>>(config.queue_capacity);
        let counters = Arc::new(Counters::default());
        let worker_counters = Arc::clone(&counters);
        let worker_metrics = metrics.clone();
        let worker = std::thread::Builder::new()
            .name("strategist-scorer".into())
            .spawn(move || run_batches(&*scorer, &rx, config, &worker_counters, &worker_metrics))
            .map_err(|e| ScoringError::DeviceUnavailable { device: "scoring thread".into(), reason: e.to_string() })?;
        Ok(MicroBatcher { tx: Some(tx), worker: Some(worker), counters, capacity: config.queue_capacity, metrics })
    }

    fn submit(&self, input: S::Input) -> Result<oneshot::Receiver<Result<Vec<f64>, ScoringError>>, ScoringError> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(ScoringError::Stopped)?;
        // Counted before the send so the thread's decrement can never come first.
        self.metrics.queue_depth.inc();
        match tx.try_send(Request { input, reply, queued: Instant::now() }) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.metrics.queue_depth.dec();
                match e {
                    TrySendError::Full(_) => {
                        self.metrics.overloaded.inc();
                        Err(ScoringError::Overloaded { capacity: self.capacity })
                    }
                    TrySendError::Disconnected(_) => Err(ScoringError::Stopped),
                }
            }
        }
    }

    /// Scores one input with whatever else is queued; never blocks the async thread.
    pub async fn score(&self, input: S::Input) -> Result<Vec<f64>, ScoringError> {
        let rx = self.submit(input)?;
        rx.await.map_err(|_| ScoringError::Stopped)?
    }

    /// Blocking variant for plain threads (the CLI, benches). Must not be
    /// called from inside an async runtime.
    pub fn score_blocking(&self, input: S::Input) -> Result<Vec<f64>, ScoringError> {
        let rx = self.submit(input)?;
        rx.blocking_recv().map_err(|_| ScoringError::Stopped)?
    }

    pub fn stats(&self) -> BatchStats {
        BatchStats {
            requests: self.counters.requests.load(Ordering::Relaxed),
            batches: self.counters.batches.load(Ordering::Relaxed),
            largest_batch: self.counters.largest.load(Ordering::Relaxed),
        }
    }
}

impl<S: BatchScorer> Drop for MicroBatcher<S> {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once the queue is drained.
        self.tx.take();
        if let Some(worker) = self.worker.take() {
            if worker.join().is_err() {
                tracing::error!("the scoring thread panicked");
            }
        }
    }
}

/// The scoring thread's loop: gather a batch, score it, answer each caller.
fn run_batches<S: BatchScorer>(
    scorer: &S,
    rx: &mpsc::Receiver<Request<S::Input>>,
    config: BatchConfig,
    counters: &Counters,
    metrics: &ScorerMetrics,
) {
    let mut batch: Vec<Request<S::Input>> = Vec::with_capacity(config.max_batch);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        let deadline = Instant::now() + config.max_wait;
        while batch.len() < config.max_batch {
            match rx.try_recv() {
                Ok(r) => {
                    batch.push(r);
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match rx.recv_timeout(deadline - now) {
                Ok(r) => batch.push(r),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        metrics.queue_depth.sub(batch.len() as i64);
        // Callers that went away (cancelled requests) are not scored.
        batch.retain(|r| !r.reply.is_closed());
        if !batch.is_empty() {
            counters.requests.fetch_add(batch.len() as u64, Ordering::Relaxed);
            counters.batches.fetch_add(1, Ordering::Relaxed);
            counters.largest.fetch_max(batch.len() as u64, Ordering::Relaxed);
            let start = Instant::now();
            for r in &batch {
                metrics.queue_wait_seconds.observe(start.saturating_duration_since(r.queued).as_secs_f64());
            }
            metrics.batch_size.observe(batch.len() as f64);
            answer(scorer, &mut batch);
            metrics.forward_seconds.observe(start.elapsed().as_secs_f64());
        }
        batch.clear();
    }
}

fn answer<S: BatchScorer>(scorer: &S, batch: &mut Vec<Request<S::Input>>) {
    let inputs: Vec<&S::Input> = batch.iter().map(|r| &r.input).collect();
    match scorer.score_batch(&inputs) {
        Ok(rows) if rows.len() == batch.len() => {
            for (req, row) in batch.drain(..).zip(rows) {
                // A caller that stopped waiting is fine to ignore.
                let _ = req.reply.send(Ok(row));
            }
        }
        Ok(rows) => {
            let e = ScoringError::Model {
                code: "scoring_row_count_mismatch",
                message: format!("the model returned {} PMFs for {} inputs", rows.len(), batch.len()),
            };
            for req in batch.drain(..) {
                let _ = req.reply.send(Err(e.clone()));
            }
        }
        // One malformed input must not fail its neighbours: score one by one
        // so only the bad request gets the error.
        Err(_) if batch.len() > 1 => {
            for req in batch.drain(..) {
                let result = scorer.score_batch(&[&req.input]).and_then(single);
                let _ = req.reply.send(result);
            }
        }
        Err(e) => {
            for req in batch.drain(..) {
                let _ = req.reply.send(Err(e.clone()));
            }
        }
    }
}

/// The only row of a one-input batch.
fn single(mut rows: Vec<Vec<f64>>) -> Result<Vec<f64>, ScoringError> {
    match (rows.pop(), rows.is_empty()) {
        (Some(row), true) => Ok(row),
        _ => Err(ScoringError::Model {
            code: "scoring_row_count_mismatch",
            message: "the model did not return exactly one PMF for one input".into(),
        }),
    }
}

/// Inline scoring or the micro-batcher, chosen once per model.
pub enum Scoring<S: BatchScorer> {
    /// Scored on the caller's thread, one input per forward pass.
    Inline(Arc<S>, ScorerMetrics),
    Batched(MicroBatcher<S>),
}

impl<S: BatchScorer> Scoring<S> {
    /// Inline when the model is on the CPU and has at most
    /// `config.inline_max_params` parameters; batched otherwise (reporting to no registry).
    pub fn new(scorer: Arc<S>, config: BatchConfig) -> Result<Self, ScoringError> {
        Self::observed(scorer, config, ScorerMetrics::unregistered())
    }

    /// As [`Self::new`], reporting to `metrics` (an inline pass is a batch of one that
    /// waited 0 s).
    pub fn observed(scorer: Arc<S>, config: BatchConfig, metrics: ScorerMetrics) -> Result<Self, ScoringError> {
        config.validate()?;
        if !scorer.on_gpu() && scorer.parameter_count() <= config.inline_max_params {
            Ok(Scoring::Inline(scorer, metrics))
        } else {
            MicroBatcher::spawn_observed(scorer, config, metrics).map(Scoring::Batched)
        }
    }

    fn inline(scorer: &S, metrics: &ScorerMetrics, input: &S::Input) -> Result<Vec<f64>, ScoringError> {
        let start = Instant::now();
        let rows = scorer.score_batch(&[input]);
        metrics.forward_seconds.observe(start.elapsed().as_secs_f64());
        metrics.batch_size.observe(1.0);
        metrics.queue_wait_seconds.observe(0.0);
        single(rows?)
    }

    pub fn is_batched(&self) -> bool {
        matches!(self, Scoring::Batched(_))
    }

    /// One input's PMF.
    pub async fn score(&self, input: S::Input) -> Result<Vec<f64>, ScoringError> {
        match self {
            Scoring::Inline(s, m) => Self::inline(s, m, &input),
            Scoring::Batched(b) => b.score(input).await,
        }
    }

    /// Blocking variant (not from inside an async runtime).
    pub fn score_blocking(&self, input: S::Input) -> Result<Vec<f64>, ScoringError> {
        match self {
            Scoring::Inline(s, m) => Self::inline(s, m, &input),
            Scoring::Batched(b) => b.score_blocking(input),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::explore;
    use crate::policy::neural::NeuralParams;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    #[test]
    fn device_flags_parse_and_resolve() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda:0".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:12".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(12));
        for bad in ["", "gpu", "CPU", "cuda", "cuda:", "cuda:-1", "cuda:+1", "cuda:x", "cuda:99999999999999999999"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err();
            assert_eq!(err.code(), "invalid_device", "{bad}");
        }
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
        assert!(DeviceSpec::Cpu.resolve().unwrap().is_cpu());
        let auto = DeviceSpec::Auto.resolve().unwrap();
        if !cuda_compiled() {
            assert!(auto.is_cpu());
            let err = DeviceSpec::Cuda(0).resolve().unwrap_err();
            assert_eq!(err, ScoringError::CudaNotCompiled { ordinal: 0 });
            assert!(err.to_string().contains("--features cuda"), "{err}");
        }
        assert_eq!(device_name(&Device::Cpu), "cpu");
    }

    #[test]
    fn batch_config_is_validated() {
        BatchConfig::default().validate().unwrap();
        let bad = [
            ("max_batch", BatchConfig { max_batch: 0, ..Default::default() }),
            ("max_wait", BatchConfig { max_wait: Duration::from_secs(2), ..Default::default() }),
            ("queue_capacity", BatchConfig { queue_capacity: 0, ..Default::default() }),
        ];
        for (field, config) in bad {
            match config.validate().unwrap_err() {
                ScoringError::InvalidConfig { field: f, .. } => assert_eq!(f, field),
                other => panic!("{other:?}"),
            }
        }
    }

    fn policy() -> Arc<NeuralPolicy> {
        let params = NeuralParams { hidden: 16, embedding: 8, seed: 5, ..NeuralParams::new(6) };
        Arc::new(NeuralPolicy::new(params, 4, &Device::Cpu).unwrap())
    }

    fn inputs(n: usize) -> Vec<NeuralInput> {
        let mut rng = StdRng::seed_from_u64(1);
        (0..n)
            .map(|_| NeuralInput::without_events(&(0..6).map(|_| rng.random_range(-2.0..2.0)).collect::<Vec<f64>>()))
            .collect()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn batched_and_unbatched_scoring_give_the_same_pmfs_and_arms() {
        let policy = policy();
        let xs = inputs(200);
        let config = BatchConfig { max_batch: 64, max_wait: Duration::from_millis(20), ..Default::default() };
        let batcher = MicroBatcher::spawn(Arc::clone(&policy), config).unwrap();
        let batched: Vec<Result<Vec<f64>, ScoringError>> =
            runtime().block_on(futures_util::future::join_all(xs.iter().cloned().map(|x| batcher.score(x))));
        let stats = batcher.stats();
        assert_eq!(stats.requests, 200);
        assert!(stats.batches < 200 && stats.largest_batch > 1 && stats.largest_batch <= 64, "{stats:?}");
        for (i, (x, b)) in xs.iter().zip(batched).enumerate() {
            let b = b.unwrap();
            let single = policy.pmfs(std::slice::from_ref(x)).unwrap().remove(0);
            for (p, q) in single.iter().zip(&b) {
                assert!((p - q).abs() < 1e-5, "{single:?} vs {b:?}");
            }
            // The same hashed seed draws the same arm from either PMF.
            let seed = explore::draw_seed("salt", &format!("unit-{i}"), "request-1");
            let eligible = [true; 4];
            let d1 = explore::decide(&single, &eligible, 0.02, seed).unwrap();
            let d2 = explore::decide(&b, &eligible, 0.02, seed).unwrap();
            assert_eq!(d1.arm, d2.arm);
            assert!((d1.propensity - d2.propensity).abs() < 1e-5);
        }
        // The blocking path from a plain thread gives the same answer.
        let again = batcher.score_blocking(xs[0].clone()).unwrap();
        assert_eq!(again, policy.pmfs(&xs[..1]).unwrap().remove(0));
    }

    #[test]
    fn a_malformed_input_fails_alone_in_its_batch() {
        let batcher = MicroBatcher::spawn(
            policy(),
            BatchConfig { max_batch: 16, max_wait: Duration::from_millis(20), ..Default::default() },
        )
        .unwrap();
        let mut xs = inputs(8);
        xs[3] = NeuralInput::without_events(&[1.0, 2.0]);
        let out = runtime().block_on(futures_util::future::join_all(xs.into_iter().map(|x| batcher.score(x))));
        for (i, r) in out.iter().enumerate() {
            if i == 3 {
                assert_eq!(r.as_ref().unwrap_err().code(), "invalid_context");
            } else {
                assert!((r.as_ref().unwrap().iter().sum::<f64>() - 1.0).abs() < 1e-5);
            }
        }
    }

    /// A scorer that holds each forward pass until the test lets it go.
    struct Gated {
        open: std::sync::Mutex<bool>,
        turn: std::sync::Condvar,
    }

    impl BatchScorer for Gated {
        type Input = u32;

        fn score_batch(&self, inputs: &[&u32]) -> Result<Vec<Vec<f64>>, ScoringError> {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.turn.wait(open).unwrap();
            }
            Ok(inputs.iter().map(|_| vec![1.0]).collect())
        }

        fn parameter_count(&self) -> usize {
            1
        }

        fn on_gpu(&self) -> bool {
            false
        }
    }

    #[test]
    fn the_batcher_reports_batch_sizes_waits_queue_depth_and_refusals() {
        let series = crate::telemetry::ScoringMetrics::new();
        let m = series.scorer("exp");
        let gated = Arc::new(Gated { open: std::sync::Mutex::new(false), turn: std::sync::Condvar::new() });
        let config = BatchConfig { max_batch: 8, max_wait: Duration::ZERO, queue_capacity: 3, ..Default::default() };
        let batcher = Arc::new(MicroBatcher::spawn_observed(Arc::clone(&gated), config, m.clone()).unwrap());
        // The first request is taken by the thread and blocks in the forward pass...
        let first = {
            let b = Arc::clone(&batcher);
            std::thread::spawn(move || b.score_blocking(0))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while m.batch_size.get_sample_count() == 0 {
            assert!(Instant::now() < deadline, "the first batch never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        // ...so the next three wait in the queue and the fourth is refused.
        let waiting: Vec<_> = (1..=3)
            .map(|i| {
                let b = Arc::clone(&batcher);
                std::thread::spawn(move || b.score_blocking(i))
            })
            .collect();
        while m.queue_depth.get() < 3 {
            assert!(Instant::now() < deadline, "queue depth {}", m.queue_depth.get());
            std::thread::sleep(Duration::from_millis(1));
        }
        let refused = batcher.score_blocking(9).unwrap_err();
        assert_eq!(refused.code(), "scoring_overloaded");
        assert_eq!((m.overloaded.get(), m.queue_depth.get()), (1, 3));
        std::thread::sleep(Duration::from_millis(5));
        *gated.open.lock().unwrap() = true;
        gated.turn.notify_all();
        first.join().unwrap().unwrap();
        for w in waiting {
            assert_eq!(w.join().unwrap().unwrap(), vec![1.0]);
        }
        // Two passes: the first alone, then the three that queued behind it (max_wait 0
        // takes whatever is queued when the model is free).
        assert_eq!(m.queue_depth.get(), 0);
        assert_eq!(m.batch_size.get_sample_count(), 2);
        assert_eq!(m.batch_size.get_sample_sum(), 4.0);
        assert_eq!(m.forward_seconds.get_sample_count(), 2);
        assert_eq!(m.queue_wait_seconds.get_sample_count(), 4);
        // The three queued requests waited at least the 5 ms the gate stayed shut.
        assert!(m.queue_wait_seconds.get_sample_sum() >= 3.0 * 0.005, "{}", m.queue_wait_seconds.get_sample_sum());
        assert_eq!(batcher.stats(), BatchStats { requests: 4, batches: 2, largest_batch: 3 });
        // Inline scoring reports a pass of one that did not wait.
        let inline = Scoring::observed(
            Arc::clone(&gated),
            BatchConfig { inline_max_params: 1, ..Default::default() },
            series.scorer("inline"),
        )
        .unwrap();
        assert!(!inline.is_batched());
        inline.score_blocking(1).unwrap();
        let im = series.scorer("inline");
        assert_eq!((im.batch_size.get_sample_count(), im.batch_size.get_sample_sum()), (1, 1.0));
        assert_eq!((im.queue_wait_seconds.get_sample_sum(), im.forward_seconds.get_sample_count()), (0.0, 1));
    }

    #[test]
    fn scoring_goes_inline_for_small_cpu_models_only() {
        let p = policy();
        let n = p.parameter_count();
        assert!(n > 0);
        let inline = Scoring::new(Arc::clone(&p), BatchConfig { inline_max_params: n, ..Default::default() }).unwrap();
        assert!(!inline.is_batched());
        let batched =
            Scoring::new(Arc::clone(&p), BatchConfig { inline_max_params: n - 1, ..Default::default() }).unwrap();
        assert!(batched.is_batched());
        let x = inputs(1).remove(0);
        let a = runtime().block_on(inline.score(x.clone())).unwrap();
        let b = runtime().block_on(batched.score(x)).unwrap();
        assert_eq!(a, b);
    }
}
