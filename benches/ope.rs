//! Off-policy evaluation on 10,000 Open Bandit Dataset rows: loading the CSV, one full
//! evaluation (cross-fitted reward model, five estimators, 1,000 bootstrap resamples), and the
//! same with a Bernoulli Thompson sampling target (100,000 Monte Carlo draws).
//!
//! Reference data: `$STRATEGIST_REFERENCE_DIR`, else `../shared/reference`.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use strategist::ope::{evaluate, load_obd, LoggedData, ObdOptions, OpeConfig, TargetSpec, UniformPolicy};

fn obd_file(policy: &str) -> PathBuf {
    let root = match std::env::var_os("STRATEGIST_REFERENCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/reference")),
    };
    root.join("obd").join(policy).join("all").join("all.csv")
}

fn load(policy: &str) -> LoggedData {
    let path = obd_file(policy);
    load_obd(&path, &ObdOptions::default()).unwrap_or_else(|e| panic!("bench needs {}: {e}", path.display()))
}

fn bench_ope(c: &mut Criterion) {
    let bts = load("bts");
    let random = load("random");
    let config = OpeConfig::with_seed(0, 1_000, 2);

    let mut group = c.benchmark_group("ope");
    group.sample_size(10);
    group.bench_function("load_obd_10k_rows", |b| {
        b.iter(|| load_obd(black_box(&obd_file("bts")), &ObdOptions::default()))
    });
    group.bench_function("uniform_on_bts_all_bootstrap_1000", |b| {
        b.iter(|| evaluate(black_box(&bts), &UniformPolicy, &config))
    });
    group.bench_function("bts_target_on_random_all_bootstrap_1000", |b| {
        b.iter(|| {
            let target = TargetSpec::Bts.build(black_box(&random), 0)?;
            evaluate(&random, target.as_ref(), &config)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_ope);
criterion_main!(benches);
