//! Request context: the flat numeric/categorical attributes a storefront sends with a
//! decision request, their limits, and targeting rules evaluated over them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::definition::{Rule, RuleOp};

pub const MAX_ATTRIBUTES: usize = 64;
pub const MAX_ATTRIBUTE_KEY_LEN: usize = 64;
pub const MAX_STRING_LEN: usize = 256;

/// One attribute value: a finite number, a string or a boolean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Number(f64),
    Text(String),
}

pub type Context = BTreeMap<String, Value>;

/// Why a context was refused; the message says what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContextError {
    #[error("context has {0} attributes; at most {MAX_ATTRIBUTES} are allowed")]
    TooMany(usize),
    #[error("context attribute names must be 1–{MAX_ATTRIBUTE_KEY_LEN} printable characters (got {0:?})")]
    BadKey(String),
    #[error("context attribute `{0}` must be a number, a string or a boolean (no objects, lists or null)")]
    BadType(String),
    #[error("context attribute `{0}` is not a finite number")]
    NotFinite(String),
    #[error("context attribute `{0}` is longer than {MAX_STRING_LEN} characters or has control characters")]
    BadString(String),
}

fn printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// Checks a raw JSON object and turns it into a `Context`.
pub fn parse_context(raw: &serde_json::Map<String, serde_json::Value>) -> Result<Context, ContextError> {
    if raw.len() > MAX_ATTRIBUTES {
        return Err(ContextError::TooMany(raw.len()));
    }
    let mut out = Context::new();
    for (k, v) in raw {
        if k.is_empty() || k.chars().count() > MAX_ATTRIBUTE_KEY_LEN || !printable(k) {
            return Err(ContextError::BadKey(k.chars().take(80).collect()));
        }
        let value = match v {
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(x) if x.is_finite() => Value::Number(x),
                _ => return Err(ContextError::NotFinite(k.clone())),
            },
            serde_json::Value::String(s) => {
                if s.chars().count() > MAX_STRING_LEN || !printable(s) {
                    return Err(ContextError::BadString(k.clone()));
                }
                Value::Text(s.clone())
            }
            _ => return Err(ContextError::BadType(k.clone())),
        };
        out.insert(k.clone(), value);
    }
    Ok(out)
}

fn equals(a: &Value, b: &serde_json::Value) -> bool {
    match (a, b) {
        (Value::Text(s), serde_json::Value::String(t)) => s == t,
        (Value::Number(x), serde_json::Value::Number(y)) => y.as_f64().is_some_and(|y| *x == y),
        (Value::Bool(x), serde_json::Value::Bool(y)) => x == y,
        _ => false,
    }
}

/// Whether one rule holds. A missing attribute fails every rule except `ne`/`not_in`
/// (which also fail: a rule about an attribute we do not know never admits a unit).
pub fn rule_holds(rule: &Rule, ctx: &Context) -> bool {
    let Some(v) = ctx.get(&rule.attribute) else {
        return false;
    };
    let num = |x: &Value| match x {
        Value::Number(n) => Some(*n),
        _ => None,
    };
    match rule.op {
        RuleOp::Eq => equals(v, &rule.value),
        RuleOp::Ne => !equals(v, &rule.value),
        RuleOp::In => rule.value.as_array().is_some_and(|a| a.iter().any(|b| equals(v, b))),
        RuleOp::NotIn => rule.value.as_array().is_some_and(|a| !a.iter().any(|b| equals(v, b))),
        RuleOp::Lt | RuleOp::Lte | RuleOp::Gt | RuleOp::Gte => match (num(v), rule.value.as_f64()) {
            (Some(x), Some(y)) => match rule.op {
                RuleOp::Lt => x < y,
                RuleOp::Lte => x <= y,
                RuleOp::Gt => x > y,
                _ => x >= y,
            },
            _ => false,
        },
    }
}

/// All rules must hold.
pub fn targeted(rules: &[Rule], ctx: &Context) -> bool {
    rules.iter().all(|r| rule_holds(r, ctx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(v: serde_json::Value) -> Context {
        parse_context(v.as_object().unwrap()).unwrap()
    }

    fn rule(attr: &str, op: RuleOp, value: serde_json::Value) -> Rule {
        Rule { attribute: attr.into(), op, value }
    }

    #[test]
    fn rules_compare_strings_numbers_and_lists() {
        let c = ctx(json!({"device": "mobile", "cart_value": 54.9, "vip": true}));
        assert!(rule_holds(&rule("device", RuleOp::Eq, json!("mobile")), &c));
        assert!(!rule_holds(&rule("device", RuleOp::Ne, json!("mobile")), &c));
        assert!(rule_holds(&rule("device", RuleOp::In, json!(["tablet", "mobile"])), &c));
        assert!(rule_holds(&rule("device", RuleOp::NotIn, json!(["desktop"])), &c));
        assert!(rule_holds(&rule("cart_value", RuleOp::Gt, json!(50)), &c));
        assert!(!rule_holds(&rule("cart_value", RuleOp::Lte, json!(50)), &c));
        assert!(rule_holds(&rule("vip", RuleOp::Eq, json!(true)), &c));
        assert!(!rule_holds(&rule("country", RuleOp::Ne, json!("DE")), &c), "missing attribute never admits");
    }

    #[test]
    fn contexts_refuse_nested_values_and_long_strings() {
        let bad = json!({"a": {"b": 1}});
        assert_eq!(parse_context(bad.as_object().unwrap()), Err(ContextError::BadType("a".into())));
        let long = json!({"a": "x".repeat(300)});
        assert!(matches!(parse_context(long.as_object().unwrap()), Err(ContextError::BadString(_))));
        let ctrl = json!({"a\u{0007}": 1});
        assert!(matches!(parse_context(ctrl.as_object().unwrap()), Err(ContextError::BadKey(_))));
        let many: serde_json::Map<_, _> = (0..65).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(parse_context(&many), Err(ContextError::TooMany(65)));
    }
}
