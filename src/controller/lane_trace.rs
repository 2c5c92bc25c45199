//! TEMPORARY instrumentation (issue 12): where an alert-woken reconcile spends its time.
//! Enabled by SWITCHYARD_TRACE_ALERTS=1; prints one line per alert-woken reconcile.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        LazyLock, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

static ON: LazyLock<bool> = LazyLock::new(|| std::env::var_os("SWITCHYARD_TRACE_ALERTS").is_some());
static WOKEN: LazyLock<Mutex<HashMap<String, (Instant, usize)>>> = LazyLock::new(Default::default);
static TRACED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);
pub(crate) static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn woken(name: &str) {
    if *ON {
        WOKEN.lock().unwrap().insert(
            name.to_owned(),
            (Instant::now(), IN_FLIGHT.load(Ordering::Relaxed)),
        );
    }
}

/// At reconcile start: the wake's age, if this reconcile answers an alert.
pub(crate) fn started(name: &str) -> Option<(Instant, usize)> {
    if !*ON {
        return None;
    }
    let woken = WOKEN.lock().unwrap().remove(name)?;
    TRACED.lock().unwrap().insert(name.to_owned());
    Some(woken)
}

pub(crate) fn traced(name: &str) -> bool {
    *ON && TRACED.lock().unwrap().contains(name)
}

pub(crate) fn done(name: &str, line: String) {
    if *ON && TRACED.lock().unwrap().remove(name) {
        eprintln!("ALERT_TRACE wave={name} {line}");
    }
}
