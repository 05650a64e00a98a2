//! User profiles: behaviour events (view, click, add to cart, purchase) folded
//! incrementally into a compact per-unit state, and the features a contextual policy
//! reads from it (recency, frequency and monetary value over 7/30/90 days, average order
//! value, category affinity, new vs returning).
//!
//! Pure: no I/O, no clock. The state keeps one aggregate per day for the last 90 days
//! (older days are dropped when an event arrives) plus lifetime totals and the unit's
//! last 20 events, so folding an event and computing features are O(days kept). Events
//! may arrive out of order: each lands in its own day, and "last seen" is a maximum.

pub mod schema;

use std::collections::{BTreeMap, VecDeque};

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

/// Days of history kept per unit (the longest feature window).
pub const HISTORY_DAYS: i64 = 90;
/// Events kept verbatim per unit (for sequence models).
pub const RECENT_EVENTS: usize = 20;
/// Feature windows in days.
pub const WINDOWS: [i64; 3] = [7, 30, 90];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    View,
    Click,
    AddToCart,
    Purchase,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [EventKind::View, EventKind::Click, EventKind::AddToCart, EventKind::Purchase];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::View => "view",
            EventKind::Click => "click",
            EventKind::AddToCart => "add_to_cart",
            EventKind::Purchase => "purchase",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One behaviour event, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub at: NaiveDateTime,
    /// Order amount (purchases); 0 otherwise.
    #[serde(default)]
    pub amount: f64,
    #[serde(default)]
    pub category: Option<String>,
}

/// What one day holds for a unit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DayAggregate {
    /// Events of any kind.
    pub events: u32,
    pub orders: u32,
    pub amount: f64,
    /// Events per category (any kind).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub categories: BTreeMap<String, u32>,
}

/// A unit's profile: what the store keeps (as JSON) and folds events into.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    pub first_seen: Option<NaiveDateTime>,
    pub last_seen: Option<NaiveDateTime>,
    pub last_purchase: Option<NaiveDateTime>,
    pub lifetime_events: u64,
    pub lifetime_orders: u64,
    pub lifetime_amount: f64,
    /// Day number (days since 1970-01-01) → aggregate, the last `HISTORY_DAYS` days.
    #[serde(default)]
    pub days: BTreeMap<i64, DayAggregate>,
    /// The last `RECENT_EVENTS` events, oldest first.
    #[serde(default)]
    pub recent: VecDeque<Event>,
}

fn day_of(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp().div_euclid(86_400)
}

fn later(a: Option<NaiveDateTime>, b: NaiveDateTime) -> Option<NaiveDateTime> {
    Some(a.map_or(b, |a| a.max(b)))
}

impl ProfileState {
    /// Adds one event. Days older than the newest event's day minus `HISTORY_DAYS` are
    /// dropped (they can no longer enter any window).
    pub fn fold(&mut self, e: &Event) {
        self.first_seen = Some(self.first_seen.map_or(e.at, |f| f.min(e.at)));
        self.last_seen = later(self.last_seen, e.at);
        self.lifetime_events += 1;
        let day = self.days.entry(day_of(e.at)).or_default();
        day.events += 1;
        if let Some(c) = &e.category {
            *day.categories.entry(c.clone()).or_default() += 1;
        }
        if e.kind == EventKind::Purchase {
            self.last_purchase = later(self.last_purchase, e.at);
            self.lifetime_orders += 1;
            self.lifetime_amount += e.amount;
            day.orders += 1;
            day.amount += e.amount;
        }
        if let Some(newest) = self.last_seen {
            let oldest_kept = day_of(newest) - HISTORY_DAYS;
            self.days.retain(|d, _| *d > oldest_kept);
        }
        // Keep the recent list ordered by time; an out-of-order event slots in place.
        let pos = self.recent.iter().rposition(|r| r.at <= e.at).map_or(0, |p| p + 1);
        self.recent.insert(pos, e.clone());
        while self.recent.len() > RECENT_EVENTS {
            self.recent.pop_front();
        }
    }

    /// The profile's features at `now`. Every name in `NUMERIC_FEATURES` is present;
    /// category affinities are `category_affinity:<category>` (share of the unit's
    /// events in that category over 90 days).
    pub fn features(&self, now: NaiveDateTime) -> BTreeMap<String, f64> {
        let mut f = BTreeMap::new();
        let today = day_of(now);
        for w in WINDOWS {
            let (mut orders, mut amount, mut events) = (0u64, 0.0, 0u64);
            for (_, d) in self.days.range(today - w + 1..=today) {
                orders += u64::from(d.orders);
                amount += d.amount;
                events += u64::from(d.events);
            }
            f.insert(format!("frequency_{w}d"), orders as f64);
            f.insert(format!("monetary_{w}d"), amount);
            f.insert(format!("events_{w}d"), events as f64);
        }
        let days_since = |t: Option<NaiveDateTime>| {
            t.map_or(NO_HISTORY_DAYS, |t| ((now - t).num_seconds() as f64 / 86_400.0).clamp(0.0, NO_HISTORY_DAYS))
        };
        f.insert("recency_days".into(), days_since(self.last_purchase));
        f.insert("days_since_last_seen".into(), days_since(self.last_seen));
        f.insert("tenure_days".into(), days_since(self.first_seen));
        f.insert(
            "aov".into(),
            if self.lifetime_orders > 0 { self.lifetime_amount / self.lifetime_orders as f64 } else { 0.0 },
        );
        f.insert("lifetime_orders".into(), self.lifetime_orders as f64);
        // Returning: bought before, or was first seen on an earlier day than today.
        let returning = self.lifetime_orders > 0 || self.first_seen.is_some_and(|t| day_of(t) < today);
        f.insert("is_returning".into(), if returning { 1.0 } else { 0.0 });
        let mut per_category: BTreeMap<&str, u64> = BTreeMap::new();
        let mut total = 0u64;
        for (_, d) in self.days.range(today - HISTORY_DAYS + 1..=today) {
            for (c, n) in &d.categories {
                *per_category.entry(c.as_str()).or_default() += u64::from(*n);
                total += u64::from(*n);
            }
        }
        for (c, n) in per_category {
            f.insert(format!("category_affinity:{c}"), n as f64 / total as f64);
        }
        f
    }
}

/// "Never" for a recency feature: a year, so the feature stays finite.
pub const NO_HISTORY_DAYS: f64 = 365.0;

/// Every numeric profile feature by name (category affinities are extra, by prefix).
pub const NUMERIC_FEATURES: &[&str] = &[
    "frequency_7d",
    "frequency_30d",
    "frequency_90d",
    "monetary_7d",
    "monetary_30d",
    "monetary_90d",
    "events_7d",
    "events_30d",
    "events_90d",
    "recency_days",
    "days_since_last_seen",
    "tenure_days",
    "aov",
    "lifetime_orders",
    "is_returning",
];

/// Prefix of a category affinity feature: `category_affinity:shoes`.
pub const CATEGORY_AFFINITY: &str = "category_affinity:";

/// True when `name` is a profile feature (numeric, or a category affinity).
pub fn is_profile_feature(name: &str) -> bool {
    NUMERIC_FEATURES.contains(&name)
        || name.strip_prefix(CATEGORY_AFFINITY).is_some_and(|c| !c.is_empty() && c.len() <= 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, NaiveDate};

    fn t(day: u32, hour: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 11, day).and_then(|d| d.and_hms_opt(hour, 0, 0)).expect("valid date")
    }

    fn ev(kind: EventKind, at: NaiveDateTime, amount: f64, cat: Option<&str>) -> Event {
        Event { kind, at, amount, category: cat.map(str::to_string) }
    }

    #[test]
    fn an_empty_profile_is_new_with_far_recency() {
        let f = ProfileState::default().features(t(20, 12));
        assert_eq!(f["is_returning"], 0.0);
        assert_eq!(f["recency_days"], NO_HISTORY_DAYS);
        assert_eq!(f["frequency_90d"], 0.0);
        assert_eq!(f["aov"], 0.0);
        for name in NUMERIC_FEATURES {
            assert!(f.contains_key(*name), "{name} missing");
        }
    }

    #[test]
    fn purchases_feed_rfm_windows_and_aov() {
        let mut p = ProfileState::default();
        p.fold(&ev(EventKind::Purchase, t(1, 10), 100.0, Some("shoes")));
        p.fold(&ev(EventKind::Purchase, t(18, 10), 50.0, Some("bags")));
        p.fold(&ev(EventKind::View, t(19, 10), 0.0, Some("shoes")));
        let f = p.features(t(20, 10));
        assert_eq!(f["frequency_7d"], 1.0);
        assert_eq!(f["monetary_7d"], 50.0);
        assert_eq!(f["frequency_30d"], 2.0);
        assert_eq!(f["monetary_30d"], 150.0);
        assert_eq!(f["events_7d"], 2.0);
        assert_eq!(f["aov"], 75.0);
        assert!((f["recency_days"] - 2.0).abs() < 1e-9);
        assert!((f["days_since_last_seen"] - 1.0).abs() < 1e-9);
        assert_eq!(f["is_returning"], 1.0);
        assert!((f["category_affinity:shoes"] - 2.0 / 3.0).abs() < 1e-12);
        assert!((f["category_affinity:bags"] - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn out_of_order_events_give_the_same_profile_as_in_order() {
        let events = [
            ev(EventKind::View, t(3, 9), 0.0, Some("a")),
            ev(EventKind::Purchase, t(5, 9), 20.0, Some("a")),
            ev(EventKind::Click, t(4, 9), 0.0, None),
            ev(EventKind::AddToCart, t(6, 9), 0.0, Some("b")),
        ];
        let mut shuffled = ProfileState::default();
        for e in &events {
            shuffled.fold(e);
        }
        let mut sorted_events = events.to_vec();
        sorted_events.sort_by_key(|e| e.at);
        let mut ordered = ProfileState::default();
        for e in &sorted_events {
            ordered.fold(e);
        }
        assert_eq!(shuffled, ordered);
        assert_eq!(
            shuffled.recent.iter().map(|e| e.at).collect::<Vec<_>>(),
            sorted_events.iter().map(|e| e.at).collect::<Vec<_>>()
        );
    }

    #[test]
    fn history_is_bounded_to_ninety_days_and_twenty_events() {
        let mut p = ProfileState::default();
        let start = t(1, 0);
        for i in 0..200 {
            p.fold(&ev(EventKind::Purchase, start + Duration::days(i), 1.0, None));
        }
        assert!(p.days.len() as i64 <= HISTORY_DAYS);
        assert_eq!(p.recent.len(), RECENT_EVENTS);
        assert_eq!(p.lifetime_orders, 200);
        let f = p.features(start + Duration::days(199));
        assert_eq!(f["frequency_90d"], 90.0);
        assert_eq!(f["frequency_7d"], 7.0);
    }

    #[test]
    fn a_first_visit_today_is_new_and_yesterdays_is_returning() {
        let mut p = ProfileState::default();
        p.fold(&ev(EventKind::View, t(20, 8), 0.0, None));
        assert_eq!(p.features(t(20, 12))["is_returning"], 0.0);
        assert_eq!(p.features(t(21, 12))["is_returning"], 1.0);
    }

    #[test]
    fn feature_names_are_recognised() {
        assert!(is_profile_feature("aov"));
        assert!(is_profile_feature("category_affinity:shoes"));
        assert!(!is_profile_feature("category_affinity:"));
        assert!(!is_profile_feature("favourite_colour"));
    }
}
