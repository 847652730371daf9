//! Workloads and the keyspace: 16-byte keys, fixed-size values, uniform key choice.

use clap::ValueEnum;
use serde::Serialize;

/// What each request of a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Put a fresh value under a uniformly random key (durable, replicated write).
    Put,
    /// Linearizable get of a random key (sent to the leader).
    Get,
    /// Stale (kvset) / serializable (etcd) get of a random key, round-robin over every member.
    GetStale,
    /// Compare-and-swap: swap a key's value only if it still has the value this worker last
    /// wrote (each worker owns its keys, so the compare normally holds).
    Cas,
    /// 90% linearizable gets, 10% puts.
    Mixed,
    /// `--watchers` watchers of one prefix, spread over the members; `--concurrency` writers
    /// put keys under it. Measures put-to-event latency (`streams.rs`).
    Watch,
    /// Renewals of `--leases` leases through the streaming KeepAlive RPC, round-robin over the
    /// leases, one renewal in flight per worker and stream (`streams.rs`).
    LeaseKeepalive,
}

impl Workload {
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::GetStale => "get-stale",
            Workload::Cas => "cas",
            Workload::Mixed => "mixed",
            Workload::Watch => "watch",
            Workload::LeaseKeepalive => "lease-keepalive",
        }
    }

    /// Whether the workload reads keys of the keyspace that must exist.
    pub fn reads(self) -> bool {
        matches!(
            self,
            Workload::Get | Workload::GetStale | Workload::Cas | Workload::Mixed
        )
    }

    /// Whether the workload uses the Watch or Lease streams ([`crate::target::Streams`]) rather
    /// than the closed loop of unary KV requests.
    pub fn streams(self) -> bool {
        matches!(self, Workload::Watch | Workload::LeaseKeepalive)
    }

    /// Position in the results table.
    pub fn order(name: &str) -> usize {
        [
            "put",
            "get",
            "get-stale",
            "cas",
            "mixed",
            "watch",
            "lease-keepalive",
        ]
        .iter()
        .position(|w| *w == name)
        .unwrap_or(usize::MAX)
    }
}

/// Keys per worker a `cas` worker owns and cycles through.
pub const CAS_KEYS_PER_WORKER: u64 = 16;

/// The keys and values of a run.
#[derive(Clone, Debug)]
pub struct Keyspace {
    keys: u64,
    value_size: usize,
}

/// Every key has this length.
pub const KEY_SIZE: usize = 16;
const KEY_PREFIX: &str = "bench/";
const SENTINEL_KEY: &[u8] = b"bench/preloaded";

impl Keyspace {
    pub fn new(keys: u64, value_size: usize) -> Self {
        Self {
            keys: keys.clamp(1, 9_999_999_999),
            value_size: value_size.max(32),
        }
    }

    pub fn keys(&self) -> u64 {
        self.keys
    }

    pub fn value_size(&self) -> usize {
        self.value_size
    }

    /// Key `index`: `bench/` and ten digits, 16 bytes.
    pub fn key(&self, index: u64) -> Vec<u8> {
        format!("{KEY_PREFIX}{:010}", index % self.keys).into_bytes()
    }

    /// A value of `value_size` bytes that names its key and a generation, so successive
    /// values of one key differ (what `cas` needs).
    pub fn value(&self, index: u64, generation: u64) -> Vec<u8> {
        let mut value = format!("{index:010}:{generation:016x}:").into_bytes();
        value.resize(self.value_size, b'v');
        value
    }

    /// Written after a complete preload; its value names the keyspace's shape.
    pub fn sentinel_key(&self) -> Vec<u8> {
        SENTINEL_KEY.to_vec()
    }

    pub fn sentinel_value(&self) -> Vec<u8> {
        format!("keys={} value_size={}", self.keys, self.value_size).into_bytes()
    }

    /// The keys a `cas` worker owns: `worker`, `worker + C`, `worker + 2C`, … (distinct across
    /// workers as long as the keyspace has at least `C * CAS_KEYS_PER_WORKER` keys).
    pub fn cas_keys(&self, worker: usize, concurrency: usize) -> Vec<u64> {
        (0..CAS_KEYS_PER_WORKER)
            .map(|j| (worker as u64 + j * concurrency as u64) % self.keys)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_have_the_contract_sizes() {
        let ks = Keyspace::new(100_000, 128);
        assert_eq!(ks.key(0).len(), KEY_SIZE);
        assert_eq!(ks.key(99_999).len(), KEY_SIZE);
        assert_eq!(ks.key(99_999), b"bench/0000099999".to_vec());
        assert_eq!(ks.key(100_000), ks.key(0), "indexes wrap into the keyspace");
        assert_eq!(ks.value(7, 1).len(), 128);
        assert_ne!(ks.value(7, 1), ks.value(7, 2));
        assert!(!ks.sentinel_key().starts_with(b"bench/0"));
    }

    #[test]
    fn cas_workers_own_disjoint_keys() {
        let ks = Keyspace::new(100_000, 128);
        let mut all: Vec<u64> = (0..256).flat_map(|w| ks.cas_keys(w, 256)).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
