//! Fault injection for the fault tests (`tests/faults.rs`): `DINO_STREAM_FAILPOINT=NAME@N` makes
//! the named point panic at its N-th call-site value (a sample's sequence number), so a test can
//! crash one actor of the real binary at a known moment. Unset (always, outside tests), a check
//! is one load of an initialised `OnceLock`.

use std::sync::OnceLock;

fn armed() -> Option<&'static (String, u64)> {
    static POINT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    POINT
        .get_or_init(|| {
            let spec = std::env::var("DINO_STREAM_FAILPOINT").ok()?;
            let (name, at) = spec.split_once('@')?;
            Some((name.to_string(), at.parse().ok()?))
        })
        .as_ref()
}

/// Panics when `DINO_STREAM_FAILPOINT` is `name@value`.
pub fn check(name: &str, value: u64) {
    if let Some((armed_name, at)) = armed() {
        if armed_name == name && *at == value {
            panic!("failpoint {name} at {value}");
        }
    }
}
