//! An experiment's feature schema: which profile features and request attributes a
//! contextual policy reads, and how each becomes numbers.
//!
//! Numeric features are optionally log-transformed (`log1p`) and then standardized as
//! `(x - center) / scale`; defaults per profile feature are rough e-commerce priors that a
//! definition may override. Categorical request attributes are one-hot over declared
//! values (plus one slot for anything else or missing) or hashed into a fixed number of
//! buckets. The encoded vector's length is `numeric + Σ categorical widths`; the linear
//! policies add their own intercept (`intercept = true`, their default).

use serde::{Deserialize, Serialize};

use super::is_profile_feature;
use crate::experiment::context::{Context, Value};

/// Request attributes any storefront may send, usable without a prefix.
pub const KNOWN_ATTRIBUTES: &[&str] = &["device", "country", "channel"];
/// Prefix for other request attributes: `attr:basket_size`.
pub const ATTRIBUTE_PREFIX: &str = "attr:";
pub const MAX_FEATURES: usize = 256;
pub const MAX_ONE_HOT_VALUES: usize = 64;
pub const MAX_HASH_BUCKETS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    #[default]
    None,
    /// ln(1 + max(x, 0)): for counts and money.
    Log1p,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericFeature {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Transform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoricalFeature {
    pub name: String,
    /// One-hot over these values (+1 slot for other/missing)…
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// …or hashed into this many buckets (missing sets none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_buckets: Option<usize>,
}

/// The `[features]` table of a definition.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSchema {
    #[serde(default)]
    pub numeric: Vec<NumericFeature>,
    #[serde(default)]
    pub categorical: Vec<CategoricalFeature>,
}

/// A schema problem: the field path (inside `features`) and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("features.{field}: {reason}")]
pub struct SchemaError {
    pub field: String,
    pub reason: String,
}

fn err(field: String, reason: impl Into<String>) -> SchemaError {
    SchemaError { field, reason: reason.into() }
}

/// Where a feature's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    Profile(&'a str),
    Attribute(&'a str),
}

pub fn source_of(name: &str) -> Option<Source<'_>> {
    if is_profile_feature(name) {
        Some(Source::Profile(name))
    } else if KNOWN_ATTRIBUTES.contains(&name) {
        Some(Source::Attribute(name))
    } else {
        name.strip_prefix(ATTRIBUTE_PREFIX).filter(|a| !a.is_empty() && a.len() <= 64).map(Source::Attribute)
    }
}

/// Default (transform, center, scale) of a profile feature: priors for a typical shop
/// (a few orders a quarter, order values around 50). A definition can override each.
fn defaults(name: &str) -> (Transform, f64, f64) {
    match name {
        "recency_days" | "days_since_last_seen" | "tenure_days" => (Transform::Log1p, 3.0, 1.5),
        n if n.starts_with("frequency_") || n == "lifetime_orders" => (Transform::Log1p, 0.5, 1.0),
        n if n.starts_with("monetary_") => (Transform::Log1p, 2.0, 2.0),
        n if n.starts_with("events_") => (Transform::Log1p, 1.5, 1.5),
        "aov" => (Transform::Log1p, 3.0, 1.5),
        "is_returning" => (Transform::None, 0.5, 0.5),
        n if n.starts_with(super::CATEGORY_AFFINITY) => (Transform::None, 0.1, 0.3),
        _ => (Transform::None, 0.0, 1.0),
    }
}

impl FeatureSchema {
    pub fn is_empty(&self) -> bool {
        self.numeric.is_empty() && self.categorical.is_empty()
    }

    /// Checks names, parameters and size; the error names the field and the reason.
    pub fn validate(&self) -> Result<(), SchemaError> {
        let mut seen = std::collections::HashSet::new();
        for (i, f) in self.numeric.iter().enumerate() {
            let field = format!("numeric[{i}].name");
            if source_of(&f.name).is_none() {
                return Err(err(field, format!("unknown feature `{}`: use a profile feature ({}), `category_affinity:<category>`, a request attribute ({}) or `attr:<name>`", f.name, super::NUMERIC_FEATURES.join(", "), KNOWN_ATTRIBUTES.join(", "))));
            }
            if !seen.insert(f.name.as_str()) {
                return Err(err(field, format!("`{}` is listed twice", f.name)));
            }
            if let Some(s) = f.scale {
                if !(s.is_finite() && s > 0.0) {
                    return Err(err(format!("numeric[{i}].scale"), "must be a finite number > 0"));
                }
            }
            if f.center.is_some_and(|c| !c.is_finite()) {
                return Err(err(format!("numeric[{i}].center"), "must be a finite number"));
            }
        }
        for (i, f) in self.categorical.iter().enumerate() {
            let field = format!("categorical[{i}].name");
            match source_of(&f.name) {
                Some(Source::Attribute(_)) => {}
                Some(Source::Profile(_)) => {
                    return Err(err(field, format!("`{}` is numeric: list it under `numeric`", f.name)))
                }
                None => {
                    return Err(err(
                        field,
                        format!("unknown attribute `{}`: use {} or `attr:<name>`", f.name, KNOWN_ATTRIBUTES.join(", ")),
                    ))
                }
            }
            if !seen.insert(f.name.as_str()) {
                return Err(err(field, format!("`{}` is listed twice", f.name)));
            }
            match (f.values.is_empty(), f.hash_buckets) {
                (false, None) => {
                    if f.values.len() > MAX_ONE_HOT_VALUES {
                        return Err(err(
                            format!("categorical[{i}].values"),
                            format!("at most {MAX_ONE_HOT_VALUES} values"),
                        ));
                    }
                    let mut vs = std::collections::HashSet::new();
                    if let Some(dup) = f.values.iter().find(|v| !vs.insert(v.as_str())) {
                        return Err(err(format!("categorical[{i}].values"), format!("`{dup}` is listed twice")));
                    }
                }
                (true, Some(b)) if (2..=MAX_HASH_BUCKETS).contains(&b) => {}
                (true, Some(_)) => {
                    return Err(err(
                        format!("categorical[{i}].hash_buckets"),
                        format!("must be in 2..={MAX_HASH_BUCKETS}"),
                    ))
                }
                _ => {
                    return Err(err(
                        format!("categorical[{i}]"),
                        "give exactly one of `values` (one-hot) or `hash_buckets`",
                    ))
                }
            }
        }
        if self.is_empty() {
            return Err(err("numeric".into(), "declare at least one numeric or categorical feature"));
        }
        if self.dimension() > MAX_FEATURES {
            return Err(err(
                "numeric".into(),
                format!("the encoded context has {} entries; at most {MAX_FEATURES}", self.dimension()),
            ));
        }
        Ok(())
    }

    /// Length of the encoded vector.
    pub fn dimension(&self) -> usize {
        self.numeric.len() + self.categorical.iter().map(width).sum::<usize>()
    }

    /// One name per entry of the encoded vector, for logs and explanations.
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(self.dimension());
        out.extend(self.numeric.iter().map(|f| f.name.clone()));
        for f in &self.categorical {
            if f.hash_buckets.is_some() {
                out.extend((0..width(f)).map(|b| format!("{}#{b}", f.name)));
            } else {
                out.extend(f.values.iter().map(|v| format!("{}={v}", f.name)));
                out.push(format!("{}=other", f.name));
            }
        }
        out
    }

    /// Encodes a unit's profile features and the request's attributes.
    pub fn encode(&self, profile: &std::collections::BTreeMap<String, f64>, attrs: &Context) -> Vec<f64> {
        let mut x = Vec::with_capacity(self.dimension());
        for f in &self.numeric {
            let (dt, dc, ds) = defaults(&f.name);
            let (t, c, s) = (f.transform.unwrap_or(dt), f.center.unwrap_or(dc), f.scale.unwrap_or(ds));
            let raw = match source_of(&f.name) {
                Some(Source::Profile(n)) => profile.get(n).copied(),
                Some(Source::Attribute(a)) => match attrs.get(a) {
                    Some(Value::Number(v)) => Some(*v),
                    Some(Value::Bool(b)) => Some(if *b { 1.0 } else { 0.0 }),
                    _ => None,
                },
                None => None,
            };
            // A missing value sits at the centre (0 after standardizing); a missing
            // category affinity is a real 0 (the unit never touched that category).
            let raw = raw.or_else(|| f.name.starts_with(super::CATEGORY_AFFINITY).then_some(0.0));
            x.push(match raw {
                Some(v) => {
                    let v = match t {
                        Transform::None => v,
                        Transform::Log1p => v.max(0.0).ln_1p(),
                    };
                    (v - c) / s
                }
                None => 0.0,
            });
        }
        for f in &self.categorical {
            let start = x.len();
            x.resize(start + width(f), 0.0);
            let name = source_of(&f.name).map(|s| match s {
                Source::Profile(n) | Source::Attribute(n) => n,
            });
            let value = name.and_then(|n| attrs.get(n)).map(|v| match v {
                Value::Text(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
            });
            match f.hash_buckets {
                Some(b) => {
                    if let Some(v) = value {
                        x[start + (fnv1a(v.as_bytes()) % b as u64) as usize] = 1.0;
                    }
                }
                None => {
                    let slot = value.and_then(|v| f.values.iter().position(|k| *k == v)).unwrap_or(f.values.len());
                    x[start + slot] = 1.0;
                }
            }
        }
        x
    }
}

fn width(f: &CategoricalFeature) -> usize {
    f.hash_buckets.unwrap_or(f.values.len() + 1)
}

/// FNV-1a, 64 bits: a stable hash for feature buckets (the same on every machine and
/// release, unlike std's SipHash keys).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn schema(toml_text: &str) -> FeatureSchema {
        toml::from_str(toml_text).expect("test schema parses")
    }

    #[test]
    fn encodes_intercept_numeric_one_hot_and_hashed() {
        let s = schema(
            r#"
            numeric = [{ name = "aov" }, { name = "attr:basket", transform = "none", center = 2.0, scale = 4.0 }]
            categorical = [{ name = "device", values = ["mobile", "desktop"] }, { name = "country", hash_buckets = 8 }]
            "#,
        );
        s.validate().expect("valid");
        assert_eq!(s.dimension(), 2 + 3 + 8);
        assert_eq!(s.names().len(), s.dimension());
        let profile = BTreeMap::from([("aov".to_string(), 50.0)]);
        let attrs = Context::from([
            ("basket".to_string(), Value::Number(10.0)),
            ("device".to_string(), Value::Text("desktop".into())),
            ("country".to_string(), Value::Text("DE".into())),
        ]);
        let x = s.encode(&profile, &attrs);
        assert_eq!(x.len(), s.dimension());
        assert!((x[0] - (51f64.ln() - 3.0) / 1.5).abs() < 1e-12);
        assert_eq!(x[1], 2.0);
        assert_eq!(&x[2..5], &[0.0, 1.0, 0.0]);
        assert_eq!(x[5..].iter().sum::<f64>(), 1.0);
        // Missing values: numeric at the centre, one-hot in `other`, hashed all zero.
        let y = s.encode(&BTreeMap::new(), &Context::new());
        assert_eq!(&y[0..2], &[0.0, 0.0]);
        assert_eq!(&y[2..5], &[0.0, 0.0, 1.0]);
        assert_eq!(y[5..].iter().sum::<f64>(), 0.0);
    }

    #[test]
    fn the_hash_of_a_value_is_stable() {
        // Pinned: a bucket must not move between releases or machines.
        assert_eq!(fnv1a(b"DE"), 0x08fe_3307_b598_45e2);
    }

    #[test]
    fn unknown_features_and_bad_parameters_are_rejected_with_the_field() {
        let cases = [
            (r#"numeric = [{ name = "favourite_colour" }]"#, "numeric[0].name"),
            ("", "numeric"),
            (r#"numeric = [{ name = "aov" }, { name = "aov" }]"#, "numeric[1].name"),
            (r#"numeric = [{ name = "aov", scale = 0.0 }]"#, "numeric[0].scale"),
            (r#"categorical = [{ name = "aov", values = ["a"] }]"#, "categorical[0].name"),
            (r#"categorical = [{ name = "shoe_size", values = ["a"] }]"#, "categorical[0].name"),
            (r#"categorical = [{ name = "device" }]"#, "categorical[0]"),
            (r#"categorical = [{ name = "device", values = ["a"], hash_buckets = 4 }]"#, "categorical[0]"),
            (r#"categorical = [{ name = "device", hash_buckets = 1 }]"#, "categorical[0].hash_buckets"),
            (r#"categorical = [{ name = "device", values = ["a", "a"] }]"#, "categorical[0].values"),
        ];
        for (text, field) in cases {
            let e = schema(text).validate().expect_err(text);
            assert_eq!(e.field, field, "{text}: {e}");
        }
    }
}
