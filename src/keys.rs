//! API keys and unit pseudonymisation. A key is `stk_` + 40 hex characters, shown once
//! at creation and stored only as its SHA-256. Unit ids are stored as a keyed hash
//! (HMAC-SHA-256 with the deployment's secret), never in clear.

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `/v1/assign`, `/v1/rewards`, `/v1/events`: what a storefront needs.
    Assign,
    /// Experiments and decisions: create, change, start, stop.
    Admin,
    /// Results and reports, read only.
    Read,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Assign => "assign",
            Scope::Admin => "admin",
            Scope::Read => "read",
        }
    }
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "assign" => Some(Scope::Assign),
            "admin" => Some(Scope::Admin),
            "read" => Some(Scope::Read),
            _ => None,
        }
    }
}

pub const KEY_PREFIX: &str = "stk_";

/// A new random key and the prefix shown in listings.
pub fn generate_key() -> (String, String) {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    let prefix = key[..KEY_PREFIX.len() + 8].to_string();
    (key, prefix)
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A fresh secret for the unit-id hash.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Keyed hash of a unit id: HMAC-SHA-256(secret, unit id), first 128 bits in hex.
pub fn pseudonymise(secret: &[u8], unit_id: &str) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(unit_id.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// A time-ordered id (UUIDv7: milliseconds since the epoch, then 74 random bits) from the
/// thread's CSPRNG, so that making one costs no system call (`Uuid::now_v7` asks the OS for
/// randomness each time). Exposure and reward ids use it; the reward path reads the time
/// back to find an exposure's partition.
pub fn time_ordered_id() -> uuid::Uuid {
    use rand::Rng;
    let ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let random: [u8; 10] = rand::rng().random();
    uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid()
}

/// A random id (UUIDv4) from the thread's CSPRNG.
pub fn random_id() -> uuid::Uuid {
    use rand::Rng;
    uuid::Builder::from_random_bytes(rand::rng().random()).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hash_stably() {
        let (a, pa) = generate_key();
        let (b, _) = generate_key();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == 44 && a.starts_with(&pa));
        assert_eq!(hash_key(&a), hash_key(&a));
        assert_ne!(hash_key(&a), hash_key(&b));
    }

    #[test]
    fn pseudonyms_depend_on_the_secret() {
        let x = pseudonymise(b"s1", "u-1");
        assert_eq!(x, pseudonymise(b"s1", "u-1"));
        assert_ne!(x, pseudonymise(b"s2", "u-1"));
        assert_ne!(x, pseudonymise(b"s1", "u-2"));
        assert_eq!(x.len(), 32);
        assert!(!x.contains("u-1"));
    }

    #[test]
    fn generated_ids_are_v7_and_v4_with_the_current_time() {
        let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let id = time_ordered_id();
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().expect("v7 carries a timestamp").to_unix();
        let ms = secs * 1000 + u64::from(nanos) / 1_000_000;
        assert!(ms >= before && ms <= before + 5_000, "{ms} vs {before}");
        assert_eq!(random_id().get_version_num(), 4);
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| time_ordered_id()).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
