//! Bad outside input (pipe lines, API requests, datagrams): every case is
//! counted by kind, and each kind is logged once, with the offending input,
//! so a misbehaving producer cannot flood the log.

use std::{
    collections::BTreeMap,
    sync::{LazyLock, Mutex},
};

use crate::scitag::truncate;

static SEEN: LazyLock<Mutex<BTreeMap<&'static str, u64>>> = LazyLock::new(Default::default);

/// Counts one bad input of `kind`; logs it if it is the first of its kind.
pub fn report(kind: &'static str, detail: &str, input: &str) {
    metrics::counter!("flowmark_bad_input_total", "kind" => kind).increment(1);
    let first = {
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        let n = seen.entry(kind).or_insert(0);
        *n += 1;
        *n == 1
    };
    if first {
        tracing::warn!(
            kind,
            input = %truncate(input, 200),
            "{detail} (further inputs of this kind are only counted)"
        );
    }
}

/// Counts so far, by kind (for `status` and tests).
pub fn counts() -> BTreeMap<&'static str, u64> {
    SEEN.lock().unwrap_or_else(|p| p.into_inner()).clone()
}
