//! Policy benchmarks (pure, no I/O): the per-decision cost (restrict to
//! eligible arms, floor, hash the request to a seed, draw) for each policy
//! kind's snapshot with 10 arms, and the snapshot update itself — for
//! Thompson kinds the posterior P(best) Monte Carlo with 10,000 draws.
//!
//! Run: `cargo bench --bench policy -- --warm-up-time 1 --measurement-time 3`.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use strategist::policy::{
    explore::{decide, draw_seed},
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

criterion_group!(benches, decision, snapshot_update);
criterion_main!(benches);
