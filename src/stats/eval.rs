//! `strategist stats eval`: runs the engine on a file of reference cases
//! (the format of `shared/reference/stats_cases.json`: `cases`, each with
//! `id`, `test`, `input` and optionally `expected`) and returns, per case,
//! `{"id", <every key of expected with the engine's value>}` (`null` where
//! the engine reports "cannot compute"). Results are computed from the
//! inputs only; keys are matched by name, nested objects and arrays
//! recursively. A case whose input is malformed or whose `test` is unknown
//! gets an `"error": {"reason", "message"}` entry instead of failing the run.

use super::bayes::{
    compare_beta, integration_interval, prob_b_beats_a_closed_form, prob_b_beats_a_quadrature, BetaPosterior, Method,
};
use super::error::{Reason, StatsError, StatsResult};
use super::frequentist::{
    absolute_difference, relative_difference, two_proportion_ztest, welch_t_test, DiffEstimate, Interval, PValue,
};
use super::multiple::{benjamini_hochberg, holm, rejected};
use super::sequential::{confidence_sequence, msprt, msprt_ci, msprt_sequence};
use super::special::student_t_quantile;
use super::srm::srm_test;
use super::suff::{Moments, SampleStats, Summary};
use serde_json::{json, Map, Value};
use std::path::Path;

/// Evaluates every case of a reference document; see the module docs.
pub fn eval_cases(doc: &Value) -> Result<Value, StatsError> {
    let cases = doc
        .get("cases")
        .and_then(Value::as_array)
        .ok_or_else(|| StatsError::invalid("cases", "the document has no `cases` array"))?;
    Ok(Value::Array(cases.iter().map(eval_case).collect()))
}

/// Reads a JSON reference file and evaluates it with [`eval_cases`].
pub fn eval_file(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let doc: Value =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", path.display()))?;
    Ok(eval_cases(&doc)?)
}

fn eval_case(case: &Value) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), case.get("id").cloned().unwrap_or(Value::Null));
    let expected = case.get("expected");
    match compute(case, expected) {
        Ok(full) => match project(&full, expected) {
            Value::Object(m) => out.extend(m),
            other => {
                out.insert("result".into(), other);
            }
        },
        Err(e) => {
            if let Some(Value::Object(exp)) = expected {
                for k in exp.keys() {
                    out.insert(k.clone(), Value::Null);
                }
            }
            out.insert("error".into(), json!({"reason": e.reason(), "message": e.to_string()}));
        }
    }
    Value::Object(out)
}

/// Keeps the keys (recursively) that `expected` names, in its order; a key
/// the engine does not produce is `null`. Without `expected`, everything.
fn project(computed: &Value, expected: Option<&Value>) -> Value {
    match (computed, expected) {
        (Value::Object(c), Some(Value::Object(e))) => Value::Object(
            e.iter()
                .map(|(k, ev)| {
                    let v = c.get(k).map_or(Value::Null, |cv| project(cv, Some(ev)));
                    (k.clone(), v)
                })
                .collect(),
        ),
        (Value::Array(c), Some(Value::Array(e))) => {
            Value::Array(c.iter().enumerate().map(|(i, cv)| project(cv, e.get(i))).collect())
        }
        (c, _) => c.clone(),
    }
}

// ---------------------------------------------------------------------------
// Input helpers
// ---------------------------------------------------------------------------

fn field<'a>(input: &'a Value, key: &str) -> StatsResult<&'a Value> {
    input.get(key).ok_or_else(|| StatsError::invalid(key, "missing from the case input"))
}

fn f64_of(v: &Value, key: &str) -> StatsResult<f64> {
    v.as_f64().ok_or_else(|| StatsError::invalid(key, format!("expected a number, got {v}")))
}

fn num_in(input: &Value, key: &str) -> StatsResult<f64> {
    f64_of(field(input, key)?, key)
}

fn num_or(input: &Value, key: &str, default: f64) -> StatsResult<f64> {
    match input.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => f64_of(v, key),
    }
}

fn count_of(v: &Value, key: &str) -> StatsResult<u64> {
    if let Some(u) = v.as_u64() {
        return Ok(u);
    }
    match v.as_f64() {
        Some(x) if x >= 0.0 && x.fract() == 0.0 && x < 2f64.powi(53) => Ok(x as u64),
        _ => Err(StatsError::invalid(key, format!("expected a count, got {v}"))),
    }
}

fn count_in(input: &Value, key: &str) -> StatsResult<u64> {
    count_of(field(input, key)?, key)
}

fn list_in<'a>(input: &'a Value, key: &str) -> StatsResult<&'a Vec<Value>> {
    field(input, key)?.as_array().ok_or_else(|| StatsError::invalid(key, "expected an array"))
}

fn summary_in(input: &Value, suffix: &str) -> StatsResult<Summary> {
    Summary::new(
        num_in(input, &format!("n_{suffix}"))?,
        num_in(input, &format!("mean_{suffix}"))?,
        num_in(input, &format!("var_{suffix}"))?,
    )
}

// ---------------------------------------------------------------------------
// Output helpers
// ---------------------------------------------------------------------------

fn num(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

fn num_r(x: &StatsResult<f64>) -> Value {
    x.as_ref().map_or(Value::Null, |v| num(*v))
}

fn p_r(p: &StatsResult<PValue>) -> (Value, Value) {
    match p {
        Ok(p) => (num(p.p), num(p.ln_p)),
        Err(_) => (Value::Null, Value::Null),
    }
}

fn interval_r(i: &StatsResult<Interval>) -> Value {
    match i {
        Ok(i) => json!([num(i.lower), num(i.upper)]),
        Err(_) => json!([null, null]),
    }
}

/// Keys of `expected` that start with `prefix`, with the rest of the key.
fn parametric_keys<'a>(expected: Option<&'a Value>, prefix: &str) -> Vec<(&'a str, &'a str)> {
    expected
        .and_then(Value::as_object)
        .map(|m| m.keys().filter_map(|k| k.strip_prefix(prefix).map(|rest| (k.as_str(), rest))).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Test kinds
// ---------------------------------------------------------------------------

fn compute(case: &Value, expected: Option<&Value>) -> StatsResult<Value> {
    let kind =
        case.get("test").and_then(Value::as_str).ok_or_else(|| StatsError::invalid("test", "missing test kind"))?;
    let input = case.get("input").unwrap_or(&Value::Null);
    match kind {
        "two_proportion_ztest" => eval_ztest(input),
        "welch_t_test" => eval_welch(input),
        "diff_ci" => eval_diff_ci(input, expected),
        "srm_chisquare" => eval_srm(input),
        "holm_bonferroni" => eval_holm(input, expected),
        "beta_prob_b_beats_a" => eval_beta(input),
        "msprt_snapshot" => eval_msprt(input),
        "msprt_sequential" => eval_msprt_sequential(input),
        "confidence_sequence" => eval_confidence_sequence(input),
        _ => Err(StatsError::cannot(Reason::UnsupportedTest)),
    }
}

fn eval_ztest(input: &Value) -> StatsResult<Value> {
    let r = two_proportion_ztest(
        count_in(input, "x_a")?,
        count_in(input, "n_a")?,
        count_in(input, "x_b")?,
        count_in(input, "n_b")?,
    )?;
    let (p, ln_p) = p_r(&r.p_value);
    Ok(json!({
        "p_a": num(r.p_a), "p_b": num(r.p_b), "p_pooled": num(r.p_pooled),
        "se_pooled": num(r.se_pooled), "z": num_r(&r.z), "p_value": p, "ln_p_value": ln_p,
    }))
}

fn eval_welch(input: &Value) -> StatsResult<Value> {
    let w = welch_t_test(&summary_in(input, "a")?, &summary_in(input, "b")?)?;
    let (p, ln_p) = p_r(&w.p_value);
    Ok(json!({
        "diff": num(w.diff), "t": num_r(&w.t), "df": num_r(&w.df), "se_diff": num(w.se_diff),
        "p_value": p, "ln_p_value": ln_p,
    }))
}

fn diff_json(d: &StatsResult<DiffEstimate>, alpha: f64) -> Value {
    let Ok(d) = d else {
        return json!({
            "point_estimate": null, "variance": null, "se": null,
            "ci95_t_welch": [null, null], "p_value_t_welch": null,
            "ci95_normal": [null, null], "p_value_normal": null,
        });
    };
    json!({
        "point_estimate": num(d.point),
        "variance": num(d.variance),
        "se": num(d.se()),
        "ci95_t_welch": interval_r(&d.ci_t(alpha)),
        "p_value_t_welch": p_r(&d.p_value_t()).0,
        "ci95_normal": interval_r(&d.ci_normal(alpha)),
        "p_value_normal": p_r(&d.p_value_normal()).0,
    })
}

fn eval_diff_ci(input: &Value, expected: Option<&Value>) -> StatsResult<Value> {
    let a = summary_in(input, "a")?;
    let b = summary_in(input, "b")?;
    let alpha = num_or(input, "alpha", 0.05)?;
    let abs = absolute_difference(&a, &b);
    let rel = relative_difference(&a, &b);
    let df = abs.as_ref().map_err(Clone::clone).and_then(|d| d.df.clone());
    let mut out = json!({
        "absolute": diff_json(&abs, alpha),
        "relative": diff_json(&rel, alpha),
        "welch_dof": num_r(&df),
    });
    let mut quantile_keys: Vec<(String, f64)> = Vec::new();
    for (key, rest) in parametric_keys(expected, "t_quantile_") {
        let q = rest.parse::<f64>().map_err(|_| StatsError::invalid(key, "cannot parse the quantile level"))?;
        quantile_keys.push((key.to_string(), q));
    }
    if expected.is_none() {
        quantile_keys.push((format!("t_quantile_{}", 1.0 - alpha / 2.0), 1.0 - alpha / 2.0));
    }
    for (key, q) in quantile_keys {
        let t = df.clone().and_then(|df| student_t_quantile(q, df));
        out[key.as_str()] = num_r(&t);
    }
    Ok(out)
}

fn eval_srm(input: &Value) -> StatsResult<Value> {
    let counts = list_in(input, "counts")?.iter().map(|v| count_of(v, "counts")).collect::<StatsResult<Vec<_>>>()?;
    let weights = list_in(input, "weights")?.iter().map(|v| f64_of(v, "weights")).collect::<StatsResult<Vec<_>>>()?;
    let r = srm_test(&counts, &weights)?;
    Ok(json!({
        "expected_counts": r.expected_counts.iter().map(|&e| num(e)).collect::<Vec<_>>(),
        "chi2": num(r.chi2), "df": r.df, "p_value": num(r.p_value.p), "ln_p_value": num(r.p_value.ln_p),
    }))
}

fn eval_holm(input: &Value, expected: Option<&Value>) -> StatsResult<Value> {
    let p = list_in(input, "p_values")?.iter().map(|v| f64_of(v, "p_values")).collect::<StatsResult<Vec<_>>>()?;
    let h = holm(&p)?;
    let bh = benjamini_hochberg(&p)?;
    let mut out = json!({
        "holm_adjusted": h.iter().map(|&x| num(x)).collect::<Vec<_>>(),
        "bh_adjusted": bh.iter().map(|&x| num(x)).collect::<Vec<_>>(),
        "bh_adjusted_extra": bh.iter().map(|&x| num(x)).collect::<Vec<_>>(),
    });
    let mut levels: Vec<(String, f64)> = Vec::new();
    for (key, rest) in parametric_keys(expected, "holm_reject_at_alpha_") {
        let alpha =
            rest.replace('_', ".").parse::<f64>().map_err(|_| StatsError::invalid(key, "cannot parse the level"))?;
        levels.push((key.to_string(), alpha));
    }
    if expected.is_none() {
        let alpha = num_or(input, "alpha", 0.05)?;
        levels.push((format!("holm_reject_at_alpha_{}", alpha.to_string().replace('.', "_")), alpha));
    }
    for (key, alpha) in levels {
        out[key.as_str()] = json!(rejected(&h, alpha));
    }
    Ok(out)
}

fn eval_beta(input: &Value) -> StatsResult<Value> {
    let a = BetaPosterior::new(num_in(input, "alpha_a")?, num_in(input, "beta_a")?)?;
    let b = BetaPosterior::new(num_in(input, "alpha_b")?, num_in(input, "beta_b")?)?;
    let c = compare_beta(&a, &b)?;
    let quad = prob_b_beats_a_quadrature(&a, &b);
    let interval = integration_interval(&a, &b);
    let closed = prob_b_beats_a_closed_form(&a, &b);
    let source = match c.method {
        Method::ClosedForm => "strategist: Evan Miller closed form, term recurrence with log scale",
        _ => "strategist: adaptive Gauss-Kronrod quadrature of f_B F_A (TOMS 708 centred Beta)",
    };
    Ok(json!({
        "p_b_gt_a": num(c.p_b_gt_a),
        "p_a_gt_b": num(c.p_a_gt_b),
        "expected_loss_a": num(c.expected_loss_a),
        "expected_loss_b": num(c.expected_loss_b),
        "source": source,
        "p_b_gt_a_scipy_quad": num_r(&quad),
        "p_a_gt_b_scipy_quad": num_r(&quad.clone().map(|p| 1.0 - p)),
        "scipy_quad_integration_interval": match interval {
            Ok((lo, hi)) => json!([num(lo), num(hi)]),
            Err(_) => json!([null, null]),
        },
        "p_b_gt_a_closed_form_float64_logspace": num_r(&closed),
    }))
}

fn eval_msprt(input: &Value) -> StatsResult<Value> {
    let a = summary_in(input, "a")?;
    let b = summary_in(input, "b")?;
    let tau2 = num_in(input, "tau2")?;
    let theta0 = num_or(input, "theta0", 0.0)?;
    let alpha = num_or(input, "alpha", 0.05)?;
    let diff = b.mean() - a.mean();
    let v = a.variance_of_mean() + b.variance_of_mean();
    let look = msprt(diff, v, tau2, theta0)?;
    Ok(json!({
        "V": num(v), "diff": num(diff), "log_lambda": num(look.log_lambda),
        "lambda_": num_r(&look.lambda()),
        "p_value_snapshot": num(look.p_value.p), "ln_p_value": num(look.p_value.ln_p),
        "always_valid_ci95": interval_r(&msprt_ci(diff, v, tau2, alpha)),
    }))
}

fn eval_msprt_sequential(input: &Value) -> StatsResult<Value> {
    let var_a = num_in(input, "var_a")?;
    let var_b = num_in(input, "var_b")?;
    let tau2 = num_in(input, "tau2")?;
    let theta0 = num_or(input, "theta0", 0.0)?;
    let mut looks = Vec::new();
    let mut sizes = Vec::new();
    for look in list_in(input, "looks")? {
        let (n_a, n_b) = match look.get("n_per_arm") {
            Some(n) => (f64_of(n, "n_per_arm")?, f64_of(n, "n_per_arm")?),
            None => (num_in(look, "n_a")?, num_in(look, "n_b")?),
        };
        let a = Summary::new(n_a, num_in(look, "mean_a")?, var_a)?;
        let b = Summary::new(n_b, num_in(look, "mean_b")?, var_b)?;
        looks.push((b.mean() - a.mean(), a.variance_of_mean() + b.variance_of_mean()));
        sizes.push(look.get("n_per_arm").cloned().unwrap_or(Value::Null));
    }
    let seq = msprt_sequence(&looks, tau2, theta0)?;
    let rows: Vec<Value> = seq
        .iter()
        .zip(sizes)
        .map(|(s, n)| {
            json!({
                "n_per_arm": n, "diff": num(s.look.diff), "V": num(s.look.variance),
                "log_lambda": num(s.look.log_lambda),
                "p_snapshot": num(s.look.p_value.p), "p_always_valid": num(s.p_always_valid.p),
                "ln_p_always_valid": num(s.p_always_valid.ln_p),
            })
        })
        .collect();
    Ok(json!({ "sequence": rows }))
}

fn cs_summary(arm: &Value, metric: &str, name: &str) -> StatsResult<Summary> {
    let n = num_in(arm, "n")?;
    let sum = num_in(arm, "sum")?;
    match metric {
        "proportion" => {
            if n <= 0.0 {
                return Err(StatsError::cannot(Reason::EmptySample));
            }
            let p = sum / n;
            if !(0.0..=1.0).contains(&p) {
                return Err(StatsError::invalid(name, "proportion outside [0, 1]"));
            }
            Summary::new(n, p, p * (1.0 - p))
        }
        "mean" => {
            let n = count_of(field(arm, "n")?, "n")?;
            SampleStats::from_parts(n, sum, num_in(arm, "sum_squares")?)?.summary()
        }
        other => Err(StatsError::invalid("metric", format!("unknown metric kind `{other}`"))),
    }
}

fn eval_confidence_sequence(input: &Value) -> StatsResult<Value> {
    let metric = field(input, "metric")?.as_str().ok_or_else(|| StatsError::invalid("metric", "expected a string"))?;
    let a = cs_summary(field(input, "a")?, metric, "a")?;
    let b = cs_summary(field(input, "b")?, metric, "b")?;
    let alpha = num_or(input, "alpha", 0.05)?;
    let tuning_n = num_in(input, "tuning_n")?;
    let est = match input.get("difference").and_then(Value::as_str).unwrap_or("absolute") {
        "absolute" => absolute_difference(&a, &b)?,
        "relative" => relative_difference(&a, &b)?,
        other => return Err(StatsError::invalid("difference", format!("unknown difference `{other}`"))),
    };
    let cs = confidence_sequence(&est, a.n() + b.n(), alpha, tuning_n)?;
    Ok(json!({
        "estimate": num(cs.estimate), "variance": num(cs.variance),
        "ci_lower": num(cs.interval.lower), "ci_upper": num(cs.interval.upper),
        "p_value": num(cs.p_value.p), "ln_p_value": num(cs.p_value.ln_p),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn reference_dir() -> PathBuf {
        match std::env::var("STRATEGIST_REFERENCE_DIR") {
            Ok(dir) => PathBuf::from(dir),
            Err(_) => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/reference")),
        }
    }

    /// Tolerance for one expected number: (relative, absolute).
    /// Beta probabilities: absolute 1e-10 (meta `beta_integral_abs`); the
    /// file's own cross-checks (scipy quad, float64 closed form) are
    /// compared with their documented error. t and chi-square p-values and
    /// what derives from t quantiles: relative 1e-7. Everything else:
    /// relative 1e-9 (`closed_form_rel`).
    fn tolerance(meta: &Value, test: &str, path: &str) -> Option<(f64, f64)> {
        let tol = |k: &str, d: f64| meta["suggested_tolerance"][k].as_f64().unwrap_or(d);
        let closed = tol("closed_form_rel", 1e-9);
        let tp = tol("t_and_chi2_p_values_rel", 1e-7);
        let beta_abs = tol("beta_integral_abs", 1e-10);
        if path.ends_with("source") {
            return None;
        }
        Some(match test {
            "beta_prob_b_beats_a" => {
                if path.contains("closed_form_float64_logspace") {
                    // The file's float64 evaluation is itself off by up to
                    // 4.1e-7 relative (meta cross_check).
                    (1e-6, 0.0)
                } else if path.contains("scipy_quad_integration_interval") {
                    (1e-8, 0.0)
                } else if path.contains("scipy_quad") {
                    (0.0, 2.0 * beta_abs)
                } else {
                    (0.0, beta_abs)
                }
            }
            "welch_t_test" | "srm_chisquare" if path.contains("p_value") => (tp, 0.0),
            "diff_ci" if path.contains("t_welch") || path.contains("t_quantile") => (tp, 0.0),
            _ => (closed, 0.0),
        })
    }

    fn compare(
        meta: &Value,
        test: &str,
        path: &str,
        exp: &Value,
        got: &Value,
        failures: &mut Vec<String>,
        checked: &mut usize,
    ) {
        match (exp, got) {
            (Value::Object(e), Value::Object(g)) => {
                for (k, ev) in e {
                    let gv = g.get(k).unwrap_or(&Value::Null);
                    compare(meta, test, &format!("{path}.{k}"), ev, gv, failures, checked);
                }
            }
            (Value::Array(e), Value::Array(g)) if e.len() == g.len() => {
                for (i, (ev, gv)) in e.iter().zip(g).enumerate() {
                    compare(meta, test, &format!("{path}[{i}]"), ev, gv, failures, checked);
                }
            }
            (Value::Number(e), Value::Number(g)) => {
                let (e, g) = (e.as_f64().unwrap(), g.as_f64().unwrap());
                if let Some((rel, abs)) = tolerance(meta, test, path) {
                    *checked += 1;
                    let ok = (e - g).abs() <= rel * e.abs() + abs || (e == 0.0 && g.abs() <= 1e-15);
                    if !ok {
                        failures.push(format!("{path}: expected {e:e}, got {g:e} (rel {:e})", ((e - g) / e).abs()));
                    }
                }
            }
            (Value::String(_), _) if tolerance(meta, test, path).is_none() => {}
            (e, g) => {
                *checked += 1;
                if e != g {
                    failures.push(format!("{path}: expected {e}, got {g}"));
                }
            }
        }
    }

    #[test]
    fn every_reference_case_matches_within_the_suggested_tolerance() {
        let path = reference_dir().join("stats_cases.json");
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let results = eval_file(&path).unwrap();
        let cases = doc["cases"].as_array().unwrap();
        let results = results.as_array().unwrap();
        assert_eq!(cases.len(), results.len());
        assert_eq!(cases.len() as u64, doc["meta"]["n_cases"].as_u64().unwrap());
        let mut failures = Vec::new();
        let mut checked = 0;
        for (case, got) in cases.iter().zip(results) {
            assert_eq!(case["id"], got["id"]);
            assert!(got.get("error").is_none(), "{}: {}", case["id"], got["error"]);
            let test = case["test"].as_str().unwrap();
            let id = case["id"].as_str().unwrap();
            compare(&doc["meta"], test, id, &case["expected"], got, &mut failures, &mut checked);
        }
        assert!(failures.is_empty(), "{} of {checked} values differ:\n{}", failures.len(), failures.join("\n"));
        assert!(checked > 300, "only {checked} values compared");
    }

    #[test]
    fn unknown_test_kinds_and_bad_inputs_are_reported_per_case() {
        let doc = json!({"cases": [
            {"id": "x", "test": "no_such_test", "input": {}, "expected": {"p": 1.0}},
            {"id": "y", "test": "welch_t_test", "input": {"n_a": 10}, "expected": {"t": 1.0}},
            {"id": "z", "test": "two_proportion_ztest", "input": {"x_a": 1, "n_a": 10, "x_b": 2, "n_b": 10}},
        ]});
        let out = eval_cases(&doc).unwrap();
        assert_eq!(out[0]["error"]["reason"], "unsupported_test");
        assert_eq!(out[0]["p"], Value::Null);
        assert_eq!(out[1]["error"]["reason"], "invalid_input");
        assert!(out[2]["z"].is_number() && out[2]["ln_p_value"].is_number());
        assert!(eval_cases(&json!({})).is_err());
    }
}
