//! Linear contextual policies: linear Thompson sampling (`lin_ts`) and
//! LinUCB (`lin_ucb`), both on a disjoint ridge-regression model per arm.
//!
//! Model (Li, Chu, Langford & Schapire, "A Contextual-Bandit Approach to
//! Personalized News Article Recommendation", WWW 2010, §3.1, the disjoint
//! model): the expected reward of arm `a` for context `x` (with a constant 1
//! appended when `intercept` is on) is `x·theta_a`. Each arm keeps
//!
//! - `A_a = lambda I + sum x xᵀ` and `b_a = sum r x` over the observations
//!   of that arm, and the ridge estimate `theta_a = A_a⁻¹ b_a`;
//! - `A_a⁻¹`, updated per observation by the Sherman–Morrison formula
//!   (Sherman & Morrison, Ann. Math. Statist. 1950; Golub & Van Loan,
//!   "Matrix Computations", 4th ed., §2.1.4):
//!   `(A + x xᵀ)⁻¹ = A⁻¹ - (A⁻¹x)(A⁻¹x)ᵀ / (1 + xᵀA⁻¹x)`,
//!   so an update costs O(d²) instead of O(d³). Every [`REFRESH_EVERY`]
//!   observations of an arm, `A⁻¹` is recomputed from `A` by Cholesky so
//!   rounding errors of the rank-1 updates cannot accumulate without bound.
//!
//! Exploration turns the model into a PMF over the eligible arms, then the
//! floor is mixed in by [`explore::restrict_and_floor`]:
//!
//! - **LinUCB** (Li et al. 2010, Algorithm 1): score
//!   `x·theta_a + alpha sqrt(xᵀ A_a⁻¹ x)`; the arm(s) with the largest score
//!   share the mass equally.
//! - **Linear Thompson sampling** (Agrawal & Goyal, "Thompson Sampling for
//!   Contextual Bandits with Linear Payoffs", ICML 2013, Algorithm 1):
//!   `theta~_a ~ N(theta_a, v² A_a⁻¹)` and the arm with the largest
//!   `x·theta~_a` is played. For one context, `x·theta~_a` is exactly
//!   `N(x·theta_a, v² xᵀA_a⁻¹x)` (a linear map of a Gaussian), and the arms'
//!   posteriors are independent, so the probability that arm `a` is played
//!   is `P(a = argmax_i s_i)` with independent univariate normals `s_i`. It
//!   is estimated with `draws` seeded Monte Carlo draws
//!   `w_a = (1/D) sum_d 1[a = argmax_i s_i^(d)]` (exact ties share the
//!   draw's unit of mass, as in
//!   [`thompson::prob_best`](super::thompson::prob_best)), which needs no
//!   d-dimensional sampling and no Cholesky factor of `A⁻¹` per decision.
//!   The draws come from `SmallRng::seed_from_u64(seed)` (Xoshiro256++ on
//!   64-bit targets: several times cheaper than `StdRng`, and per-request
//!   draws need speed, not cryptographic strength), so the PMF is a pure
//!   function of the state, the context and the seed for a given `rand`
//!   version and word size.
//!   The seed is a hash handed in by the caller (per request), so the PMF
//!   that is logged is exactly the one the arm is drawn from, and the same
//!   request gives the same PMF.
//!
//! The state ([`LinearState`]) is serializable for policy snapshots: per arm
//! the observation count, `A`, `A⁻¹` and `b` (`theta` is derived on load).

use rand::{rngs::SmallRng, Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::{explore, PolicyError};

/// Ridge prior precision `lambda` when the spec does not say.
pub const DEFAULT_LAMBDA: f64 = 1.0;
/// Exploration scale `v` of linear Thompson sampling when the spec does not say.
pub const DEFAULT_V: f64 = 0.2;
/// LinUCB's `alpha` when the spec does not say.
pub const DEFAULT_ALPHA: f64 = 0.5;
/// Monte Carlo draws per decision of linear Thompson sampling when the spec does not say.
pub const DEFAULT_LIN_TS_DRAWS: u32 = 64;
/// Largest number of Monte Carlo draws per decision.
pub const MAX_LIN_TS_DRAWS: u32 = 10_000;
/// Largest declared feature dimension (an arm's state is O(d²)).
pub const MAX_FEATURES: usize = 1_024;
/// `A⁻¹` of an arm is recomputed from `A` by Cholesky every this many observations.
pub const REFRESH_EVERY: u64 = 1_024;

/// How a linear model's predictions become a PMF.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Exploration {
    /// Linear Thompson sampling with exploration scale `v` and `draws` Monte Carlo draws.
    Thompson { v: f64, draws: u32 },
    /// LinUCB with confidence width `alpha`.
    Ucb { alpha: f64 },
}

/// `features` in 1..=[`MAX_FEATURES`], `lambda` finite and > 0.
pub fn validate_model(features: usize, lambda: f64) -> Result<(), PolicyError> {
    if !(1..=MAX_FEATURES).contains(&features) {
        return Err(PolicyError::param(
            "features",
            format!("the context's feature dimension must be declared, between 1 and {MAX_FEATURES}; got {features}"),
        ));
    }
    if !(lambda.is_finite() && lambda > 0.0) {
        return Err(PolicyError::param("lambda", format!("must be a finite number > 0, got {lambda}")));
    }
    Ok(())
}

/// `v` finite and > 0, `draws` in 1..=[`MAX_LIN_TS_DRAWS`] for Thompson;
/// `alpha` finite and >= 0 for UCB.
pub fn validate_exploration(exploration: Exploration) -> Result<(), PolicyError> {
    match exploration {
        Exploration::Thompson { v, draws } => {
            if !(v.is_finite() && v > 0.0) {
                return Err(PolicyError::param("v", format!("must be a finite number > 0, got {v}")));
            }
            if !(1..=MAX_LIN_TS_DRAWS).contains(&draws) {
                return Err(PolicyError::param(
                    "draws",
                    format!("must be between 1 and {MAX_LIN_TS_DRAWS}, got {draws}"),
                ));
            }
        }
        Exploration::Ucb { alpha } => {
            if !(alpha.is_finite() && alpha >= 0.0) {
                return Err(PolicyError::param("alpha", format!("must be a finite number >= 0, got {alpha}")));
            }
        }
    }
    Ok(())
}

/// One arm's ridge regression.
#[derive(Debug, Clone, PartialEq)]
struct LinearArm {
    n: u64,
    /// `A = lambda I + sum x xᵀ`, row-major d × d.
    a: Vec<f64>,
    /// `A⁻¹`, row-major d × d (kept exactly symmetric).
    a_inv: Vec<f64>,
    /// `b = sum r x`.
    b: Vec<f64>,
    /// `theta = A⁻¹ b` (derived).
    theta: Vec<f64>,
}

/// The learned state of a linear policy: one ridge regression per arm, in
/// the order of the experiment's arms. Serializes as
/// `{features, intercept, lambda, arms: [{n, a, a_inv, b}]}` (matrices
/// row-major, flat); deserializing checks the shapes and that every number
/// is finite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LinearStateRepr", into = "LinearStateRepr")]
pub struct LinearState {
    features: usize,
    intercept: bool,
    lambda: f64,
    arms: Vec<LinearArm>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinearStateRepr {
    features: usize,
    intercept: bool,
    lambda: f64,
    arms: Vec<LinearArmRepr>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinearArmRepr {
    n: u64,
    a: Vec<f64>,
    a_inv: Vec<f64>,
    b: Vec<f64>,
}

impl From<LinearState> for LinearStateRepr {
    fn from(s: LinearState) -> Self {
        LinearStateRepr {
            features: s.features,
            intercept: s.intercept,
            lambda: s.lambda,
            arms: s.arms.into_iter().map(|a| LinearArmRepr { n: a.n, a: a.a, a_inv: a.a_inv, b: a.b }).collect(),
        }
    }
}

impl TryFrom<LinearStateRepr> for LinearState {
    type Error = PolicyError;

    fn try_from(r: LinearStateRepr) -> Result<Self, PolicyError> {
        validate_model(r.features, r.lambda)?;
        if r.arms.is_empty() {
            return Err(PolicyError::NoArms);
        }
        let d = r.features + usize::from(r.intercept);
        let mut arms = Vec::with_capacity(r.arms.len());
        for (i, arm) in r.arms.into_iter().enumerate() {
            let bad = |reason: String| PolicyError::InvalidState { reason: format!("arm {i}: {reason}") };
            if arm.a.len() != d * d || arm.a_inv.len() != d * d || arm.b.len() != d {
                return Err(bad(format!(
                    "expected a and a_inv of {} entries and b of {d} for dimension {d}, got {}, {} and {}",
                    d * d,
                    arm.a.len(),
                    arm.a_inv.len(),
                    arm.b.len()
                )));
            }
            if !arm.a.iter().chain(&arm.a_inv).chain(&arm.b).all(|v| v.is_finite()) {
                return Err(bad("every entry of a, a_inv and b must be finite".into()));
            }
            let theta = mat_vec(&arm.a_inv, &arm.b, d);
            arms.push(LinearArm { n: arm.n, a: arm.a, a_inv: arm.a_inv, b: arm.b, theta });
        }
        Ok(LinearState { features: r.features, intercept: r.intercept, lambda: r.lambda, arms })
    }
}

impl LinearState {
    /// The prior state: `A = lambda I`, `A⁻¹ = I / lambda`, `b = 0` for every arm.
    /// Errors: no arm, `features` outside 1..=[`MAX_FEATURES`], `lambda` not > 0.
    pub fn new(arms: usize, features: usize, intercept: bool, lambda: f64) -> Result<Self, PolicyError> {
        if arms == 0 {
            return Err(PolicyError::NoArms);
        }
        validate_model(features, lambda)?;
        let d = features + usize::from(intercept);
        let mut a = vec![0.0; d * d];
        let mut a_inv = vec![0.0; d * d];
        for i in 0..d {
            a[i * d + i] = lambda;
            a_inv[i * d + i] = 1.0 / lambda;
        }
        let arm = LinearArm { n: 0, a, a_inv, b: vec![0.0; d], theta: vec![0.0; d] };
        Ok(LinearState { features, intercept, lambda, arms: vec![arm; arms] })
    }

    /// Declared context dimension (without the intercept).
    pub fn features(&self) -> usize {
        self.features
    }

    /// Model dimension: `features`, plus one with the intercept.
    pub fn dim(&self) -> usize {
        self.features + usize::from(self.intercept)
    }

    /// Number of arms.
    pub fn arms(&self) -> usize {
        self.arms.len()
    }

    /// Ridge prior precision.
    pub fn lambda(&self) -> f64 {
        self.lambda
    }

    /// Observations of `arm` so far (`None` for an unknown arm).
    pub fn observations(&self, arm: usize) -> Option<u64> {
        self.arms.get(arm).map(|a| a.n)
    }

    /// The ridge estimate `theta = A⁻¹ b` of `arm` (intercept last).
    pub fn theta(&self, arm: usize) -> Option<&[f64]> {
        self.arms.get(arm).map(|a| a.theta.as_slice())
    }

    /// `A⁻¹` of `arm`, row-major.
    pub fn a_inv(&self, arm: usize) -> Option<&[f64]> {
        self.arms.get(arm).map(|a| a.a_inv.as_slice())
    }

    /// Checks the context and writes it, with the intercept's 1 appended, into `out`.
    fn augment(&self, x: &[f64], out: &mut Vec<f64>) -> Result<(), PolicyError> {
        if x.len() != self.features {
            return Err(PolicyError::InvalidContext {
                reason: format!("expected {} features, got {}", self.features, x.len()),
            });
        }
        if let Some((i, v)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(PolicyError::InvalidContext { reason: format!("feature {i} is {v}; features must be finite") });
        }
        out.clear();
        out.extend_from_slice(x);
        if self.intercept {
            out.push(1.0);
        }
        Ok(())
    }

    fn arm(&self, arm: usize) -> Result<&LinearArm, PolicyError> {
        self.arms.get(arm).ok_or_else(|| PolicyError::InvalidContext {
            reason: format!("arm index {arm} out of range for {} arms", self.arms.len()),
        })
    }

    /// Learns from one observation: `reward` for `arm` in context `x`.
    /// O(d²): `A += x xᵀ`, `b += r x`, Sherman–Morrison on `A⁻¹`, `theta = A⁻¹ b`.
    pub fn observe(&mut self, arm: usize, x: &[f64], reward: f64) -> Result<(), PolicyError> {
        let mut z = Vec::with_capacity(self.dim());
        self.augment(x, &mut z)?;
        if !reward.is_finite() {
            return Err(PolicyError::InvalidFeedback { arm: arm.to_string(), reason: format!("reward is {reward}") });
        }
        self.arm(arm)?;
        let d = z.len();
        let st = &mut self.arms[arm];
        for (i, zi) in z.iter().enumerate() {
            for (aij, zj) in st.a[i * d..(i + 1) * d].iter_mut().zip(&z) {
                *aij += zi * zj;
            }
        }
        for (bi, zi) in st.b.iter_mut().zip(&z) {
            *bi += reward * zi;
        }
        st.n += 1;
        let refreshed = st.n % REFRESH_EVERY == 0 && refresh_inverse(&st.a, &mut st.a_inv, d);
        if !refreshed {
            // u = A⁻¹ z; A⁻¹ -= u uᵀ / (1 + zᵀu). `u_i u_j == u_j u_i` in floating
            // point, so an exactly symmetric A⁻¹ stays exactly symmetric.
            let u = mat_vec(&st.a_inv, &z, d);
            let denom = 1.0 + dot(&z, &u);
            for (i, ui) in u.iter().enumerate() {
                let scale = ui / denom;
                for (cij, uj) in st.a_inv[i * d..(i + 1) * d].iter_mut().zip(&u) {
                    *cij -= scale * uj;
                }
            }
        }
        st.theta = mat_vec(&st.a_inv, &st.b, d);
        Ok(())
    }

    /// Predicted reward `x·theta` and `xᵀA⁻¹x` (clamped at 0) of `arm` for an
    /// augmented context `z`.
    fn predict_augmented(&self, arm: &LinearArm, z: &[f64]) -> (f64, f64) {
        let d = z.len();
        let mut quad = 0.0;
        for (i, zi) in z.iter().enumerate() {
            quad += zi * dot(&arm.a_inv[i * d..(i + 1) * d], z);
        }
        (dot(&arm.theta, z), quad.max(0.0))
    }

    /// Predicted reward `x·theta_a` and its posterior variance factor
    /// `xᵀA_a⁻¹x` for `arm` in context `x`.
    pub fn predict(&self, arm: usize, x: &[f64]) -> Result<(f64, f64), PolicyError> {
        let mut z = Vec::with_capacity(self.dim());
        self.augment(x, &mut z)?;
        Ok(self.predict_augmented(self.arm(arm)?, &z))
    }

    /// The PMF over all arms for context `x` (0 for ineligible arms), after
    /// mixing in the floor `min_propensity` (see the module docs).
    /// `seed` seeds the Thompson Monte Carlo draws (unused by UCB); pass a
    /// hash of the request, never a counter.
    ///
    /// Errors: `eligible` of the wrong length, a context of the wrong
    /// dimension or with a non-finite entry, no eligible arm, a floor too
    /// high for the eligible arms, invalid exploration parameters.
    pub fn pmf(
        &self,
        exploration: Exploration,
        x: &[f64],
        eligible: &[bool],
        min_propensity: f64,
        seed: u64,
    ) -> Result<Vec<f64>, PolicyError> {
        validate_exploration(exploration)?;
        if eligible.len() != self.arms.len() {
            return Err(PolicyError::ArmCountMismatch {
                what: "eligible".into(),
                expected: self.arms.len(),
                got: eligible.len(),
            });
        }
        let mut z = Vec::with_capacity(self.dim());
        self.augment(x, &mut z)?;
        let idx: Vec<usize> = (0..self.arms.len()).filter(|&i| eligible[i]).collect();
        if idx.is_empty() {
            return Err(PolicyError::NoEligibleArm);
        }
        let predictions: Vec<(f64, f64)> = idx.iter().map(|&i| self.predict_augmented(&self.arms[i], &z)).collect();
        let mass = match exploration {
            Exploration::Ucb { alpha } => {
                let scores: Vec<f64> = predictions.iter().map(|&(m, q)| m + alpha * q.sqrt()).collect();
                argmax_split(&scores)
            }
            Exploration::Thompson { v, draws } => {
                let sds: Vec<(f64, f64)> = predictions.iter().map(|&(m, q)| (m, v * q.sqrt())).collect();
                normal_prob_best(&sds, draws, seed)
            }
        };
        let mut pmf = vec![0.0; self.arms.len()];
        for (&i, p) in idx.iter().zip(mass) {
            pmf[i] = p;
        }
        explore::restrict_and_floor(&pmf, eligible, min_propensity)
    }
}

/// Monte Carlo estimate of `P(arm i has the largest draw)` for independent
/// `N(mean_i, sd_i²)` given as `(mean_i, sd_i)`: `draws` rounds, each
/// sampling every arm in order as `mean + sd z` with `z` standard normal from
/// `SmallRng::seed_from_u64(seed)`; exact ties share the round's unit of
/// mass. Sums to 1.
fn normal_prob_best(params: &[(f64, f64)], draws: u32, seed: u64) -> Vec<f64> {
    let k = params.len();
    if k <= 1 || draws == 0 {
        return vec![1.0 / k.max(1) as f64; k];
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut wins = vec![0.0f64; k];
    let mut tied: Vec<usize> = Vec::with_capacity(k);
    for _ in 0..draws {
        let mut best = f64::NEG_INFINITY;
        tied.clear();
        for (i, &(mean, sd)) in params.iter().enumerate() {
            let z: f64 = rng.sample(StandardNormal);
            let s = mean + sd * z;
            if s > best {
                best = s;
                tied.clear();
                tied.push(i);
            } else if s == best {
                tied.push(i);
            }
        }
        let share = 1.0 / tied.len().max(1) as f64;
        for &i in &tied {
            wins[i] += share;
        }
    }
    let total: f64 = wins.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return vec![1.0 / k as f64; k];
    }
    wins.iter().map(|w| w / total).collect()
}

/// Equal shares for the entries equal to the maximum, 0 elsewhere.
fn argmax_split(scores: &[f64]) -> Vec<f64> {
    let best = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let ties = scores.iter().filter(|s| **s == best).count();
    if ties == 0 {
        // Only possible with NaN scores, which finite states cannot produce.
        return vec![1.0 / scores.len() as f64; scores.len()];
    }
    let share = 1.0 / ties as f64;
    scores.iter().map(|s| if *s == best { share } else { 0.0 }).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `M v` for a row-major d × d `M`.
fn mat_vec(m: &[f64], v: &[f64], d: usize) -> Vec<f64> {
    (0..d).map(|i| dot(&m[i * d..(i + 1) * d], v)).collect()
}

/// Lower Cholesky factor `L` (row-major) of a symmetric positive definite
/// `a`, `a = L Lᵀ` (Golub & Van Loan, §4.2.5); `None` if `a` is not
/// numerically positive definite.
pub fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for j in 0..d {
        let s = a[j * d + j] - l[j * d..j * d + j].iter().map(|v| v * v).sum::<f64>();
        if !(s.is_finite() && s > 0.0) {
            return None;
        }
        let ljj = s.sqrt();
        l[j * d + j] = ljj;
        for i in j + 1..d {
            let s = a[i * d + j] - dot(&l[i * d..i * d + j], &l[j * d..j * d + j]);
            l[i * d + j] = s / ljj;
        }
    }
    Some(l)
}

/// Solves `L Lᵀ x = rhs` by forward then backward substitution.
pub fn cholesky_solve(l: &[f64], d: usize, rhs: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; d];
    for i in 0..d {
        y[i] = (rhs[i] - dot(&l[i * d..i * d + i], &y[..i])) / l[i * d + i];
    }
    let mut x = vec![0.0; d];
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|k| l[k * d + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * d + i];
    }
    x
}

/// Overwrites `a_inv` with the inverse of `a` computed by Cholesky
/// (symmetrised); returns false, leaving `a_inv` alone, if `a` is not
/// numerically positive definite.
fn refresh_inverse(a: &[f64], a_inv: &mut [f64], d: usize) -> bool {
    let Some(l) = cholesky(a, d) else {
        return false;
    };
    let mut e = vec![0.0; d];
    let mut inv = vec![0.0; d * d];
    for j in 0..d {
        e.iter_mut().for_each(|v| *v = 0.0);
        e[j] = 1.0;
        let col = cholesky_solve(&l, d, &e);
        for (i, v) in col.into_iter().enumerate() {
            inv[i * d + j] = v;
        }
    }
    for i in 0..d {
        for j in 0..d {
            a_inv[i * d + j] = 0.5 * (inv[i * d + j] + inv[j * d + i]);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use rand_distr::StandardNormal;

    const TS: Exploration = Exploration::Thompson { v: DEFAULT_V, draws: DEFAULT_LIN_TS_DRAWS };
    const UCB: Exploration = Exploration::Ucb { alpha: DEFAULT_ALPHA };

    /// Batch ridge solution `(lambda I + XᵀX)⁻¹ Xᵀr` by Cholesky.
    fn batch_ridge(xs: &[Vec<f64>], rs: &[f64], lambda: f64) -> Vec<f64> {
        let d = xs.first().map_or(0, Vec::len);
        let mut a = vec![0.0; d * d];
        let mut b = vec![0.0; d];
        for i in 0..d {
            a[i * d + i] = lambda;
        }
        for (x, r) in xs.iter().zip(rs) {
            for i in 0..d {
                b[i] += r * x[i];
                for j in 0..d {
                    a[i * d + j] += x[i] * x[j];
                }
            }
        }
        let l = cholesky(&a, d).unwrap();
        cholesky_solve(&l, d, &b)
    }

    fn random_context(rng: &mut StdRng, d: usize) -> Vec<f64> {
        (0..d).map(|_| rng.sample::<f64, _>(StandardNormal)).collect()
    }

    fn trained(arms: usize, features: usize, n: usize, seed: u64) -> LinearState {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut s = LinearState::new(arms, features, true, 1.0).unwrap();
        for t in 0..n {
            let x = random_context(&mut rng, features);
            let arm = t % arms;
            let r = if rng.random::<f64>() < 0.3 + 0.05 * arm as f64 + 0.1 * x[0].tanh() { 1.0 } else { 0.0 };
            s.observe(arm, &x, r).unwrap();
        }
        s
    }

    #[test]
    fn the_prior_is_lambda_identity() {
        let s = LinearState::new(2, 2, true, 4.0).unwrap();
        assert_eq!(s.dim(), 3);
        assert_eq!(s.a_inv(1).unwrap(), &[0.25, 0.0, 0.0, 0.0, 0.25, 0.0, 0.0, 0.0, 0.25]);
        assert_eq!(s.theta(0).unwrap(), &[0.0; 3]);
        // xᵀ A⁻¹ x = |(1, 2, 1)|² / 4.
        assert_eq!(s.predict(0, &[1.0, 2.0]).unwrap(), (0.0, 1.5));
    }

    #[test]
    fn one_observation_matches_the_closed_form() {
        // d = 1, no intercept, lambda = 1: A = 1 + x², theta = r x / (1 + x²).
        let mut s = LinearState::new(1, 1, false, 1.0).unwrap();
        s.observe(0, &[2.0], 1.0).unwrap();
        assert!((s.theta(0).unwrap()[0] - 0.4).abs() < 1e-15);
        assert!((s.a_inv(0).unwrap()[0] - 0.2).abs() < 1e-15);
        assert_eq!(s.observations(0), Some(1));
    }

    #[test]
    fn refresh_keeps_the_inverse_exact_over_many_updates() {
        let s = trained(2, 5, 3 * REFRESH_EVERY as usize + 17, 3);
        let d = s.dim();
        for arm in 0..2 {
            let st = &s.arms[arm];
            // A A⁻¹ = I.
            for i in 0..d {
                for j in 0..d {
                    let v: f64 = (0..d).map(|k| st.a[i * d + k] * st.a_inv[k * d + j]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((v - want).abs() < 1e-9, "arm {arm} ({i},{j}): {v}");
                }
            }
        }
    }

    #[test]
    fn ucb_prefers_the_better_arm_once_learned_and_splits_ties() {
        let s = LinearState::new(3, 2, true, 1.0).unwrap();
        let p = s.pmf(UCB, &[0.5, -1.0], &[true; 3], 0.0, 1).unwrap();
        assert_eq!(p, vec![1.0 / 3.0; 3]);
        let p = s.pmf(UCB, &[0.5, -1.0], &[true, false, true], 0.0, 1).unwrap();
        assert_eq!(p, vec![0.5, 0.0, 0.5]);
        let mut s = s;
        for _ in 0..200 {
            s.observe(0, &[0.5, -1.0], 0.1).unwrap();
            s.observe(1, &[0.5, -1.0], 0.9).unwrap();
            s.observe(2, &[0.5, -1.0], 0.2).unwrap();
        }
        let p = s.pmf(UCB, &[0.5, -1.0], &[true; 3], 0.05, 1).unwrap();
        let want = [0.05, 0.9, 0.05];
        assert!(p.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{p:?}");
    }

    #[test]
    fn thompson_concentrates_on_the_best_arm_and_is_uniform_a_priori() {
        let mut s = LinearState::new(3, 1, true, 1.0).unwrap();
        // Prior: identical posteriors; Monte Carlo with many draws is close to uniform.
        let p = s.pmf(Exploration::Thompson { v: 1.0, draws: 10_000 }, &[1.0], &[true; 3], 0.0, 5).unwrap();
        assert!(p.iter().all(|x| (x - 1.0 / 3.0).abs() < 0.03), "{p:?}");
        // Context decides: arm 0 pays in x = 1, arm 1 in x = -1.
        for _ in 0..300 {
            s.observe(0, &[1.0], 1.0).unwrap();
            s.observe(0, &[-1.0], 0.0).unwrap();
            s.observe(1, &[1.0], 0.0).unwrap();
            s.observe(1, &[-1.0], 1.0).unwrap();
            s.observe(2, &[1.0], 0.3).unwrap();
            s.observe(2, &[-1.0], 0.3).unwrap();
        }
        let p = s.pmf(TS, &[1.0], &[true; 3], 0.01, 5).unwrap();
        assert!(p[0] > 0.95, "{p:?}");
        let p = s.pmf(TS, &[-1.0], &[true; 3], 0.01, 5).unwrap();
        assert!(p[1] > 0.95, "{p:?}");
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let mut s = LinearState::new(2, 3, true, 1.0).unwrap();
        assert_eq!(s.observe(0, &[1.0, 2.0], 1.0).unwrap_err().code(), "invalid_context");
        assert_eq!(s.observe(0, &[1.0, f64::NAN, 2.0], 1.0).unwrap_err().code(), "invalid_context");
        assert_eq!(s.observe(0, &[1.0, 1.0, 2.0], f64::INFINITY).unwrap_err().code(), "invalid_feedback");
        assert_eq!(s.observe(2, &[1.0, 1.0, 2.0], 1.0).unwrap_err().code(), "invalid_context");
        let x = [0.0; 3];
        assert_eq!(s.pmf(TS, &x, &[true], 0.0, 1).unwrap_err().code(), "arm_count_mismatch");
        assert_eq!(s.pmf(TS, &x, &[false, false], 0.0, 1).unwrap_err(), PolicyError::NoEligibleArm);
        assert_eq!(s.pmf(TS, &x, &[true, true], 0.6, 1).unwrap_err().code(), "min_propensity_too_high");
        let bad = Exploration::Thompson { v: 0.0, draws: 64 };
        assert!(
            matches!(s.pmf(bad, &x, &[true; 2], 0.0, 1), Err(PolicyError::InvalidParameter { field, .. }) if field == "v")
        );
        let bad = Exploration::Ucb { alpha: -1.0 };
        assert!(
            matches!(s.pmf(bad, &x, &[true; 2], 0.0, 1), Err(PolicyError::InvalidParameter { field, .. }) if field == "alpha")
        );
        assert_eq!(LinearState::new(0, 3, true, 1.0).unwrap_err(), PolicyError::NoArms);
        for (features, lambda, field) in [(0, 1.0, "features"), (MAX_FEATURES + 1, 1.0, "features"), (3, 0.0, "lambda")]
        {
            let err = LinearState::new(2, features, true, lambda).unwrap_err();
            assert!(matches!(err, PolicyError::InvalidParameter { field: ref f, .. } if f == field), "{err:?}");
        }
    }

    #[test]
    fn state_round_trips_through_json_and_rejects_bad_shapes() {
        let s = trained(3, 4, 50, 9);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["arms"][0]["a"].as_array().unwrap().len(), 25);
        assert_eq!(json["features"], 4);
        let back: LinearState = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, s);
        let mut bad = json.clone();
        bad["arms"][1]["b"] = serde_json::json!([1.0, 2.0]);
        let err = serde_json::from_value::<LinearState>(bad).unwrap_err().to_string();
        assert!(err.contains("arm 1"), "{err}");
        let mut bad = json;
        bad["lambda"] = serde_json::json!(-1.0);
        let err = serde_json::from_value::<LinearState>(bad).unwrap_err().to_string();
        assert!(err.contains("lambda"), "{err}");
    }

    #[test]
    fn normal_prob_best_matches_the_exact_two_arm_probability_and_splits_ties() {
        // P(N(0.1, 1) > N(0, 1)) = Phi(0.1 / sqrt 2) = 0.528186.
        let p = normal_prob_best(&[(0.1, 1.0), (0.0, 1.0)], 200_000, 17);
        assert!((p[0] - 0.528_186).abs() < 0.005, "{p:?}");
        // Zero sds: the means tie exactly in every draw.
        let p = normal_prob_best(&[(0.3, 0.0), (0.3, 0.0), (0.1, 0.0)], 10, 1);
        assert_eq!(p, vec![0.5, 0.5, 0.0]);
        assert_eq!(normal_prob_best(&[(1.0, 1.0)], 64, 1), vec![1.0]);
    }

    #[test]
    fn cholesky_solves_a_small_system() {
        // [[4, 2], [2, 3]] x = [2, 1] -> x = [0.5, 0].
        let l = cholesky(&[4.0, 2.0, 2.0, 3.0], 2).unwrap();
        let x = cholesky_solve(&l, 2, &[2.0, 1.0]);
        assert!((x[0] - 0.5).abs() < 1e-15 && x[1].abs() < 1e-15, "{x:?}");
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    fn observations(d: usize) -> impl Strategy<Value = Vec<(Vec<f64>, f64)>> {
        proptest::collection::vec((proptest::collection::vec(-3.0f64..3.0, d), -2.0f64..2.0), 0..80)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn incremental_updates_equal_the_batch_ridge_solution(
            obs in (1usize..7).prop_flat_map(observations),
            lambda in 0.1f64..10.0,
            intercept in any::<bool>(),
        ) {
            let d = obs.first().map_or(3, |(x, _)| x.len());
            let mut s = LinearState::new(1, d, intercept, lambda).unwrap();
            let mut xs = Vec::new();
            let mut rs = Vec::new();
            for (x, r) in &obs {
                s.observe(0, x, *r).unwrap();
                let mut z = x.clone();
                if intercept {
                    z.push(1.0);
                }
                xs.push(z);
                rs.push(*r);
            }
            let dim = s.dim();
            let want = if xs.is_empty() { vec![0.0; dim] } else { batch_ridge(&xs, &rs, lambda) };
            for (got, want) in s.theta(0).unwrap().iter().zip(&want) {
                prop_assert!((got - want).abs() < 1e-8 * (1.0 + want.abs()), "{got} vs {want}");
            }
        }

        #[test]
        fn pmfs_sum_to_one_respect_the_floor_and_are_reproducible(
            arms in 1usize..8,
            features in 1usize..6,
            n in 0usize..60,
            data_seed in any::<u64>(),
            seed in any::<u64>(),
            ucb in any::<bool>(),
            floor_share in 0.0f64..1.0,
            eligible_mask in any::<u8>(),
        ) {
            let s = trained(arms, features, n, data_seed);
            let mut eligible: Vec<bool> = (0..arms).map(|i| eligible_mask & (1 << i) != 0).collect();
            if !eligible.iter().any(|e| *e) {
                eligible[0] = true;
            }
            let k = eligible.iter().filter(|e| **e).count();
            let floor = floor_share / k as f64;
            let exploration = if ucb { UCB } else { TS };
            let mut rng = StdRng::seed_from_u64(seed);
            let x = random_context(&mut rng, features);
            let p = s.pmf(exploration, &x, &eligible, floor, seed).unwrap();
            prop_assert_eq!(p.len(), arms);
            prop_assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            for (pi, e) in p.iter().zip(&eligible) {
                if *e {
                    prop_assert!(*pi >= floor - 1e-12, "{} < {}", pi, floor);
                } else {
                    prop_assert_eq!(*pi, 0.0);
                }
            }
            prop_assert_eq!(s.pmf(exploration, &x, &eligible, floor, seed).unwrap(), p);
        }
    }
}
