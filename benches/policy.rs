//! Policy benchmarks (pure, no I/O): the per-decision cost (restrict to
//! eligible arms, floor, hash the request to a seed, draw) for each policy
//! kind's snapshot with 10 arms, and the snapshot update itself — for
//! Thompson kinds the posterior P(best) Monte Carlo with 10,000 draws.
//! For the linear kinds (`lin_ts`, `lin_ucb`): the per-decision PMF for a
//! context (hash the request, PMF with the floor, draw) with 10 arms × 20
//! features and 100 arms × 64 features, and the learner's update throughput
//! (observations/s, one Sherman–Morrison update each).
//!
//! Run: `cargo bench --bench policy -- --warm-up-time 1 --measurement-time 3`.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;
use strategist::policy::{
    explore::{decide, draw, draw_seed, unit_uniform},
    linear::{Exploration, LinearState, DEFAULT_ALPHA, DEFAULT_LIN_TS_DRAWS, DEFAULT_V},
    update_state, ArmFeedback, PolicySpec, DEFAULT_DRAWS,
};

const ARMS: usize = 10;

fn arm_keys() -> Vec<String> {
    (0..ARMS).map(|i| format!("arm{i}")).collect()
}

fn specs() -> Vec<PolicySpec> {
    vec![
        PolicySpec::Fixed {
            weights: Some(
                arm_keys().into_iter().enumerate().map(|(i, k)| (k, 1.0 + i as f64)).collect::<BTreeMap<_, _>>(),
            ),
        },
        PolicySpec::EpsilonGreedy { epsilon: 0.1 },
        PolicySpec::ThompsonBeta { prior_alpha: 1.0, prior_beta: 1.0, draws: DEFAULT_DRAWS },
        PolicySpec::ThompsonGaussian { prior_mean: 0.0, prior_sd: 100.0, draws: DEFAULT_DRAWS },
    ]
}

/// Conversion-style feedback with close arms (about 3–5% conversion on 2,000
/// exposures each), valid for every kind, so the Monte Carlo is not trivial.
fn feedback() -> Vec<ArmFeedback> {
    (0..ARMS)
        .map(|i| {
            let conversions = 60.0 + 4.0 * i as f64;
            ArmFeedback { n: 2_000, sum: conversions, sum_sq: conversions }
        })
        .collect()
}

fn decision(c: &mut Criterion) {
    let keys = arm_keys();
    let feedback = feedback();
    // Arm 3 ineligible for this request (targeting), floor 1%.
    let eligible: Vec<bool> = (0..ARMS).map(|i| i != 3).collect();
    let mut group = c.benchmark_group("decision_10_arms");
    for spec in specs() {
        let state = match update_state(&spec, &keys, &feedback, 42) {
            Ok(state) => state,
            Err(e) => panic!("bench setup: {e}"),
        };
        let mut request = 0u64;
        group.bench_function(BenchmarkId::from_parameter(spec.kind()), |b| {
            b.iter(|| {
                request += 1;
                let seed = draw_seed("exp-salt", "unit-12345", &request.to_string());
                decide(black_box(&state.pmf), black_box(&eligible), 0.01, seed)
            })
        });
    }
    group.finish();
}

fn snapshot_update(c: &mut Criterion) {
    let keys = arm_keys();
    let feedback = feedback();
    let mut group = c.benchmark_group("snapshot_update_10_arms");
    for spec in specs() {
        group.bench_function(BenchmarkId::from_parameter(spec.kind()), |b| {
            b.iter(|| update_state(black_box(&spec), &keys, black_box(&feedback), 42))
        });
    }
    group.finish();
}

/// `n` standard-normal contexts of dimension `features`.
fn contexts(n: usize, features: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| (0..features).map(|_| rng.sample::<f64, _>(StandardNormal)).collect()).collect()
}

/// A linear model after 5,000 observations spread over the arms (binary rewards).
fn trained_model(arms: usize, features: usize) -> LinearState {
    let mut model = match LinearState::new(arms, features, true, 1.0) {
        Ok(m) => m,
        Err(e) => panic!("bench setup: {e}"),
    };
    let mut rng = StdRng::seed_from_u64(7);
    for (t, x) in contexts(5_000, features, 3).iter().enumerate() {
        let arm = t % arms;
        let reward = if rng.random::<f64>() < 0.2 + 0.3 * (x[arm % features]).tanh().abs() { 1.0 } else { 0.0 };
        if let Err(e) = model.observe(arm, x, reward) {
            panic!("bench setup: {e}");
        }
    }
    model
}

const SHAPES: [(usize, usize); 2] = [(10, 20), (100, 64)];

fn linear_decision(c: &mut Criterion) {
    let explorations = [
        ("lin_ts", Exploration::Thompson { v: DEFAULT_V, draws: DEFAULT_LIN_TS_DRAWS }),
        ("lin_ucb", Exploration::Ucb { alpha: DEFAULT_ALPHA }),
    ];
    let mut group = c.benchmark_group("linear_decision");
    for (arms, features) in SHAPES {
        let model = trained_model(arms, features);
        let xs = contexts(256, features, 11);
        let eligible = vec![true; arms];
        for (name, exploration) in explorations {
            let mut request = 0usize;
            group.bench_function(BenchmarkId::new(name, format!("{arms}_arms_{features}_features")), |b| {
                b.iter(|| {
                    request += 1;
                    let seed = draw_seed("exp-salt", "unit-12345", &request.to_string());
                    let x = &xs[request % xs.len()];
                    match model.pmf(exploration, black_box(x), &eligible, 0.01, seed) {
                        Ok(pmf) => draw(&pmf, unit_uniform(seed)),
                        Err(e) => panic!("{e}"),
                    }
                })
            });
        }
    }
    group.finish();
}

fn linear_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("linear_update");
    group.throughput(Throughput::Elements(1));
    for (arms, features) in SHAPES {
        let mut model = trained_model(arms, features);
        let xs = contexts(256, features, 13);
        let mut t = 0usize;
        group.bench_function(BenchmarkId::from_parameter(format!("{arms}_arms_{features}_features")), |b| {
            b.iter(|| {
                t += 1;
                model.observe(t % arms, black_box(&xs[t % xs.len()]), (t % 3 == 0) as u8 as f64)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decision, snapshot_update, linear_decision, linear_update);
criterion_main!(benches);
