//! What `kubectl wave list`, `get` and `plan` show: pure functions of the objects and
//! the time, so that the views are tested on fixed fixtures.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::Timestamp;
use serde::Serialize;

use super::{Style, Tone, relative, span};
use crate::api::{
    CutoverPlan, GateStatus, MigrationWave, MigrationWaveStatus, ReadinessGate, Subjects, WavePhase,
};
use crate::engine::{conditions as cond, describe_step, freeze};

/// How many history entries `get` shows.
pub const HISTORY_SHOWN: usize = 8;

/// One line of `kubectl wave list`: a plan, or a wave of a plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListRow {
    /// `CutoverPlan` or `MigrationWave`.
    pub kind: &'static str,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// For waves: the plan it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// For waves: the cohort as `key=value` pairs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohort: Option<String>,
    /// The phase.
    pub phase: String,
    /// For waves: the current step as `index/steps`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// For waves: the percentage of the cohort on the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// What the object waits for, in words.
    pub waiting_for: String,
}

/// The rows of `kubectl wave list`: each plan followed by its waves in the plan's order,
/// then waves whose plan does not exist.
pub fn list_rows(plans: &[CutoverPlan], waves: &[MigrationWave], now: Timestamp) -> Vec<ListRow> {
    let mut rows = Vec::new();
    let mut shown = vec![false; waves.len()];
    let mut plans: Vec<&CutoverPlan> = plans.iter().collect();
    plans.sort_by_key(|p| (namespace_of(&p.metadata), name_of(&p.metadata)));
    for plan in plans {
        let namespace = namespace_of(&plan.metadata);
        let status = plan.status.clone().unwrap_or_default();
        rows.push(ListRow {
            kind: "CutoverPlan",
            namespace: namespace.clone(),
            name: name_of(&plan.metadata),
            plan: None,
            cohort: None,
            phase: format!("{:?}", status.phase),
            step: None,
            weight: None,
            waiting_for: plan_waiting_for(plan),
        });
        let mut members: Vec<(usize, &MigrationWave)> = waves
            .iter()
            .enumerate()
            .filter(|(_, w)| {
                namespace_of(&w.metadata) == namespace && w.spec.plan == name_of(&plan.metadata)
            })
            .collect();
        let order = |w: &MigrationWave| {
            let name = name_of(&w.metadata);
            plan.spec
                .waves
                .iter()
                .position(|r| r.name == name)
                .unwrap_or(usize::MAX)
        };
        members.sort_by_key(|(_, w)| (order(w), name_of(&w.metadata)));
        for (index, wave) in members {
            shown[index] = true;
            rows.push(wave_row(wave, Some(plan), now));
        }
    }
    let mut orphans: Vec<&MigrationWave> = waves
        .iter()
        .zip(&shown)
        .filter(|(_, shown)| !**shown)
        .map(|(w, _)| w)
        .collect();
    orphans.sort_by_key(|w| (namespace_of(&w.metadata), name_of(&w.metadata)));
    rows.extend(orphans.into_iter().map(|w| wave_row(w, None, now)));
    rows
}

fn wave_row(wave: &MigrationWave, plan: Option<&CutoverPlan>, now: Timestamp) -> ListRow {
    let status = wave.status.clone().unwrap_or_default();
    ListRow {
        kind: "MigrationWave",
        namespace: namespace_of(&wave.metadata),
        name: name_of(&wave.metadata),
        plan: Some(wave.spec.plan.clone()),
        cohort: Some(wave.spec.cohort_display()),
        phase: format!("{:?}", status.phase),
        step: Some(steps_done(wave)),
        weight: Some(status.target_weight.unwrap_or(0)),
        waiting_for: waiting_for(wave, plan, now),
    }
}

/// Steps done out of all, as `2/6`: a wave at step index 2 has finished steps 0 and 1;
/// a completed wave has finished them all.
pub fn steps_done(wave: &MigrationWave) -> String {
    let total = wave.spec.steps.len();
    let status = wave.status.clone().unwrap_or_default();
    let done = match (status.phase, status.step_index) {
        (WavePhase::Completed, _) => total,
        (_, Some(i)) => usize::try_from(i).unwrap_or(0),
        (_, None) => 0,
    };
    format!("{done}/{total}")
}

/// `kubectl wave list` as a table. `all_namespaces` adds a namespace column.
pub fn list_table(rows: &[ListRow], all_namespaces: bool, style: Style) -> String {
    if rows.is_empty() {
        return "No plans or waves found.\n".into();
    }
    let name = |r: &ListRow| match r.kind {
        "CutoverPlan" => format!("plan/{}", r.name),
        _ if r.plan.is_some() && rows.iter().any(|p| is_plan_of(p, r)) => {
            format!("  {}", r.name)
        }
        _ => r.name.clone(),
    };
    let columns: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.namespace.clone(),
                name(r),
                r.cohort.clone().unwrap_or_else(|| "-".into()),
                r.phase.clone(),
                r.step.clone().unwrap_or_else(|| "-".into()),
                r.weight.map_or("-".into(), |w| format!("{w}%")),
                r.waiting_for.clone(),
            ]
        })
        .collect();
    let headers = [
        "NAMESPACE",
        "NAME",
        "COHORT",
        "PHASE",
        "STEP",
        "WEIGHT",
        "WAITING FOR",
    ];
    let skip = usize::from(!all_namespaces);
    let widths: Vec<usize> = (0..headers.len())
        .map(|c| {
            columns
                .iter()
                .map(|row| row[c].chars().count())
                .chain([headers[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let last = headers.len() - 1;
    let header: Vec<String> = (skip..headers.len())
        .map(|c| {
            if c == last {
                headers[c].to_owned()
            } else {
                format!("{:width$}", headers[c], width = widths[c])
            }
        })
        .collect();
    let _ = writeln!(out, "{}", style.paint(Tone::Bold, &header.join("  ")));
    for (row, cells) in rows.iter().zip(&columns) {
        let line: Vec<String> = (skip..headers.len())
            .map(|c| {
                let tone = match c {
                    3 => phase_tone_str(&row.phase),
                    _ => Tone::Dim,
                };
                match c {
                    3 => style.pad(tone, &cells[c], widths[c]),
                    c if c == last => cells[c].clone(),
                    _ => format!("{:width$}", cells[c], width = widths[c]),
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

fn is_plan_of(plan_row: &ListRow, wave_row: &ListRow) -> bool {
    plan_row.kind == "CutoverPlan"
        && plan_row.namespace == wave_row.namespace
        && wave_row.plan.as_deref() == Some(plan_row.name.as_str())
}

/// What a plan waits for, in one line.
pub fn plan_waiting_for(plan: &CutoverPlan) -> String {
    let Some(status) = &plan.status else {
        return "the operator to look at it".into();
    };
    if let Some(c) = cond::get(&status.conditions, "Valid").filter(|c| c.status == "False") {
        return format!("a fix: {}", c.message);
    }
    if let Some(freeze) = &status.freeze {
        return format!(
            "freeze window {} to close at {}",
            freeze.window, freeze.until.0
        );
    }
    let failing: Vec<&str> = status
        .gates
        .iter()
        .filter(|g| !g.passing)
        .map(|g| g.name.as_str())
        .collect();
    if !failing.is_empty() {
        return format!("gates: {}", failing.join(", "));
    }
    match status.phase {
        crate::api::PlanPhase::Completed => "-".into(),
        _ => format!(
            "waves: {} done",
            status.waves_summary.as_deref().unwrap_or("?")
        ),
    }
}

/// What a wave waits for, in one line: an approval and from whom, the end of a timed
/// step, a human to resume or retry, or the plan.
pub fn waiting_for(wave: &MigrationWave, plan: Option<&CutoverPlan>, now: Timestamp) -> String {
    let status = wave.status.clone().unwrap_or_default();
    let name = name_of(&wave.metadata);
    if let Some(c) = cond::get(&status.conditions, cond::VALID).filter(|c| c.status == "False") {
        return format!("a fix: {}", c.message);
    }
    let plan_entry = plan
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.waves.iter().find(|w| w.name == name));
    let plan_hold = plan_entry.and_then(|e| {
        e.held_by.as_ref().map(|reason| {
            let mut text = format!("plan ({reason})");
            if let Some(message) = e.message.as_deref().filter(|m| !m.is_empty()) {
                let _ = write!(text, ": {message}");
            }
            text
        })
    });
    match status.phase {
        WavePhase::Pending => match (plan, plan_entry) {
            (None, _) => format!("plan {} (not found)", wave.spec.plan),
            (Some(_), Some(entry)) if entry.admitted => "start (admitted by the plan)".into(),
            (Some(_), _) => plan_hold.unwrap_or_else(|| "the plan to admit it".into()),
        },
        WavePhase::AwaitingApproval => {
            let step = status.step_index.unwrap_or(0);
            format!(
                "approval of step {step} by {}",
                who(step_approvers(wave, plan, step).as_ref())
            )
        }
        WavePhase::Paused => {
            let paused = cond::get(&status.conditions, cond::PAUSED)
                .filter(|c| c.status == "True")
                .map(|c| format!("{}: {}", c.reason, c.message));
            match paused {
                Some(text) if text.starts_with(cond::reason::MANUAL_PAUSE) => {
                    format!("resume ({text})")
                }
                Some(text) => text,
                None => plan_hold.unwrap_or_else(|| "resume".into()),
            }
        }
        WavePhase::RollingBack => "routing back to legacy (retrying)".into(),
        WavePhase::RolledBack => {
            let why = cond::get(&status.conditions, cond::ROLLED_BACK)
                .filter(|c| c.status == "True")
                .map(|c| format!(" after {}: {}", c.reason, c.message))
                .unwrap_or_default();
            format!("retry{why}")
        }
        WavePhase::Completed => "-".into(),
        WavePhase::Failed => "a fix (the wave failed)".into(),
        WavePhase::Progressing | WavePhase::Quiet | WavePhase::DualAccess => {
            if let Some(hold) = plan_hold.filter(|_| plan_entry.is_some_and(|e| !e.admitted)) {
                return hold;
            }
            step_end(wave, &status, now).unwrap_or_else(|| "the next step".into())
        }
    }
}

/// When the current timed step ends, in words.
fn step_end(wave: &MigrationWave, status: &MigrationWaveStatus, now: Timestamp) -> Option<String> {
    let index = status.step_index? as usize;
    let step = wave.spec.steps.get(index)?;
    let started = status.step_started_at.as_ref()?.0;
    let (what, duration) = if let Some(t) = &step.analysis {
        ("analysis", &t.duration)
    } else if let Some(t) = &step.quiet {
        ("quiet period", &t.duration)
    } else if step.dual_access.is_some() {
        let until = status.dual_access_until.as_ref()?.0;
        return Some(format!(
            "dual access to end {} (then legacy is retired)",
            relative(now, until)
        ));
    } else {
        return None;
    };
    let duration = jiff::SignedDuration::try_from(duration.parse().ok()?).ok()?;
    let end = started.checked_add(duration).ok()?;
    Some(format!("{what} to end {}", relative(now, end)))
}

/// Who may approve step `step`: the step's own approvers, else the plan's.
fn step_approvers(wave: &MigrationWave, plan: Option<&CutoverPlan>, step: i32) -> Option<Subjects> {
    let own = wave
        .spec
        .steps
        .get(usize::try_from(step).ok()?)
        .and_then(|s| s.approval.as_ref())
        .and_then(|a| a.approvers.clone());
    own.or_else(|| plan.and_then(|p| p.spec.approvers.clone()))
}

fn gate_approvers(gate: &ReadinessGate, plan: &CutoverPlan) -> Option<Subjects> {
    gate.manual
        .as_ref()
        .and_then(|m| m.approvers.clone())
        .or_else(|| plan.spec.approvers.clone())
}

/// `users a, b; groups c` or `the approvers (none set)`.
pub fn who(subjects: Option<&Subjects>) -> String {
    let Some(s) = subjects.filter(|s| !s.users.is_empty() || !s.groups.is_empty()) else {
        return "an approver (none configured)".into();
    };
    let mut parts = Vec::new();
    if !s.users.is_empty() {
        parts.push(format!("users {}", s.users.join(", ")));
    }
    if !s.groups.is_empty() {
        parts.push(format!("groups {}", s.groups.join(", ")));
    }
    parts.join("; ")
}

/// `kubectl wave get WAVE`: the wave's steps with the current one marked, the weight, the
/// dual-access countdown, each metric against its threshold, pending approvals and the
/// latest history.
pub fn wave_view(
    wave: &MigrationWave,
    plan: Option<&CutoverPlan>,
    now: Timestamp,
    style: Style,
) -> String {
    let status = wave.status.clone().unwrap_or_default();
    let name = name_of(&wave.metadata);
    let namespace = namespace_of(&wave.metadata);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}/{}  {}",
        style.paint(Tone::Bold, "MigrationWave"),
        namespace,
        style.paint(Tone::Bold, &name),
        style.paint(phase_tone(status.phase), &format!("{:?}", status.phase)),
    );
    let plan_note = if plan.is_some() { "" } else { " (not found)" };
    let _ = writeln!(out, "  Plan:      {}{plan_note}", wave.spec.plan);
    let _ = writeln!(out, "  Cohort:    {}", wave.spec.cohort_display());
    let weight = status.target_weight.unwrap_or(0);
    let _ = writeln!(
        out,
        "  Weight:    {weight}% to target, {}% to legacy",
        100 - weight
    );
    if status.attempt > 0 {
        let _ = writeln!(out, "  Attempt:   {} (retried)", status.attempt + 1);
    }
    let _ = writeln!(out, "  Waiting:   {}", waiting_for(wave, plan, now));

    let _ = writeln!(out, "{}", style.paint(Tone::Bold, "Steps"));
    let current = status.step_index.map(|i| i as usize);
    let described: Vec<String> = wave.spec.steps.iter().map(describe_step).collect();
    let width = described.iter().map(|d| d.len()).max().unwrap_or(0);
    for (i, text) in described.iter().enumerate() {
        let (marker, state, tone) = step_state(status.phase, current, i);
        let line = format!(
            "  {} {i:>2}  {}  {}",
            if marker {
                style.paint(Tone::Bold, ">")
            } else {
                " ".into()
            },
            if marker {
                style.pad(Tone::Bold, text, width)
            } else {
                format!("{text:width$}")
            },
            style.paint(tone, state)
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }

    if let Some(index) = wave.spec.steps.iter().position(|s| s.dual_access.is_some()) {
        let line = match status.dual_access_until.as_ref().map(|t| t.0) {
            Some(until) if until > now => format!(
                "legacy reachable for {} more, until {until}",
                span(until.duration_since(now))
            ),
            Some(until) => format!("ended at {until}; legacy retired"),
            None => format!(
                "{} from step {index}, not started",
                wave.spec.steps[index]
                    .dual_access
                    .as_ref()
                    .map_or("", |t| t.duration.as_str())
            ),
        };
        let _ = writeln!(out, "  Dual access: {line}");
    }

    let metrics = analysis_lines(wave, plan, &status);
    if !metrics.is_empty() {
        let _ = writeln!(out, "{}", style.paint(Tone::Bold, "Analysis"));
        let name_w = metrics.iter().map(|m| m.name.len()).max().unwrap_or(0);
        let value_w = metrics.iter().map(|m| m.value.len()).max().unwrap_or(0);
        let range_w = metrics.iter().map(|m| m.range.len()).max().unwrap_or(0);
        for m in &metrics {
            let _ = writeln!(
                out,
                "  {:name_w$}  {:>value_w$}  {:range_w$}  {}",
                m.name,
                m.value,
                m.range,
                style.paint(result_tone(&m.result), &m.result)
            );
        }
    }

    if let Some(pending) = pending_approval(wave, plan, &status) {
        let _ = writeln!(out, "{}", style.paint(Tone::Bold, "Pending approval"));
        let _ = writeln!(out, "  {pending}");
    }

    let held: Vec<String> = status
        .conditions
        .iter()
        .filter(|c| {
            (c.type_ == cond::PAUSED || c.type_ == cond::ROLLED_BACK) && c.status == "True"
                || c.type_ == cond::VALID && c.status == "False"
        })
        .map(|c| format!("{} ({}): {}", c.type_, c.reason, c.message))
        .collect();
    if !held.is_empty() {
        let _ = writeln!(out, "{}", style.paint(Tone::Bold, "Conditions"));
        for line in held {
            let _ = writeln!(out, "  {line}");
        }
    }

    if !status.history.is_empty() {
        let _ = writeln!(out, "{}", style.paint(Tone::Bold, "History"));
        let skip = status.history.len().saturating_sub(HISTORY_SHOWN);
        for entry in &status.history[skip..] {
            let mut line = format!(
                "  {}  {:<14} {}",
                entry.at.0,
                entry.event,
                entry.actor.as_deref().unwrap_or("-")
            );
            if let Some(message) = entry.message.as_deref().filter(|m| !m.is_empty()) {
                let _ = write!(line, ": {message}");
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    out
}

fn step_state(phase: WavePhase, current: Option<usize>, i: usize) -> (bool, &'static str, Tone) {
    let Some(current) = current else {
        return (false, "", Tone::Dim);
    };
    if i < current || (i == current && phase == WavePhase::Completed) {
        return (false, "done", Tone::Good);
    }
    if i > current {
        return (false, "", Tone::Dim);
    }
    let (state, tone) = match phase {
        WavePhase::AwaitingApproval => ("waiting for approval", Tone::Warn),
        WavePhase::Paused => ("paused", Tone::Warn),
        WavePhase::RollingBack => ("rolling back", Tone::Bad),
        WavePhase::RolledBack => ("rolled back here", Tone::Bad),
        WavePhase::Failed => ("failed", Tone::Bad),
        _ => ("running", Tone::Active),
    };
    (true, state, tone)
}

struct MetricLine {
    name: String,
    value: String,
    range: String,
    result: String,
}

fn analysis_lines(
    wave: &MigrationWave,
    plan: Option<&CutoverPlan>,
    status: &MigrationWaveStatus,
) -> Vec<MetricLine> {
    let effective = crate::analysis::effective(
        plan.and_then(|p| p.spec.analysis.as_ref()),
        wave.spec.analysis.as_ref(),
    )
    .map(|a| a.metrics)
    .unwrap_or_default();
    effective
        .iter()
        .map(|m| {
            let last = status.analysis.iter().find(|s| s.name == m.metric.name);
            let range = healthy_range(m.metric.min, m.metric.max);
            let result = match last {
                None => "not evaluated yet".into(),
                Some(s) => {
                    let mut result = s.result.clone();
                    if s.consecutive_failures > 0 {
                        let _ = write!(
                            result,
                            " ({}/{} breaches)",
                            s.consecutive_failures, m.policy.failure_limit
                        );
                    }
                    if let Some(message) = s.message.as_deref().filter(|m| !m.is_empty()) {
                        let _ = write!(result, ": {message}");
                    }
                    result
                }
            };
            MetricLine {
                name: m.metric.name.clone(),
                value: last.and_then(|s| s.value).map_or("-".into(), format_value),
                range,
                result,
            }
        })
        .collect()
}

/// A threshold in words: `within 1..5`, `at least 1`, `at most 5`.
fn healthy_range(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(min), Some(max)) => format!("within {min}..{max}"),
        (Some(min), None) => format!("at least {min}"),
        (None, Some(max)) => format!("at most {max}"),
        (None, None) => String::new(),
    }
}

/// A metric value with at most four significant decimals.
fn format_value(v: f64) -> String {
    let text = format!("{v:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() || text == "-" {
        "0".into()
    } else {
        text.to_owned()
    }
}

fn pending_approval(
    wave: &MigrationWave,
    plan: Option<&CutoverPlan>,
    status: &MigrationWaveStatus,
) -> Option<String> {
    let step = status.step_index?;
    let at_approval = wave
        .spec
        .steps
        .get(step as usize)
        .is_some_and(|s| s.approval.is_some());
    let waiting = matches!(
        status.phase,
        WavePhase::AwaitingApproval | WavePhase::Paused
    );
    (at_approval && waiting && status.approved_by.is_none()).then(|| {
        format!(
            "step {step}, by {}: kubectl wave approve {} --step {step}",
            who(step_approvers(wave, plan, step).as_ref()),
            name_of(&wave.metadata)
        )
    })
}

/// `kubectl wave plan PLAN`: gates, freeze windows, and the waves as a tree of their
/// order, each with its state.
pub fn plan_view(
    plan: &CutoverPlan,
    waves: &[MigrationWave],
    now: Timestamp,
    style: Style,
) -> String {
    let status = plan.status.clone().unwrap_or_default();
    let name = name_of(&plan.metadata);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}/{}  {}",
        style.paint(Tone::Bold, "CutoverPlan"),
        namespace_of(&plan.metadata),
        style.paint(Tone::Bold, &name),
        style.paint(
            plan_phase_tone(status.phase),
            &format!("{:?}", status.phase)
        ),
    );
    let _ = writeln!(
        out,
        "  Waves {} completed, gates {} passing, at most {} wave{} at once",
        status.waves_summary.as_deref().unwrap_or("?"),
        status.gates_summary.as_deref().unwrap_or("?"),
        plan.spec.max_concurrent_waves.unwrap_or(1),
        if plan.spec.max_concurrent_waves.unwrap_or(1) == 1 {
            ""
        } else {
            "s"
        }
    );
    let _ = writeln!(out, "  Waiting:   {}", plan_waiting_for(plan));

    if !plan.spec.readiness_gates.is_empty() {
        let _ = writeln!(out, "{}", style.paint(Tone::Bold, "Gates"));
        let width = plan
            .spec
            .readiness_gates
            .iter()
            .map(|g| g.name.len())
            .max()
            .unwrap_or(0);
        for gate in &plan.spec.readiness_gates {
            let gate_status = status.gates.iter().find(|g| g.name == gate.name);
            let passing = gate_status.is_some_and(|g| g.passing);
            let mark = if passing {
                style.paint(Tone::Good, "✓")
            } else {
                style.paint(Tone::Bad, "✗")
            };
            let (kind, detail) = gate_detail(gate, gate_status, plan);
            let _ = writeln!(out, "  {mark} {:width$}  {kind:<10}  {detail}", gate.name);
        }
    }

    if !plan.spec.freeze_windows.is_empty() {
        let _ = writeln!(out, "{}", style.paint(Tone::Bold, "Freeze windows"));
        let width = plan
            .spec
            .freeze_windows
            .iter()
            .map(|w| w.name.len())
            .max()
            .unwrap_or(0);
        for window in &plan.spec.freeze_windows {
            let when = format!(
                "{} {} for {}",
                window.schedule,
                window.time_zone.as_deref().unwrap_or("UTC"),
                window.duration.as_str()
            );
            let state = match freeze::parse(window) {
                Err(err) => style.paint(Tone::Bad, &format!("invalid: {err}")),
                Ok(parsed) => match parsed.open_until(now) {
                    Some(until) => style.paint(
                        Tone::Warn,
                        &format!(
                            "OPEN until {} ({})",
                            local(until, parsed.time_zone()),
                            relative(now, until)
                        ),
                    ),
                    None => match parsed.next_opening(now) {
                        Some(next) => format!(
                            "next opens {} ({})",
                            local(next, parsed.time_zone()),
                            relative(now, next)
                        ),
                        None => "never opens".into(),
                    },
                },
            };
            let _ = writeln!(out, "  {:width$}  {when}  {state}", window.name);
        }
    }

    let _ = writeln!(out, "{}", style.paint(Tone::Bold, "Waves"));
    let by_name: BTreeMap<String, &MigrationWave> = waves
        .iter()
        .filter(|w| w.spec.plan == name)
        .map(|w| (name_of(&w.metadata), w))
        .collect();
    let refs = &plan.spec.waves;
    // Each wave hangs under the last wave of its `after` (the latest listed); its other
    // predecessors are named on its line.
    let parent = |i: usize| -> Option<usize> {
        refs[i]
            .after
            .iter()
            .filter_map(|a| refs.iter().position(|r| &r.name == a))
            .max()
    };
    let children =
        |p: Option<usize>| -> Vec<usize> { (0..refs.len()).filter(|&i| parent(i) == p).collect() };
    let rows_width = refs.iter().map(|r| r.name.len()).max().unwrap_or(0) + 3 * depth(refs);
    let mut stack: Vec<(usize, String, bool)> = children(None)
        .into_iter()
        .rev()
        .enumerate()
        .map(|(k, i)| (i, String::new(), k == 0))
        .collect();
    while let Some((i, prefix, last)) = stack.pop() {
        let wave_ref = &refs[i];
        let is_root = parent(i).is_none();
        let branch = if is_root {
            String::new()
        } else if last {
            "└─ ".into()
        } else {
            "├─ ".into()
        };
        let label = format!("{prefix}{branch}{}", wave_ref.name);
        let summary = status.waves.iter().find(|w| w.name == wave_ref.name);
        let wave = by_name.get(&wave_ref.name).copied();
        let phase = wave
            .and_then(|w| w.status.as_ref())
            .map(|s| s.phase)
            .or(summary.map(|s| s.phase))
            .unwrap_or_default();
        let wave_status = wave.and_then(|w| w.status.clone()).unwrap_or_default();
        let step = wave.map_or("-".into(), steps_done);
        let detail = match wave {
            None => "MigrationWave not created yet".into(),
            Some(w) => waiting_for(w, Some(plan), now),
        };
        let others: Vec<&str> = match parent(i) {
            Some(p) => wave_ref
                .after
                .iter()
                .filter(|a| **a != refs[p].name)
                .map(String::as_str)
                .collect(),
            None => Vec::new(),
        };
        let also = if others.is_empty() {
            String::new()
        } else {
            format!(" (also after {})", others.join(", "))
        };
        let _ = writeln!(
            out,
            "  {:rows_width$}  {}  {:>5}  {:>4}  {detail}{also}",
            label,
            style.pad(phase_tone(phase), &format!("{phase:?}"), 16),
            step,
            format!("{}%", wave_status.target_weight.unwrap_or(0)),
        );
        let child_prefix = if is_root {
            String::new()
        } else if last {
            format!("{prefix}   ")
        } else {
            format!("{prefix}│  ")
        };
        let kids = children(Some(i));
        let count = kids.len();
        for (k, child) in kids.into_iter().enumerate().rev() {
            stack.push((child, child_prefix.clone(), k + 1 == count));
        }
    }
    let strays: Vec<&String> = by_name
        .keys()
        .filter(|n| !refs.iter().any(|r| &r.name == *n))
        .collect();
    if !strays.is_empty() {
        let _ = writeln!(
            out,
            "  Not in spec.waves (ignored by the plan): {}",
            strays
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(entry) = status.history.last() {
        let _ = writeln!(
            out,
            "Last event: {} {} {}{}",
            entry.at.0,
            entry.event,
            entry.actor.as_deref().unwrap_or("-"),
            entry
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
    }
    out
}

/// An instant in a window's own time zone, as its schedule is written: `2026-03-28 00:00 CET`.
fn local(t: Timestamp, zone: &jiff::tz::TimeZone) -> String {
    t.to_zoned(zone.clone())
        .strftime("%Y-%m-%d %H:%M %Z")
        .to_string()
}

/// The deepest chain of `after` in the plan (0 when no wave waits for another).
fn depth(refs: &[crate::api::WaveRef]) -> usize {
    let mut depths = vec![0usize; refs.len()];
    for (i, r) in refs.iter().enumerate() {
        depths[i] = r
            .after
            .iter()
            .filter_map(|a| refs.iter().position(|x| &x.name == a))
            .filter(|&p| p < i)
            .map(|p| depths[p] + 1)
            .max()
            .unwrap_or(0);
    }
    depths.into_iter().max().unwrap_or(0)
}

fn gate_detail(
    gate: &ReadinessGate,
    status: Option<&GateStatus>,
    plan: &CutoverPlan,
) -> (&'static str, String) {
    match (&gate.prometheus, status) {
        (Some(p), status) => {
            let range = healthy_range(p.min, p.max);
            let value = status
                .and_then(|s| s.value)
                .map_or("no value".into(), format_value);
            let message = status
                .and_then(|s| s.message.as_deref())
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            ("prometheus", format!("{value} ({range}){message}"))
        }
        (None, Some(s)) if s.passing => (
            "manual",
            format!("passed by {}", s.passed_by.as_deref().unwrap_or("?")),
        ),
        (None, _) => (
            "manual",
            format!(
                "not passed; {} may pass it: kubectl wave gate pass {} {}",
                who(gate_approvers(gate, plan).as_ref()),
                name_of(&plan.metadata),
                gate.name
            ),
        ),
    }
}

fn phase_tone(phase: WavePhase) -> Tone {
    match phase {
        WavePhase::Completed => Tone::Good,
        WavePhase::AwaitingApproval | WavePhase::Paused => Tone::Warn,
        WavePhase::RollingBack | WavePhase::RolledBack | WavePhase::Failed => Tone::Bad,
        WavePhase::Pending => Tone::Dim,
        WavePhase::Progressing | WavePhase::Quiet | WavePhase::DualAccess => Tone::Active,
    }
}

fn phase_tone_str(phase: &str) -> Tone {
    match phase {
        "Completed" => Tone::Good,
        "AwaitingApproval" | "Paused" | "Frozen" => Tone::Warn,
        "RollingBack" | "RolledBack" | "Failed" => Tone::Bad,
        "Pending" => Tone::Dim,
        _ => Tone::Active,
    }
}

fn plan_phase_tone(phase: crate::api::PlanPhase) -> Tone {
    phase_tone_str(&format!("{phase:?}"))
}

fn result_tone(result: &str) -> Tone {
    match result.split_whitespace().next().unwrap_or("") {
        "Healthy" => Tone::Good,
        "Breached" => Tone::Bad,
        _ => Tone::Warn,
    }
}

fn name_of(meta: &kube::api::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn namespace_of(meta: &kube::api::ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_short() {
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(0.0125), "0.0125");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(12.345678), "12.3457");
    }

    #[test]
    fn nobody_configured_is_said() {
        assert_eq!(who(None), "an approver (none configured)");
        let s = Subjects {
            users: vec!["alice".into()],
            groups: vec!["rm".into()],
        };
        assert_eq!(who(Some(&s)), "users alice; groups rm");
    }
}
