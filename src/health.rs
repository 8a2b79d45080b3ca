//! Readiness reported by the components themselves: a named check fails with a reason
//! until the component reports it healthy again.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

static FAILING: LazyLock<Mutex<BTreeMap<&'static str, String>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// Reports `check` failing with `reason`, or healthy with `None`.
pub fn report(check: &'static str, failing: Option<String>) {
    let mut map = FAILING.lock().unwrap_or_else(|e| e.into_inner());
    match failing {
        Some(reason) => map.insert(check, reason),
        None => map.remove(check),
    };
}

/// The checks failing now, with their reasons.
pub fn failing() -> Vec<(&'static str, String)> {
    let map = FAILING.lock().unwrap_or_else(|e| e.into_inner());
    map.iter().map(|(k, v)| (*k, v.clone())).collect()
}
