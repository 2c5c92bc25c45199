//! The chaos suite's invariant checks, over the whole timeline the recorder kept (and
//! the API server's audit log). Each check says why it is sound: a violation is only
//! reported when the recorded evidence proves it, whatever the timing of the watch.
//!
//! Times: a version's arrival time (`Version::at`) is never earlier than its commit; a
//! history entry's `at` is the operator's clock when it decided; audit timestamps are the
//! API server's. All three clocks are this machine's.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::{SignedDuration, Timestamp};
use switchyard::{
    api::{HistoryEntry, MigrationWave, WavePhase},
    routing::{
        HTTPRoute, WAVE_LABEL,
        configmap::{ROUTING_TABLE_LABEL, RoutingTableEntry},
        gateway::{COHORT_RULE, LEGACY_OVERRIDE_RULE},
    },
};

use super::recorder::{Kind, Version};

/// What the checks found: how many checks of each kind ran, and every violation.
#[derive(Default, Debug)]
pub struct Report {
    pub checks: BTreeMap<&'static str, u64>,
    pub violations: Vec<String>,
}

impl Report {
    pub fn check(&mut self, name: &'static str, ok: bool, detail: impl FnOnce() -> String) {
        *self.checks.entry(name).or_default() += 1;
        if !ok {
            self.violations.push(format!("[{name}] {}", detail()));
        }
    }

    pub fn total_checks(&self) -> u64 {
        self.checks.values().sum()
    }
}

/// A window of time during which the test knows something held (an outage, a freeze).
#[derive(Clone, Debug)]
pub struct Window {
    pub what: String,
    pub from: Timestamp,
    pub until: Timestamp,
}

/// A human action the suite appended (each by a user of its own).
#[derive(Clone, Debug)]
pub struct ActionRecord {
    /// When the human started to record it (an API server restart may delay the append).
    pub requested: Timestamp,
    pub wave: String,
    pub user: String,
    pub kind: String,
    pub at: Timestamp,
}

/// What the checks need besides the recorded versions.
pub struct Context<'a> {
    pub versions: &'a [Version],
    pub actions: &'a [ActionRecord],
    /// When Prometheus was down (stop issued .. restart begun).
    pub prometheus_outages: &'a [Window],
    /// Every fault, injected .. cleared.
    pub faults: &'a [Window],
    /// The plans' freeze window: the first `freeze_secs` of every minute (UTC).
    pub freeze_secs: i64,
    /// How long after a fault cleared a rollback's routing must be in place.
    pub rollback_bound: SignedDuration,
    /// The audit log's lines.
    pub audit: &'a str,
    /// The prefix of the users the replicas act as (impersonated); each replica
    /// incarnation's user is its Lease identity.
    pub replica_user_prefix: &'a str,
    pub namespace: &'a str,
}

/// The cohort's routing as a router holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RouteState {
    pub weight: i32,
    pub legacy_override: bool,
}

/// One recorded version of one wave's routing.
#[derive(Clone, Debug)]
pub struct RouteVersion {
    pub rv: u64,
    pub at: Timestamp,
    pub state: RouteState,
}

pub fn route_state(route: &HTTPRoute, target: &str) -> RouteState {
    let weight = route
        .spec
        .rules
        .iter()
        .filter(|rule| rule.name.as_deref() == Some(COHORT_RULE))
        .flat_map(|rule| &rule.backend_refs)
        .filter(|backend| backend.name == target)
        .map(|backend| backend.weight)
        .sum();
    let legacy_override = route
        .spec
        .rules
        .iter()
        .any(|rule| rule.name.as_deref() == Some(LEGACY_OVERRIDE_RULE));
    RouteState {
        weight,
        legacy_override,
    }
}

pub fn table_state(entry: &RoutingTableEntry) -> RouteState {
    RouteState {
        weight: i32::from(entry.target_weight),
        legacy_override: entry.legacy_override,
    }
}

/// Every wave's routing over time, from HTTPRoutes (by their wave label) and from the
/// routing-table ConfigMaps (one key per wave); a deleted route or entry is weight 0.
pub fn route_timelines(versions: &[Version], target: &str) -> HashMap<String, Vec<RouteVersion>> {
    let mut timelines: HashMap<String, Vec<RouteVersion>> = HashMap::new();
    let mut route_waves: HashMap<String, String> = HashMap::new();
    let mut table_keys: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut push = |wave: &str, rv: u64, at: Timestamp, state: RouteState| {
        let line = timelines.entry(wave.to_owned()).or_default();
        if line.last().is_none_or(|last| last.state != state) {
            line.push(RouteVersion { rv, at, state });
        }
    };
    for v in versions {
        match v.kind {
            Kind::Route => {
                let route: Option<HTTPRoute> = v
                    .object
                    .clone()
                    .and_then(|o| serde_json::from_value(o).ok());
                if let Some(wave) = route
                    .as_ref()
                    .and_then(|r| r.metadata.labels.as_ref())
                    .and_then(|l| l.get(WAVE_LABEL))
                {
                    route_waves.insert(v.name.clone(), wave.clone());
                }
                let Some(wave) = route_waves.get(&v.name).cloned() else {
                    continue;
                };
                let state = route.map(|r| route_state(&r, target)).unwrap_or_default();
                push(&wave, v.rv, v.at, state);
            }
            Kind::Table => {
                let cm: Option<k8s_openapi::api::core::v1::ConfigMap> = v
                    .object
                    .clone()
                    .and_then(|o| serde_json::from_value(o).ok());
                let is_table = cm
                    .as_ref()
                    .and_then(|c| c.metadata.labels.as_ref())
                    .is_some_and(|l| l.contains_key(ROUTING_TABLE_LABEL));
                if cm.is_some() && !is_table {
                    continue;
                }
                let data = cm.and_then(|c| c.data).unwrap_or_default();
                let keys = table_keys.entry(v.name.clone()).or_default();
                keys.extend(data.keys().cloned());
                for wave in keys.iter() {
                    let state = data
                        .get(wave)
                        .and_then(|json| RoutingTableEntry::from_json(wave, json).ok())
                        .map(|e| table_state(&e))
                        .unwrap_or_default();
                    push(wave, v.rv, v.at, state);
                }
            }
            _ => {}
        }
    }
    timelines
}

/// One wave's recorded versions that carry a status, in resourceVersion order.
fn wave_timelines(versions: &[Version]) -> BTreeMap<String, Vec<(u64, Timestamp, MigrationWave)>> {
    let mut waves: BTreeMap<String, Vec<(u64, Timestamp, MigrationWave)>> = BTreeMap::new();
    for v in versions.iter().filter(|v| v.kind == Kind::Wave) {
        let Some(wave) = v
            .object
            .clone()
            .and_then(|o| serde_json::from_value::<MigrationWave>(o).ok())
        else {
            continue;
        };
        if wave.status.is_some() {
            waves
                .entry(v.name.clone())
                .or_default()
                .push((v.rv, v.at, wave));
        }
    }
    waves
}

type EntryKey = (
    Timestamp,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn key(e: &HistoryEntry) -> EntryKey {
    (
        e.at.0,
        e.event.clone(),
        e.reason.clone(),
        e.actor.clone(),
        e.message.clone(),
    )
}

fn history(wave: &MigrationWave) -> &[HistoryEntry] {
    wave.status.as_ref().map_or(&[], |s| s.history.as_slice())
}

fn describe(wave: &MigrationWave) -> String {
    let s = wave.status.clone().unwrap_or_default();
    format!(
        "phase={:?} step={:?} weight={:?} attempt={} approvedBy={:?} analysis=[{}]",
        s.phase,
        s.step_index,
        s.target_weight,
        s.attempt,
        s.approved_by,
        s.analysis
            .iter()
            .map(|m| format!(
                "{}={} at {:?}",
                m.name,
                m.result,
                m.evaluated_at.as_ref().map(|t| t.0.to_string())
            ))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn in_freeze(at: Timestamp, freeze_secs: i64, grace: i64) -> bool {
    let second = at.as_second().rem_euclid(60);
    second >= grace && second < freeze_secs
}

/// The wave's status is the operator's record of its decisions: every forward move
/// (a higher step index or weight within one attempt, or completion) is checked against
/// the state it moved from and the evidence it recorded with the move.
fn check_forward_moves(cx: &Context, report: &mut Report) {
    for (name, line) in wave_timelines(cx.versions) {
        for pair in line.windows(2) {
            let ((_, _, prev), (rv, at, next)) = (&pair[0], &pair[1]);
            let (ps, ns) = (prev.status.clone().unwrap(), next.status.clone().unwrap());
            let seen: BTreeSet<EntryKey> = history(prev).iter().map(key).collect();
            let new: Vec<&HistoryEntry> = history(next)
                .iter()
                .filter(|e| !seen.contains(&key(e)))
                .collect();
            let new_event = |event: &str| new.iter().any(|e| e.event == event);
            let timeline = || {
                format!(
                    "wave {name} rv {rv} (arrived {at}):\n    from {}\n    to   {}\n    new history: {:?}",
                    describe(prev),
                    describe(next),
                    new.iter()
                        .map(|e| format!("{} {} {:?} {:?}", e.at.0, e.event, e.actor, e.message))
                        .collect::<Vec<_>>()
                )
            };
            // A retry is the one way out of RolledBack (invariant 4).
            if ps.phase == WavePhase::RolledBack && ns.phase != WavePhase::RolledBack {
                report.check(
                    "rolled-back wave leaves only by retry",
                    new_event("Retried"),
                    || format!("left RolledBack without a Retried entry: {}", timeline()),
                );
            }
            if ns.attempt != ps.attempt {
                continue;
            }
            let step_up = match (ps.step_index, ns.step_index) {
                (None, Some(_)) => true,
                (Some(a), Some(b)) => b > a,
                _ => false,
            };
            let weight_up = ns.target_weight.unwrap_or(0) > ps.target_weight.unwrap_or(0);
            let completed = ns.phase == WavePhase::Completed && ps.phase != WavePhase::Completed;
            if !(step_up || weight_up || completed) {
                continue;
            }
            report.check(
                "no forward move while paused",
                ps.phase != WavePhase::Paused || new_event("Resumed"),
                || {
                    format!(
                        "moved forward from Paused without a Resumed entry: {}",
                        timeline()
                    )
                },
            );
            report.check(
                "no forward move while rolled back",
                ps.phase != WavePhase::RolledBack,
                || format!("moved forward while RolledBack: {}", timeline()),
            );
            let bad_metrics: Vec<String> = ns
                .analysis
                .iter()
                .filter(|m| m.result != "Healthy")
                .map(|m| format!("{}={}", m.name, m.result))
                .collect();
            report.check(
                "no forward move while breaching or unknown",
                bad_metrics.is_empty(),
                || format!("moved forward with {bad_metrics:?}: {}", timeline()),
            );
            // Moving past an approval step needs an approval of that step in this attempt.
            if let Some(i) = ps.step_index
                && step_up
                && next
                    .spec
                    .steps
                    .get(i as usize)
                    .is_some_and(|s| s.approval.is_some())
            {
                let attempt_started = history(next)
                    .iter()
                    .filter(|e| e.event == "Retried")
                    .map(|e| e.at.0)
                    .max();
                let approved = ps.approved_by.is_some()
                    || history(next).iter().any(|e| {
                        e.event == "Approved"
                            && e.message
                                .as_deref()
                                .is_some_and(|m| m.starts_with(&format!("step {i} approved")))
                            && attempt_started.is_none_or(|t| e.at.0 >= t)
                    });
                report.check(
                    "no forward move past an approval without one",
                    approved,
                    || format!("moved past approval step {i} unapproved: {}", timeline()),
                );
            }
            // The decision's own time: the StepStarted / WaveStarted / Completed entry.
            let decided = new
                .iter()
                .filter(|e| {
                    matches!(
                        e.event.as_str(),
                        "StepStarted" | "WaveStarted" | "Completed" | "LegacyRetired"
                    )
                })
                .map(|e| e.at.0)
                .max();
            if let Some(decided) = decided {
                // The plan's controller needs a moment to see the window open and hold
                // its waves; a move decided 3 s into the window is past that moment.
                report.check("no forward move while frozen", !in_freeze(decided, cx.freeze_secs, 3), || {
                    format!("moved forward at {decided}, inside the freeze window (second 3..{} of the minute): {}", cx.freeze_secs, timeline())
                });
                // With Prometheus down every query fails; a move decided 4 s (four
                // analysis intervals) into the outage was decided without evidence.
                let outage = cx.prometheus_outages.iter().find(|w| {
                    decided >= w.from + SignedDuration::from_secs(4) && decided < w.until
                });
                report.check(
                    "no forward move while Prometheus is down",
                    outage.is_none(),
                    || {
                        let w = outage.unwrap();
                        format!(
                            "moved forward at {decided}, during the {} ({} .. {}): {}",
                            w.what,
                            w.from,
                            w.until,
                            timeline()
                        )
                    },
                );
            }
        }
    }
}

/// Legacy retirement and dual access, from the status and from the routers.
fn check_dual_access(
    cx: &Context,
    routes: &HashMap<String, Vec<RouteVersion>>,
    report: &mut Report,
) {
    let waves = wave_timelines(cx.versions);
    for (name, line) in &waves {
        // Every LegacyRetired entry ever recorded, against the window persisted in the
        // version just before the first one that carries it (the decision's input).
        let mut seen = BTreeSet::new();
        for (i, (_, _, wave)) in line.iter().enumerate() {
            for e in history(wave) {
                if e.event != "LegacyRetired" || !seen.insert(key(e)) || i == 0 {
                    continue;
                }
                let before = &line[i - 1].2;
                // A version the watch missed (a relist after an API server restart) leaves
                // the decision's input unknown; only a move out of DualAccess is judged.
                if before
                    .status
                    .as_ref()
                    .is_none_or(|s| s.phase != WavePhase::DualAccess)
                {
                    continue;
                }
                let until = before
                    .status
                    .as_ref()
                    .and_then(|s| s.dual_access_until.clone());
                report.check(
                    "legacy never retired before dualAccessUntil (status)",
                    until.as_ref().is_some_and(|u| e.at.0 >= u.0),
                    || {
                        format!(
                            "wave {name}: LegacyRetired at {} but dualAccessUntil was {:?}; before: {}",
                            e.at.0,
                            until.map(|u| u.0.to_string()),
                            describe(before)
                        )
                    },
                );
            }
        }
        // A router dropping the legacy override while the cohort is all on the target
        // retires legacy; the wave's window then in force is the last status version
        // committed before that routing version.
        let Some(route) = routes.get(name) else {
            continue;
        };
        for pair in route.windows(2) {
            let (prev, next) = (&pair[0], &pair[1]);
            if !(prev.state.legacy_override
                && !next.state.legacy_override
                && next.state.weight == 100)
            {
                continue;
            }
            let status = line.iter().rev().find(|(rv, _, _)| *rv < next.rv);
            let until = status
                .and_then(|(_, _, w)| w.status.as_ref().and_then(|s| s.dual_access_until.clone()));
            // The operator routes before it records. A move into DualAccess whose status
            // write was refused (a conflict with a person's action) leaves the override
            // on the routers with no window in status. The next decision (a pause, say)
            // routes the step that status holds, and drops it again. No window was
            // granted, and legacy is not retired: the wave has not moved past dual
            // access. Such a drop counts only when the next status committed after it
            // says the wave completed.
            let next_status = line.iter().find(|(rv, _, _)| *rv > next.rv);
            let completed_after = next_status.is_some_and(|(_, _, w)| {
                w.status
                    .as_ref()
                    .is_some_and(|s| s.phase == WavePhase::Completed)
            });
            if until.is_none() && !completed_after {
                continue;
            }
            report.check("legacy never retired before dualAccessUntil (routing)", until.as_ref().is_some_and(|u| next.at >= u.0), || {
                format!(
                    "wave {name}: routing rv {} (arrived {}) dropped the legacy override at weight 100; dualAccessUntil was {:?}; status then: {}",
                    next.rv, next.at, until.map(|u| u.0.to_string()), status.map(|(_, _, w)| describe(w)).unwrap_or_default()
                )
            });
        }
    }
}

/// A rollback's routing: 100% legacy within the bound after the later of the rollback's
/// record and the end of the last fault before the fix; and no routing version with
/// target weight until a retry.
fn check_rollbacks(
    cx: &Context,
    routes: &HashMap<String, Vec<RouteVersion>>,
    report: &mut Report,
) -> Vec<SignedDuration> {
    let mut latencies = Vec::new();
    for (name, line) in wave_timelines(cx.versions) {
        let route = routes.get(&name).cloned().unwrap_or_default();
        let mut i = 0;
        while i < line.len() {
            let (rv, at, wave) = &line[i];
            let rolled_back = wave
                .status
                .as_ref()
                .is_some_and(|s| s.phase == WavePhase::RolledBack);
            let was = i > 0
                && line[i - 1]
                    .2
                    .status
                    .as_ref()
                    .is_some_and(|s| s.phase == WavePhase::RolledBack);
            if !rolled_back || was {
                i += 1;
                continue;
            }
            // The rolled-back run ends at the next version that is not RolledBack.
            // The rolled-back run ends at the next version that is not RolledBack, or
            // of another attempt (a retry and a second rollback the watch did not see
            // apart, across a relist).
            let attempt = wave.status.as_ref().map_or(0, |s| s.attempt);
            let end = line[i..]
                .iter()
                .find(|(_, _, w)| {
                    w.status
                        .as_ref()
                        .is_some_and(|s| s.phase != WavePhase::RolledBack || s.attempt != attempt)
                })
                .map(|(rv, _, _)| *rv);
            let state_at = |rv: u64| {
                route
                    .iter()
                    .rev()
                    .find(|r| r.rv <= rv)
                    .map(|r| r.state)
                    .unwrap_or_default()
            };
            let fixed = if state_at(*rv).weight == 0 {
                Some((*rv, *at))
            } else {
                route
                    .iter()
                    .find(|r| r.rv > *rv && r.state.weight == 0 && end.is_none_or(|e| r.rv < e))
                    .map(|r| (r.rv, r.at))
            };
            match fixed {
                None if end.is_some() => report.check("rollback routing in place within the bound", false, || {
                    format!("wave {name}: rolled back at rv {rv} ({at}) but its routing never reached 100% legacy before it left RolledBack")
                }),
                None => report.check("rollback routing in place within the bound", route.last().is_none_or(|r| r.state.weight == 0), || {
                    format!("wave {name}: rolled back at rv {rv} ({at}); its routing still sends {}% to the target", route.last().map_or(0, |r| r.state.weight))
                }),
                Some((fix_rv, fix_at)) => {
                    let last_fault_end = cx.faults.iter().map(|f| f.until).filter(|u| *u <= fix_at).max();
                    let from = last_fault_end.map_or(*at, |u| u.max(*at));
                    let latency = fix_at.duration_since(*at).max(SignedDuration::ZERO);
                    latencies.push(latency);
                    report.check("rollback routing in place within the bound", fix_at.duration_since(from) <= cx.rollback_bound, || {
                        format!("wave {name}: rolled back at rv {rv} ({at}); 100% legacy only at rv {fix_rv} ({fix_at}), {} after the last fault cleared", fix_at.duration_since(from))
                    });
                    // Until the retry, nothing sends the cohort to the target again. The
                    // run's end is the first recorded version out of RolledBack, but the
                    // watch can miss versions (a relist after an API server restart), and
                    // the operator routes before it records: so a routing version after a
                    // Retry was appended (after the rollback) and requested is no leak.
                    let retried_by = |when: Timestamp| {
                        cx.actions.iter().any(|a| {
                            a.wave == name && a.kind == "Retry" && a.at >= *at && a.requested <= when
                        })
                    };
                    let leak = route.iter().find(|r| {
                        r.rv > fix_rv
                            && r.state.weight > 0
                            && end.is_none_or(|e| r.rv < e)
                            && !retried_by(r.at)
                    });
                    report.check("a rolled-back wave's routing never advances without a retry", leak.is_none(), || {
                        let leak = leak.unwrap();
                        format!("wave {name}: rolled back at rv {rv}, legacy at rv {fix_rv}, then routing rv {} ({}) sent {}% to the target before any retry", leak.rv, leak.at, leak.state.weight)
                    });
                }
            }
            i += 1;
        }
    }
    latencies
}

/// Each action the suite appended leaves exactly one history entry by its (unique) user:
/// the effect, or ActionIgnored / ActionRefused. History is bounded, so every entry ever
/// recorded is collected across all versions.
fn check_actions_once(cx: &Context, report: &mut Report) {
    let waves = wave_timelines(cx.versions);
    let mut entries: HashMap<(String, String), BTreeSet<EntryKey>> = HashMap::new();
    for (name, line) in &waves {
        for (_, _, wave) in line {
            for e in history(wave) {
                if let Some(actor) = &e.actor {
                    entries
                        .entry((name.clone(), actor.clone()))
                        .or_default()
                        .insert(key(e));
                }
            }
        }
    }
    for action in cx.actions {
        let found = entries.get(&(action.wave.clone(), action.user.clone()));
        let n = found.map_or(0, BTreeSet::len);
        report.check("each action takes effect exactly once", n == 1, || {
            format!(
                "{} by {} on {} (appended {}) left {n} history entries: {:?}",
                action.kind,
                action.user,
                action.wave,
                action.at,
                found.map(|f| f
                    .iter()
                    .map(|k| format!("{} {} {:?}", k.0, k.1, k.4))
                    .collect::<Vec<_>>())
            )
        });
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    stage: String,
    verb: String,
    #[serde(default)]
    impersonated_user: Option<AuditUser>,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
    #[serde(default)]
    response_object: Option<serde_json::Value>,
    stage_timestamp: Timestamp,
}

#[derive(Debug, serde::Deserialize)]
struct AuditUser {
    username: String,
}

#[derive(Debug, serde::Deserialize)]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    subresource: String,
}

#[derive(Debug, serde::Deserialize)]
struct ResponseStatus {
    code: u16,
}

/// Figures of the fencing check, for the report.
#[derive(Debug, Default)]
pub struct Fencing {
    pub writes: usize,
    pub terms: usize,
    pub handovers_recorded: usize,
    /// Writes that completed after the successor took the Lease but before it acted.
    pub after_takeover: usize,
}

/// No write from a replica completes after a write from its successor.
///
/// Terms come from the API server's own record of the Lease writes: a term of replica X
/// starts with the first successful Lease write that leaves X the holder after one that
/// left someone else (the audit log keeps the Lease as written). Every replica incarnation acts
/// as a user of its own, so the audit log attributes each write. Writes are ordered by
/// the server's completion time (`stageTimestamp`, ResponseComplete). A write by X in
/// its term k that completes after a write of a later term's holder acting (any write
/// but the Lease's) is a violation: X wrote over its successor.
///
/// The successor's Lease acquisition is not such a write. A request already sent can
/// still be on the wire when the term ends (the proxy holds bytes for up to 5 s and
/// then delivers them), and nothing a client does recalls it; what keeps it harmless
/// is that it reaches the server before the successor acts, or carries a
/// resourceVersion that the successor's first write makes stale (docs/design-decisions.md,
/// "Fencing"). Such writes are counted ([`Fencing::after_takeover`]), not refused.
/// The recorder's Lease versions are checked against the audit terms: each holder the
/// watch saw must have had a term.
pub fn check_fencing(cx: &Context, report: &mut Report) -> Fencing {
    // (completed, writer, the Lease holder a Lease write left, what)
    let mut writes: Vec<(Timestamp, String, Option<String>, String)> = Vec::new();
    for line in cx.audit.lines() {
        let Ok(event) = serde_json::from_str::<AuditEvent>(line) else {
            continue;
        };
        let (Some(user), Some(object), Some(status)) = (
            &event.impersonated_user,
            &event.object_ref,
            &event.response_status,
        ) else {
            continue;
        };
        if event.stage != "ResponseComplete"
            || object.namespace != cx.namespace
            || !user.username.starts_with(cx.replica_user_prefix)
            || !(200..300).contains(&status.code)
            || !matches!(
                event.verb.as_str(),
                "create" | "update" | "patch" | "delete"
            )
        {
            continue;
        }
        let what = format!(
            "{} {}/{}{}",
            event.verb,
            object.resource,
            object.name,
            if object.subresource.is_empty() {
                String::new()
            } else {
                format!("/{}", object.subresource)
            }
        );
        let holder = (object.resource == "leases").then(|| {
            event
                .response_object
                .as_ref()
                .and_then(|o| o.pointer("/spec/holderIdentity"))
                .and_then(|h| h.as_str())
                .unwrap_or_default()
                .to_owned()
        });
        writes.push((event.stage_timestamp, user.username.clone(), holder, what));
    }
    writes.sort_by_key(|w| w.0);
    // Terms in order: (holder, start), from the holder each Lease write left.
    let mut terms: Vec<(String, Timestamp)> = Vec::new();
    for (at, _, holder, _) in &writes {
        if let Some(holder) = holder
            && !holder.is_empty()
            && terms.last().is_none_or(|(h, _)| h != holder)
        {
            terms.push((holder.clone(), *at));
        }
    }
    // Each term's first acting write: its holder's first write but the Lease's, before
    // the next term began.
    let first_acts: Vec<Option<Timestamp>> = terms
        .iter()
        .enumerate()
        .map(|(k, (holder, start))| {
            let end = terms.get(k + 1).map(|(_, next)| *next);
            writes
                .iter()
                .filter(|w| w.2.is_none() && &w.1 == holder && w.0 >= *start)
                .map(|w| w.0)
                .find(|at| end.is_none_or(|end| *at < end))
        })
        .collect();
    let mut after_takeover = 0;
    // The Lease arbitrates its own writes; every other write is checked.
    for (at, user, _, what) in writes.iter().filter(|w| w.2.is_none()) {
        // The writer's term: its latest term started at or before this write.
        let Some(mine) = terms
            .iter()
            .rposition(|(h, start)| h == user && start <= at)
        else {
            report.check("no write after the successor's", false, || {
                format!("{user} wrote ({what}) at {at} without ever having held the Lease")
            });
            continue;
        };
        let overwritten =
            (mine + 1..terms.len()).find(|&k| first_acts[k].is_some_and(|acted| acted < *at));
        report.check("no write after the successor's", overwritten.is_none(), || {
            let k = overwritten.unwrap();
            format!(
                "{user} wrote ({what}) at {at}, after its successor {} (Lease taken at {}) wrote at {}",
                terms[k].0,
                terms[k].1,
                first_acts[k].unwrap()
            )
        });
        if overwritten.is_none() && terms.get(mine + 1).is_some_and(|(_, start)| start < at) {
            after_takeover += 1;
        }
    }
    let holders: Vec<String> = cx
        .versions
        .iter()
        .filter(|v| v.kind == Kind::Lease)
        .filter_map(|v| {
            v.object
                .as_ref()?
                .pointer("/spec/holderIdentity")?
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let mut handovers = 0;
    for pair in holders.windows(2) {
        if pair[0] != pair[1] {
            handovers += 1;
        }
    }
    let term_users: BTreeSet<&str> = terms.iter().map(|(h, _)| h.as_str()).collect();
    for holder in holders.iter().collect::<BTreeSet<_>>() {
        report.check("the recorded Lease holders match the audited terms", term_users.contains(holder.as_str()) || holder.is_empty(), || {
            format!("the watch saw {holder} hold the Lease; the audit log has no Lease write by that user")
        });
    }
    Fencing {
        writes: writes.iter().filter(|w| w.2.is_none()).count(),
        terms: terms.len(),
        handovers_recorded: handovers,
        after_takeover,
    }
}

/// Runs every check; returns the report, the rollback latencies and the fencing figures.
pub fn check_all(cx: &Context) -> (Report, Vec<SignedDuration>, Fencing) {
    let mut report = Report::default();
    let routes = route_timelines(cx.versions, "orchestration");
    check_forward_moves(cx, &mut report);
    check_dual_access(cx, &routes, &mut report);
    let latencies = check_rollbacks(cx, &routes, &mut report);
    check_actions_once(cx, &mut report);
    let fencing = check_fencing(cx, &mut report);
    (report, latencies, fencing)
}

#[cfg(test)]
mod fencing_tests {
    use super::*;

    /// One audit line: `user` wrote `resource/name` at second `at`; a Lease write
    /// leaves `holder` holding it.
    fn line(user: &str, resource: &str, at: i64, holder: Option<&str>) -> String {
        let at = Timestamp::from_second(1_800_000_000 + at).unwrap();
        serde_json::json!({
            "stage": "ResponseComplete",
            "verb": "patch",
            "impersonatedUser": {"username": user},
            "objectRef": {"resource": resource, "namespace": "ns", "name": "x"},
            "responseStatus": {"code": 200},
            "responseObject": holder.map(|h| serde_json::json!({"spec": {"holderIdentity": h}})),
            "stageTimestamp": at.to_string(),
        })
        .to_string()
    }

    fn check(lines: &[String]) -> (Report, Fencing) {
        let audit = lines.join("\n");
        let cx = Context {
            versions: &[],
            actions: &[],
            prometheus_outages: &[],
            faults: &[],
            freeze_secs: 0,
            rollback_bound: SignedDuration::from_secs(1),
            audit: &audit,
            replica_user_prefix: "r-",
            namespace: "ns",
        };
        let mut report = Report::default();
        let fencing = check_fencing(&cx, &mut report);
        (report, fencing)
    }

    #[test]
    fn a_late_write_is_counted_before_the_successor_acts_and_refused_after() {
        let terms = || {
            vec![
                line("r-a", "leases", 0, Some("r-a")),
                line("r-a", "migrationwaves", 1, None),
                line("r-b", "leases", 10, Some("r-b")),
            ]
        };
        // Landed after b took the Lease, before b wrote anything else.
        let mut before = terms();
        before.push(line("r-a", "migrationwaves", 11, None));
        before.push(line("r-b", "migrationwaves", 12, None));
        let (report, fencing) = check(&before);
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert_eq!((fencing.terms, fencing.after_takeover), (2, 1));

        // Landed after b's first write: over it.
        let mut after = terms();
        after.push(line("r-b", "migrationwaves", 11, None));
        after.push(line("r-a", "migrationwaves", 12, None));
        let (report, _) = check(&after);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(report.violations[0].contains("after its successor r-b"));

        // Over a later term's write, even when the term in between never acted.
        let mut later = terms();
        later.push(line("r-c", "leases", 20, Some("r-c")));
        later.push(line("r-c", "httproutes", 21, None));
        later.push(line("r-a", "migrationwaves", 22, None));
        let (report, _) = check(&later);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(report.violations[0].contains("r-c"));
    }
}
