//! Benchmarks of the statistics engine: (a) adding one observation to
//! sufficient statistics; (b) a full analysis of 10 arms × 5 metrics × 100
//! periods (merge, z / Welch tests, t and normal CIs, mSPRT, confidence
//! sequence, period-stratified estimate, Holm, P(best) by seeded Monte
//! Carlo, SRM). Run: `cargo bench --bench stats`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strategist::stats::{
    best_arm_monte_carlo, confidence_sequence, holm, msprt, msprt_ci, relative_difference, srm_test,
    stratified_difference, two_proportion_ztest, welch_t_test, BetaPosterior, DiffEstimate, GaussianPosterior,
    MeanEstimate, Moments, Posterior, ProportionStats, SampleStats, Summary, WeightedStats,
};

const ARMS: usize = 10;
const METRICS: usize = 5;
const PERIODS: usize = 100;
const ALPHA: f64 = 0.05;
const TAU2: f64 = 1e-4;
const MC_DRAWS: u64 = 200;

/// Per metric, per arm, per period statistics. Metric 0 is a conversion.
struct Experiment {
    conversions: Vec<Vec<ProportionStats>>,
    continuous: Vec<Vec<Vec<SampleStats>>>,
    period_units: Vec<u64>,
}

fn experiment() -> Experiment {
    let mut rng = StdRng::seed_from_u64(20240601);
    let mut units = vec![vec![0u64; PERIODS]; ARMS];
    for arm in units.iter_mut() {
        for n in arm.iter_mut() {
            *n = rng.random_range(200..2000);
        }
    }
    let conversions = units
        .iter()
        .enumerate()
        .map(|(a, arm)| {
            arm.iter()
                .map(|&n| {
                    let rate = 0.03 + 0.001 * a as f64;
                    let x = ((n as f64) * rate + rng.random_range(-3.0..3.0)).max(0.0) as u64;
                    ProportionStats::new(n, x.min(n)).unwrap()
                })
                .collect()
        })
        .collect();
    let continuous = (1..METRICS)
        .map(|m| {
            units
                .iter()
                .enumerate()
                .map(|(a, arm)| {
                    arm.iter()
                        .map(|&n| {
                            let mean = 10.0 * m as f64 + 0.05 * a as f64;
                            let var = 4.0 + m as f64;
                            let nf = n as f64;
                            let sum = mean * nf + rng.random_range(-1.0..1.0) * nf.sqrt();
                            let sum_sq = var * (nf - 1.0) + sum * sum / nf;
                            SampleStats::from_parts(n, sum, sum_sq).unwrap()
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let period_units = (0..PERIODS).map(|p| units.iter().map(|arm| arm[p]).sum()).collect();
    Experiment { conversions, continuous, period_units }
}

/// What the analyzer computes for one treatment arm against control.
fn compare(control: &Summary, treatment: &Summary, n_total: f64) -> f64 {
    let welch = welch_t_test(control, treatment).unwrap();
    black_box(&welch);
    let a = MeanEstimate::from_summary(control);
    let b = MeanEstimate::from_summary(treatment);
    let abs = DiffEstimate::absolute(&a, &b);
    black_box(abs.ci_t(ALPHA).unwrap());
    black_box(abs.ci_normal(ALPHA).unwrap());
    black_box(abs.p_value_normal().unwrap());
    let rel = relative_difference(control, treatment).unwrap();
    black_box(rel.ci_t(ALPHA).unwrap());
    black_box(rel.ci_normal(ALPHA).unwrap());
    let look = msprt(abs.point, abs.variance, TAU2, 0.0).unwrap();
    black_box(msprt_ci(abs.point, abs.variance, TAU2, ALPHA).unwrap());
    black_box(confidence_sequence(&rel, n_total, ALPHA, 10_000.0).unwrap());
    look.p_value.p
}

fn analyse(e: &Experiment, seed: u64) -> f64 {
    let mut checksum = 0.0;
    // Metric 0: conversions.
    let merged: Vec<ProportionStats> = e.conversions.iter().map(|p| p.iter().copied().sum()).collect();
    let summaries: Vec<Summary> = merged.iter().map(|s| s.summary().unwrap()).collect();
    let mut p_values = Vec::with_capacity(ARMS - 1);
    for arm in 1..ARMS {
        let z =
            two_proportion_ztest(merged[0].conversions(), merged[0].n(), merged[arm].conversions(), merged[arm].n())
                .unwrap();
        black_box(&z);
        let n_total = (merged[0].n() + merged[arm].n()) as f64;
        p_values.push(compare(&summaries[0], &summaries[arm], n_total));
        let strat = stratified_difference(&e.conversions[0], &e.conversions[arm], &e.period_units).unwrap();
        black_box(strat.ci_normal(ALPHA).unwrap());
    }
    checksum += holm(&p_values).unwrap().iter().sum::<f64>();
    let posteriors: Vec<Posterior> = merged
        .iter()
        .map(|s| Posterior::Beta(BetaPosterior::from_conversions(s.conversions(), s.n(), 1.0, 1.0).unwrap()))
        .collect();
    checksum += best_arm_monte_carlo(&posteriors, MC_DRAWS, seed).unwrap().prob_best[0];

    // Metrics 1..5: continuous.
    for metric in &e.continuous {
        let merged: Vec<SampleStats> = metric.iter().map(|p| p.iter().copied().sum()).collect();
        let summaries: Vec<Summary> = merged.iter().map(|s| s.summary().unwrap()).collect();
        let mut p_values = Vec::with_capacity(ARMS - 1);
        for arm in 1..ARMS {
            let n_total = summaries[0].n() + summaries[arm].n();
            p_values.push(compare(&summaries[0], &summaries[arm], n_total));
            let strat = stratified_difference(&metric[0], &metric[arm], &e.period_units).unwrap();
            black_box(strat.ci_t(ALPHA).unwrap());
        }
        checksum += holm(&p_values).unwrap().iter().sum::<f64>();
        let posteriors: Vec<Posterior> =
            summaries.iter().map(|s| Posterior::Gaussian(GaussianPosterior::from_summary(s, None).unwrap())).collect();
        checksum += best_arm_monte_carlo(&posteriors, MC_DRAWS, seed).unwrap().prob_best[0];
    }

    // SRM against equal weights.
    let counts: Vec<u64> = e.conversions.iter().map(|p| p.iter().map(|s| s.n()).sum()).collect();
    checksum += srm_test(&counts, &[1.0; ARMS]).unwrap().p_value.p;
    checksum
}

fn bench_observe(c: &mut Criterion) {
    let mut g = c.benchmark_group("observe");
    g.bench_function("sample_stats", |b| {
        let s = SampleStats::from_values(&[1.0, 2.0, 3.0]).unwrap();
        b.iter(|| black_box(s).observe(black_box(4.5)).unwrap())
    });
    g.bench_function("proportion_stats", |b| {
        let s = ProportionStats::new(10, 3).unwrap();
        b.iter(|| black_box(s).observe(black_box(true)))
    });
    g.bench_function("weighted_stats", |b| {
        let s = WeightedStats::EMPTY.observe(1.0, 0.3).unwrap();
        b.iter(|| black_box(s).observe(black_box(2.0), black_box(0.25)).unwrap())
    });
    g.finish();
}

fn bench_analysis(c: &mut Criterion) {
    let e = experiment();
    c.bench_function("full_analysis_10_arms_5_metrics_100_periods", |b| {
        b.iter(|| analyse(black_box(&e), black_box(7)))
    });
}

criterion_group!(benches, bench_observe, bench_analysis);
criterion_main!(benches);
