//! The demo's load generator and what it measured: each cohort's requests (reads and
//! writes) through the data plane's Traefik with that cohort's headers, which backend
//! answered each, the shares over a recent window for the live view, and the totals,
//! the rollback's time at the gateway and the checks for the summary.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use switchyard::api::{MigrationWave, WavePhase};
use switchyard_testenv::{DataPlane, Request};

use crate::gateway::Backends;

/// Requests a second per cohort: six cohorts make a few dozen a second in all.
pub const PER_COHORT: u32 = 6;
/// The recent window the live view's shares are measured over.
pub const WINDOW: Duration = Duration::from_millis(2500);
/// What each cohort sends, in turn: two reads for each write, every write method.
const MIX: [(&str, &str); 9] = [
    ("GET", "/accounts"),
    ("GET", "/contacts/42"),
    ("POST", "/leads"),
    ("GET", "/cases"),
    ("GET", "/accounts/7"),
    ("PUT", "/contacts/42"),
    ("GET", "/leads"),
    ("PATCH", "/cases/9"),
    ("DELETE", "/leads/3"),
];
/// How many requests in a row legacy must answer after a rollback for it to count as
/// done at the gateway (one second of the cohort's traffic).
const SETTLED: usize = PER_COHORT as usize;

/// Who answered a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    Legacy,
    Target,
    Maintenance,
    /// The gateway itself (404, 5xx) or no answer at all.
    Other,
}

struct Hit {
    at: Instant,
    cohort: usize,
    served: Served,
}

#[derive(Default)]
struct Log {
    hits: Vec<Hit>,
    /// What the `Other` answers were, by text.
    other: BTreeMap<String, usize>,
}

/// One cohort, as the generator sends it.
#[derive(Clone, Debug)]
pub struct Cohort {
    /// Its wave.
    pub wave: String,
    /// Its headers (name, value).
    pub headers: Vec<(String, String)>,
}

/// Each cohort's answers over a stretch of time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Share {
    pub legacy: usize,
    pub target: usize,
    pub maintenance: usize,
    pub other: usize,
}

impl Share {
    fn add(&mut self, served: Served) {
        match served {
            Served::Legacy => self.legacy += 1,
            Served::Target => self.target += 1,
            Served::Maintenance => self.maintenance += 1,
            Served::Other => self.other += 1,
        }
    }

    /// Every answer.
    pub fn total(&self) -> usize {
        self.legacy + self.target + self.maintenance + self.other
    }

    /// `n` as a percentage of the total.
    pub fn percent(&self, n: usize) -> f64 {
        if self.total() == 0 {
            0.0
        } else {
            100.0 * n as f64 / self.total() as f64
        }
    }
}

/// The rollback as the gateway showed it.
#[derive(Clone, Copy, Debug)]
pub struct GatewayRollback {
    /// When Prometheus first answered the breaching value, if the demo saw it.
    pub breach: Option<Instant>,
    /// When the demo saw the wave's RollingBack or RolledBack status.
    pub seen: Instant,
    /// The first request from which on legacy answered every request of the cohort.
    pub legacy_from: Instant,
}

impl GatewayRollback {
    /// Seconds from the breach to the gateway.
    pub fn after_breach(&self) -> Option<f64> {
        self.breach.map(|at| signed_seconds(at, self.legacy_from))
    }

    /// Seconds from the status the demo saw to the gateway (negative: the operator
    /// writes the route before the status, and Traefik was quicker than the watch).
    pub fn after_status(&self) -> f64 {
        signed_seconds(self.seen, self.legacy_from)
    }
}

impl GatewayRollback {
    /// `2.31s after the breach, 0.05s after the demo saw the RolledBack status`.
    pub fn describe(&self) -> String {
        let breach = self
            .after_breach()
            .map_or("breach not seen".to_owned(), |s| {
                format!("{s:.2}s after the breach")
            });
        format!(
            "{breach}, {:.2}s after the demo saw the rollback's status",
            self.after_status()
        )
    }
}

fn signed_seconds(from: Instant, to: Instant) -> f64 {
    if to >= from {
        to.duration_since(from).as_secs_f64()
    } else {
        -from.duration_since(to).as_secs_f64()
    }
}

/// The running load generator and its measurements. Dropping it (after
/// [`Traffic::stop`]) stops the data plane too.
pub struct Traffic {
    plane: Arc<DataPlane>,
    backends: Backends,
    cohorts: Vec<Cohort>,
    log: Arc<Mutex<Log>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
    rollback: Option<(usize, Instant)>,
    breach: Option<Instant>,
    retried: Option<Instant>,
    announced: bool,
}

impl Traffic {
    /// Starts one sender per cohort, spread over the interval so that the gateway sees
    /// an even stream.
    pub fn start(plane: DataPlane, backends: Backends, cohorts: Vec<Cohort>) -> Self {
        let plane = Arc::new(plane);
        let log = Arc::new(Mutex::new(Log::default()));
        let period = Duration::from_secs(1) / PER_COHORT;
        let spread = period / cohorts.len().max(1) as u32;
        let started = Instant::now();
        let tasks = cohorts
            .iter()
            .enumerate()
            .map(|(i, cohort)| {
                let (plane, log, backends) =
                    (Arc::clone(&plane), Arc::clone(&log), backends.clone());
                let headers = cohort.headers.clone();
                let first = tokio::time::Instant::now() + spread * i as u32;
                tokio::spawn(async move {
                    let mut every = tokio::time::interval_at(first, period);
                    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    for turn in 0.. {
                        every.tick().await;
                        let (method, path) = MIX[turn % MIX.len()];
                        let request = headers
                            .iter()
                            .fold(Request::new(method, path), |r, (k, v)| r.header(k, v));
                        let (served, what) = match plane.send(&request).await {
                            Ok(answer) => {
                                let who = answer.who();
                                (classify(&backends, &who), who)
                            }
                            Err(err) => (Served::Other, format!("no answer: {err}")),
                        };
                        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                        if served == Served::Other {
                            *log.other.entry(what).or_default() += 1;
                        }
                        log.hits.push(Hit {
                            at: Instant::now(),
                            cohort: i,
                            served,
                        });
                    }
                })
            })
            .collect();
        Traffic {
            plane,
            backends,
            cohorts,
            log,
            tasks,
            started,
            rollback: None,
            breach: None,
            retried: None,
            announced: false,
        }
    }

    /// Traefik's address and the hostname, for the setup's lines.
    pub fn describe(&self) -> String {
        format!(
            "{} requests/s per cohort ({} in all; reads and writes, each with its cohort's headers) to Traefik on {} (Host {})",
            PER_COHORT,
            PER_COHORT as usize * self.cohorts.len(),
            self.plane.gateway_addr(),
            self.backends.hostname
        )
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    pub fn cohorts(&self) -> &[Cohort] {
        &self.cohorts
    }

    fn index(&self, wave: &str) -> Option<usize> {
        self.cohorts.iter().position(|c| c.wave == wave)
    }

    /// The shares of `wave`'s cohort since `from`.
    pub fn share_since(&self, wave: &str, from: Instant) -> Share {
        let Some(cohort) = self.index(wave) else {
            return Share::default();
        };
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let mut share = Share::default();
        for hit in log.hits.iter().rev().take_while(|h| h.at >= from) {
            if hit.cohort == cohort {
                share.add(hit.served);
            }
        }
        share
    }

    /// The shares of `wave`'s cohort over the last [`WINDOW`].
    pub fn recent(&self, wave: &str) -> Share {
        self.share_since(
            wave,
            Instant::now().checked_sub(WINDOW).unwrap_or(self.started),
        )
    }

    /// Every answer so far, by cohort, and what the gateway's own answers were.
    pub fn totals(&self) -> (Vec<(String, Share)>, BTreeMap<String, usize>) {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let mut shares = vec![Share::default(); self.cohorts.len()];
        for hit in &log.hits {
            shares[hit.cohort].add(hit.served);
        }
        let named = self
            .cohorts
            .iter()
            .map(|c| c.wave.clone())
            .zip(shares)
            .collect();
        (named, log.other.clone())
    }

    /// How long the generator has run.
    pub fn running_for(&self) -> Duration {
        self.started.elapsed()
    }

    /// The operator rolled `wave` back (the first time counts).
    pub fn rolled_back(&mut self, wave: &str) {
        if self.rollback.is_none()
            && let Some(cohort) = self.index(wave)
        {
            self.rollback = Some((cohort, Instant::now()));
        }
    }

    /// The incident's metric breached its ceiling (the first time counts).
    pub fn breached(&mut self) {
        self.breach.get_or_insert_with(Instant::now);
    }

    pub fn breached_at(&self) -> Option<Instant> {
        self.breach
    }

    /// The rolled-back wave was retried: from here on its traffic moves again.
    pub fn retried(&mut self) {
        self.retried.get_or_insert_with(Instant::now);
    }

    /// The rollback at the gateway: the first request of the rolled-back cohort from
    /// which on legacy answered every one (at least [`SETTLED`] of them) until the retry.
    pub fn gateway_rollback(&self) -> Option<GatewayRollback> {
        let (cohort, seen) = self.rollback?;
        let until = self.retried.unwrap_or_else(Instant::now);
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let mine: Vec<&Hit> = log
            .hits
            .iter()
            .filter(|h| h.cohort == cohort && h.at < until)
            .collect();
        let last_other = mine.iter().rposition(|h| h.served != Served::Legacy);
        let from = last_other.map_or(0, |i| i + 1);
        let legacy = &mine[from..];
        (legacy.len() >= SETTLED).then(|| GatewayRollback {
            breach: self.breach,
            seen,
            legacy_from: legacy[0].at,
        })
    }

    /// A line for the events, once, when the rolled-back cohort is all on legacy.
    pub fn rollback_event(&mut self) -> Option<String> {
        if self.announced || self.retried.is_some() {
            return None;
        }
        let measured = self.gateway_rollback()?;
        let wave = &self.cohorts[self.rollback?.0].wave;
        self.announced = true;
        Some(format!(
            "gateway: every request of {wave}'s cohort is answered by {} again: {}",
            self.backends.legacy,
            measured.describe()
        ))
    }

    /// Whether every cohort's recent requests all reached the target.
    pub fn all_on_target(&self) -> Result<(), String> {
        let off: Vec<String> = self
            .cohorts
            .iter()
            .filter_map(|c| {
                let share = self.recent(&c.wave);
                (share.total() == 0 || share.target != share.total())
                    .then(|| format!("{} {}", c.wave, describe(&self.backends, &share)))
            })
            .collect();
        if off.is_empty() {
            Ok(())
        } else {
            Err(off.join("; "))
        }
    }

    /// Waits until [`Traffic::all_on_target`] holds, checking every quarter second.
    pub async fn wait_all_on_target(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            every.tick().await;
            match self.all_on_target() {
                Ok(()) => return Ok(()),
                Err(off) if Instant::now() >= deadline => return Err(off),
                Err(_) => {}
            }
        }
    }

    /// Stops the senders (the data plane stops when this is dropped).
    pub async fn stop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// The data plane, for the cleanup's line.
    pub fn plane(&self) -> &DataPlane {
        &self.plane
    }
}

/// What the weight Switchyard set means for `wave`'s cohort now.
pub fn routing_of(wave: Option<&MigrationWave>) -> String {
    let Some(status) = wave.and_then(|w| w.status.as_ref()) else {
        return "0% (not started)".into();
    };
    let weight = status.target_weight.unwrap_or(0);
    let step = status
        .step_index
        .and_then(|i| wave?.spec.steps.get(usize::try_from(i).ok()?));
    match status.phase {
        WavePhase::Pending => "0% (pending)".into(),
        WavePhase::RollingBack | WavePhase::RolledBack => "0% (rolled back)".into(),
        WavePhase::Completed => "100% (completed)".into(),
        _ if step.is_some_and(|s| s.quiet.is_some()) => format!("{weight}%, writes → maint."),
        _ if step.is_some_and(|s| s.dual_access.is_some()) => format!("{weight}%, dual access"),
        _ => format!("{weight}%"),
    }
}

fn classify(backends: &Backends, who: &str) -> Served {
    if who == backends.legacy {
        Served::Legacy
    } else if who == backends.target {
        Served::Target
    } else if backends.maintenance.as_deref() == Some(who) {
        Served::Maintenance
    } else {
        Served::Other
    }
}

/// `legacy-crm 3, unified-orchestration 12`, for a message.
pub fn describe(backends: &Backends, share: &Share) -> String {
    let mut parts = vec![
        format!("{} {}", backends.legacy, share.legacy),
        format!("{} {}", backends.target, share.target),
    ];
    if let Some(m) = &backends.maintenance {
        parts.push(format!("{m} {}", share.maintenance));
    }
    parts.push(format!("other {}", share.other));
    format!("({})", parts.join(", "))
}

/// Each wave's cohort with the headers the plan's cohort keys name.
pub fn cohorts(waves: &[MigrationWave], backends: &Backends) -> Vec<Cohort> {
    waves
        .iter()
        .map(|wave| Cohort {
            wave: wave.metadata.name.clone().unwrap_or_default(),
            headers: backends
                .cohort_headers
                .iter()
                .filter_map(|(key, header)| {
                    Some((header.clone(), wave.spec.cohort.get(key)?.clone()))
                })
                .collect(),
        })
        .collect()
}
