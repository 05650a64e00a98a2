//! Neural policy (`neural_pg`) scoring on the CPU through candle: throughput
//! of one forward pass for batch sizes 1, 32, 256 and 4096 (10 arms, 20
//! features, 10 behaviour events per context, default widths), and the
//! micro-batcher against inline scoring for 256 concurrent requests and for a
//! single request, for a tiny, the default and a large model — the crossover
//! that decides `BatchConfig::inline_max_params`, and one decision's PMF for 10 arms ×
//! 20 features and 100 arms × 64 features.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-release cargo bench --bench neural -- --warm-up-time 1 --measurement-time 3`.
//! cargo sets `RAYON_NUM_THREADS` (`.cargo/config.toml`), as the binary's `main` does; run
//! the built bench binary without it (`env -u RAYON_NUM_THREADS target/release/deps/neural-* --bench`)
//! to see candle re-read `/proc/cpuinfo` on every matrix product.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use chrono::{Duration as Days, NaiveDate, NaiveDateTime};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{rngs::StdRng, Rng, SeedableRng};
use strategist::policy::neural::{NeuralInput, NeuralParams, NeuralPolicy};
use strategist::profile::{Event, EventKind};
use strategist::scoring::{BatchConfig, MicroBatcher};

const ARMS: usize = 10;
const FEATURES: usize = 20;

fn now() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 11, 20).and_then(|d| d.and_hms_opt(12, 0, 0)).expect("valid date")
}

fn inputs(n: usize) -> Vec<NeuralInput> {
    inputs_of(n, FEATURES)
}

fn inputs_of(n: usize, features: usize) -> Vec<NeuralInput> {
    let mut rng = StdRng::seed_from_u64(1);
    (0..n)
        .map(|_| {
            let x: Vec<f64> = (0..features).map(|_| rng.random_range(-2.0..2.0)).collect();
            let events: Vec<Event> = (0..10)
                .map(|i| Event {
                    kind: EventKind::ALL[rng.random_range(0..4)],
                    at: now() - Days::days(20 - i),
                    amount: rng.random_range(0.0..100.0),
                    category: Some(format!("c{}", rng.random_range(0..8))),
                })
                .collect();
            NeuralInput::new(&x, &events, now())
        })
        .collect()
}

fn policy(hidden: usize, embedding: usize) -> NeuralPolicy {
    let params = NeuralParams { hidden, embedding, ..NeuralParams::new(FEATURES) };
    NeuralPolicy::new(params, ARMS, &Device::Cpu).expect("valid parameters")
}

fn forward_throughput(c: &mut Criterion) {
    let p = policy(32, 16);
    let xs = inputs(4096);
    let mut group = c.benchmark_group("neural_forward_cpu");
    for batch in [1usize, 32, 256, 4096] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter(|| {
                let out = p.pmfs(black_box(&xs[..batch])).expect("scores");
                // CPU results are ready when returned; on a GPU this would
                // need `device.synchronize()` before the clock stops.
                black_box(out)
            })
        });
    }
    group.finish();
}

fn batcher_crossover(c: &mut Criterion) {
    let xs = inputs(256);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    for (name, hidden, embedding) in [("tiny", 8, 4), ("default", 32, 16), ("large", 256, 64)] {
        let p = Arc::new(policy(hidden, embedding));
        let params = p.parameter_count();
        let mut group = c.benchmark_group(format!("neural_batcher_{name}_{params}params"));
        group.throughput(Throughput::Elements(256));
        group.bench_function("inline_256_requests", |b| {
            b.iter(|| {
                for x in &xs {
                    black_box(p.pmfs(std::slice::from_ref(x)).expect("scores"));
                }
            })
        });
        for wait_us in [0u64, 1000] {
            let config = BatchConfig { max_wait: Duration::from_micros(wait_us), ..Default::default() };
            let batcher = MicroBatcher::spawn(Arc::clone(&p), config).expect("batcher");
            group.bench_function(format!("batched_256_concurrent_wait_{wait_us}us"), |b| {
                b.iter(|| {
                    let out =
                        runtime.block_on(futures_util::future::join_all(xs.iter().cloned().map(|x| batcher.score(x))));
                    black_box(out)
                })
            });
        }
        group.throughput(Throughput::Elements(1));
        group.bench_function("inline_1_request", |b| {
            b.iter(|| black_box(p.pmfs(std::slice::from_ref(&xs[0])).expect("scores")))
        });
        let batcher =
            MicroBatcher::spawn(Arc::clone(&p), BatchConfig { max_wait: Duration::ZERO, ..Default::default() })
                .expect("batcher");
        group.bench_function("batched_1_request_wait_0us", |b| {
            b.iter(|| black_box(batcher.score_blocking(xs[0].clone()).expect("scores")))
        });
        group.finish();
    }
}

/// One decision's PMF (forward pass of one context, eligibility and a 1% floor), as
/// `/v1/assign` computes it inline, for 10 arms × 20 features and 100 arms × 64 features.
fn decision_pmf(c: &mut Criterion) {
    let mut group = c.benchmark_group("neural_decision_pmf");
    for (arms, features) in [(10usize, 20usize), (100, 64)] {
        let params = NeuralParams { hidden: 32, embedding: 16, ..NeuralParams::new(features) };
        let p = NeuralPolicy::new(params, arms, &Device::Cpu).expect("valid parameters");
        let xs = inputs_of(64, features);
        let eligible = vec![true; arms];
        let mut i = 0;
        group.bench_function(BenchmarkId::from_parameter(format!("{arms}_arms_{features}_features")), |b| {
            b.iter(|| {
                i = (i + 1) % xs.len();
                black_box(p.decision_pmf(black_box(&xs[i]), &eligible, 0.01).expect("pmf"))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = forward_throughput, batcher_crossover, decision_pmf
}
criterion_main!(benches);
