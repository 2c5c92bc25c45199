//! The demo's mechanical rewrite of `examples/crm-unification/`: every duration divided
//! by the time scale, PromQL ranges shortened to what a 1 s scrape can answer, freeze
//! windows that would stall the demo dropped, the demo's own identity added to the
//! approvers, and the namespace (and, on a cluster without the Gateway API, the router)
//! replaced. Pure: the caller reads the files and the clock; everything here is tested.
//!
//! The rules (also in `demo/README.md`):
//!
//! | what | rule |
//! |---|---|
//! | step durations (`analysis`, `quiet`, `dualAccess`), `analysis.interval`, `freezeWindows[].duration` | divided by N, rounded to whole seconds, at least 1 s |
//! | PromQL range selectors in gate and analysis queries and alert rules (`[1h]`, `[15m]`) | divided by N, at least 10 s (a subquery's resolution: at least 1 s) |
//! | an alert rule's `for:` | divided by N, at least 30 s |
//! | a freeze window open now, or opening before the demo's deadline | dropped, with a note |
//! | `approvers`, `rollbackAuthority` (and any step's or gate's own approvers) | the demo's user added |
//! | namespace | `crm` on the embedded control plane; `switchyard-demo-<random>` on a cluster |
//! | Gateway and HTTPRoute, `spec.routing.gatewayAPI` | kept; on a cluster without the Gateway API CRDs, dropped for `configMap: {name: crm-routing}` |
//! | with a data plane: Services, Gateway, base HTTPRoute, `parentRefs` | the data plane's own (not applied); `parentRefs` name its Gateway |
//! | RoleBindings | kept, unless the ClusterRoles they bind are missing (a cluster where `policies/rbac.yaml` is not installed) |

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;
use switchyard::{
    api::{
        AnalysisSpec, ConfigMapRouting, CutoverPlan, DurationParseError, DurationString,
        MigrationWave, ParentRef, Routing, Subjects,
    },
    engine::freeze,
};

/// The shortest range selector the rewrite writes. Prometheus scrapes every second, and
/// `rate()` and `increase()` need two samples inside the range, with room for a late one.
pub const MIN_RANGE: Duration = Duration::from_secs(10);
/// The shortest `for:` of a rewritten alert rule. In the real plan the analysis acts after
/// `failureLimit` intervals (3 × 1m) and before the alert's `for: 5m`; scaled, the
/// analysis acts within about 3 s, and this floor keeps that order.
pub const MIN_ALERT_FOR: Duration = Duration::from_secs(30);
/// The shortest spec duration: the engine works in whole seconds.
pub const MIN_SPEC_DURATION: Duration = Duration::from_secs(1);
/// The ConfigMap the plan routes through on a cluster without the Gateway API.
pub const ROUTING_CONFIG_MAP: &str = "crm-routing";

/// Why the example could not be read or rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A document is not what the example should hold.
    #[error("{file}: {detail}")]
    Document {
        /// The file name.
        file: String,
        /// What is wrong.
        detail: String,
    },
    /// A duration in the spec does not parse.
    #[error("{what}")]
    Duration {
        /// Where it is.
        what: String,
        /// The parse error.
        #[source]
        source: DurationParseError,
    },
    /// A PromQL range selector could not be read.
    #[error("cannot read the range selector [{range}] in the query {query}")]
    Range {
        /// The query.
        query: String,
        /// The text between the brackets.
        range: String,
    },
    /// A freeze window does not parse after the rewrite.
    #[error("freeze window {name}")]
    Freeze {
        /// The window's name.
        name: String,
        /// The engine's complaint.
        #[source]
        source: freeze::FreezeError,
    },
    /// The alert rules in the README are not valid YAML.
    #[error("the alert rules in {file}")]
    Rules {
        /// The README.
        file: String,
        /// The YAML error.
        #[source]
        source: serde_yaml::Error,
    },
}

/// Divides durations by N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale(u64);

impl Scale {
    /// Divides by `n` (at least 1).
    pub fn new(n: u64) -> Self {
        Scale(n.max(1))
    }

    /// N.
    pub fn factor(self) -> u64 {
        self.0
    }

    /// `d / N`, rounded to whole seconds, and at least `floor`.
    pub fn apply(self, d: Duration, floor: Duration) -> Duration {
        let secs = (d.as_secs_f64() / self.0 as f64).round() as u64;
        Duration::from_secs(secs).max(floor)
    }
}

/// A duration as the API writes it: `6s`, `1m30s`, `2h`.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if m > 0 {
        let _ = write!(out, "{m}m");
    }
    if s > 0 || out.is_empty() {
        let _ = write!(out, "{s}s");
    }
    out
}

/// A PromQL duration (`5m`, `1h30m`, `2d`, `250ms`): integer number-unit pairs.
pub fn parse_prom_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            "w" => Duration::from_secs(7 * 86_400),
            "y" => Duration::from_secs(365 * 86_400),
            _ => return None,
        };
        total += unit.checked_mul(u32::try_from(number).ok()?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// What the rewrite changed, `from -> to`, for printing once per distinct value.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    seen: BTreeMap<String, (Duration, String)>,
}

impl Changes {
    fn record(&mut self, original: Duration, from: &str, to: &str) {
        self.seen
            .entry(from.to_owned())
            .or_insert((original, to.to_owned()));
    }

    /// Whether nothing was changed.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// `216h→18s, 72h→6s, ...`, longest first.
    pub fn describe(&self) -> String {
        let mut all: Vec<(&Duration, &str, &str)> = self
            .seen
            .iter()
            .map(|(from, (d, to))| (d, from.as_str(), to.as_str()))
            .collect();
        all.sort_by(|a, b| b.0.cmp(a.0).then(a.1.cmp(b.1)));
        all.iter()
            .map(|(_, from, to)| format!("{from}→{to}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Rewrites every range selector (`[1h]`, and subqueries `[1h:5m]`) of `query`: the range
/// divided by N and at least `min_range`, a subquery's resolution divided by N and at
/// least 1 s. Brackets inside string literals and comments are left alone.
pub fn rewrite_ranges(
    query: &str,
    scale: Scale,
    min_range: Duration,
    changes: &mut Changes,
) -> Result<String, RewriteError> {
    let bad = |range: &str| RewriteError::Range {
        query: query.to_owned(),
        range: range.to_owned(),
    };
    let chars: Vec<char> = query.chars().collect();
    let mut out = String::with_capacity(query.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' && q != '`' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            '"' | '\'' | '`' => {
                quote = Some(c);
                out.push(c);
                i += 1;
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    out.push(chars[i]);
                    i += 1;
                }
            }
            '[' => {
                let close = chars[i + 1..]
                    .iter()
                    .position(|&c| c == ']')
                    .map(|p| i + 1 + p)
                    .ok_or_else(|| bad(&chars[i + 1..].iter().collect::<String>()))?;
                let inner: String = chars[i + 1..close].iter().collect();
                let (range, step) = match inner.split_once(':') {
                    Some((range, step)) => (range, Some(step)),
                    None => (inner.as_str(), None),
                };
                let range_d = parse_prom_duration(range).ok_or_else(|| bad(&inner))?;
                let mut new = format!("{}s", scale.apply(range_d, min_range).as_secs());
                if let Some(step) = step {
                    new.push(':');
                    if !step.trim().is_empty() {
                        let step_d = parse_prom_duration(step).ok_or_else(|| bad(&inner))?;
                        let _ =
                            write!(new, "{}s", scale.apply(step_d, MIN_SPEC_DURATION).as_secs());
                    }
                }
                changes.record(range_d, &format!("[{}]", inner.trim()), &format!("[{new}]"));
                out.push('[');
                out.push_str(&new);
                out.push(']');
                i = close + 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// One YAML document of the example.
#[derive(Clone, Debug)]
pub struct Document {
    /// The file it came from.
    pub file: String,
    /// The document.
    pub value: Value,
}

impl Document {
    /// `kind`.
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// The example as read from disk.
#[derive(Clone, Debug)]
pub struct Example {
    /// The directory.
    pub dir: PathBuf,
    /// Every document, in `kubectl apply -f` order (by file name).
    pub documents: Vec<Document>,
    /// The alerting rules of its README (`groups: ...`), if it has any.
    pub alert_rules: Option<String>,
}

/// The settings the rewrite needs from the world.
#[derive(Clone, Debug)]
pub struct Settings {
    /// N.
    pub scale: Scale,
    /// The namespace everything goes into.
    pub namespace: String,
    /// The demo's user, as the API server authenticates it.
    pub me: String,
    /// Whether the cluster serves the Gateway API.
    pub gateway_api: bool,
    /// Whether the ClusterRoles that the RoleBindings bind exist.
    pub role_bindings: bool,
    /// The data plane's Gateway, when the demo runs one: it brings its own Services
    /// (with endpoints), Gateway and base route, so the example's are not applied.
    pub data_plane_gateway: Option<String>,
    /// Now.
    pub now: Timestamp,
    /// How long the demo may run: a freeze window that opens before `now + horizon` is dropped.
    pub horizon: Duration,
}

/// The rewritten example.
#[derive(Clone, Debug)]
pub struct Rewritten {
    /// The documents to apply, in order.
    pub documents: Vec<Document>,
    /// The plan as applied.
    pub plan: CutoverPlan,
    /// The waves as applied.
    pub waves: Vec<MigrationWave>,
    /// What the rewrite did, one line each.
    pub notes: Vec<String>,
}

impl Example {
    /// Reads every `*.yaml` of `dir` and the alerting rules of its `README.md`.
    pub fn load(dir: &Path) -> Result<Example, RewriteError> {
        let read_dir = std::fs::read_dir(dir).map_err(|source| RewriteError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let mut files: Vec<PathBuf> = read_dir
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        let mut documents = Vec::new();
        for path in files {
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path).map_err(|source| RewriteError::Read {
                path: path.clone(),
                source,
            })?;
            for document in serde_yaml::Deserializer::from_str(&text) {
                let value = Value::deserialize(document).map_err(|err| RewriteError::Document {
                    file: file.clone(),
                    detail: format!("not YAML: {err}"),
                })?;
                if !value.is_null() {
                    documents.push(Document {
                        file: file.clone(),
                        value,
                    });
                }
            }
        }
        let readme = dir.join("README.md");
        let alert_rules = match std::fs::read_to_string(&readme) {
            Ok(text) => rules_block(&text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(RewriteError::Read {
                    path: readme,
                    source,
                });
            }
        };
        Ok(Example {
            dir: dir.to_owned(),
            documents,
            alert_rules,
        })
    }

    /// The waves' cohorts, `(team, region)`, as the metrics contract labels them.
    pub fn cohorts(&self) -> Vec<(String, String)> {
        self.documents
            .iter()
            .filter(|d| d.kind() == "MigrationWave")
            .map(|d| {
                let cohort = &d.value["spec"]["cohort"];
                let get = |k: &str| cohort[k].as_str().unwrap_or_default().to_owned();
                (get("team"), get("region"))
            })
            .collect()
    }

    /// The README's alerting rules with their ranges and `for:` scaled, and a note.
    pub fn scaled_alert_rules(
        &self,
        scale: Scale,
    ) -> Result<Option<(String, String)>, RewriteError> {
        let Some(text) = &self.alert_rules else {
            return Ok(None);
        };
        let file = self.dir.join("README.md").display().to_string();
        let mut rules: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|source| RewriteError::Rules {
                file: file.clone(),
                source,
            })?;
        let mut ranges = Changes::default();
        let mut fors = Changes::default();
        let mut names = Vec::new();
        let groups = rules
            .get_mut("groups")
            .and_then(serde_yaml::Value::as_sequence_mut)
            .map(|g| g.as_mut_slice())
            .unwrap_or_default();
        for group in groups {
            let list = group
                .get_mut("rules")
                .and_then(serde_yaml::Value::as_sequence_mut)
                .map(|r| r.as_mut_slice())
                .unwrap_or_default();
            for rule in list {
                if let Some(name) = rule.get("alert").and_then(serde_yaml::Value::as_str) {
                    names.push(name.to_owned());
                }
                if let Some(expr) = rule.get("expr").and_then(serde_yaml::Value::as_str) {
                    let new = rewrite_ranges(expr, scale, MIN_RANGE, &mut ranges)?;
                    rule["expr"] = serde_yaml::Value::String(new);
                }
                if let Some(wait) = rule.get("for").and_then(serde_yaml::Value::as_str) {
                    let d = parse_prom_duration(wait).ok_or_else(|| RewriteError::Range {
                        query: format!("for: {wait}"),
                        range: wait.to_owned(),
                    })?;
                    let new = format!("{}s", scale.apply(d, MIN_ALERT_FOR).as_secs());
                    fors.record(d, wait, &new);
                    rule["for"] = serde_yaml::Value::String(new);
                }
            }
        }
        let yaml = serde_yaml::to_string(&rules).map_err(|source| RewriteError::Rules {
            file: file.clone(),
            source,
        })?;
        let mut note = format!("{} (README.md):", names.join(", "));
        if !ranges.is_empty() {
            let _ = write!(note, " ranges {}", ranges.describe());
        }
        if !fors.is_empty() {
            let _ = write!(
                note,
                "; for: {} (at least {}s, so the analysis acts first, as in the real plan)",
                fors.describe(),
                MIN_ALERT_FOR.as_secs()
            );
        }
        Ok(Some((yaml, note)))
    }

    /// The example, rewritten for the demo.
    pub fn rewrite(&self, settings: &Settings) -> Result<Rewritten, RewriteError> {
        let mut durations = Changes::default();
        let mut ranges = Changes::default();
        let mut notes = Vec::new();
        let mut documents = Vec::new();
        let mut plan = None;
        let mut waves = Vec::new();
        let mut skipped_routes: Vec<String> = Vec::new();
        let mut skipped_bindings: Vec<String> = Vec::new();
        let mut replaced: Vec<String> = Vec::new();
        let mut renamed_from: Option<String> = None;
        for document in &self.documents {
            let mut value = document.value.clone();
            match document.kind() {
                "Namespace" => {
                    if document.name() != settings.namespace {
                        renamed_from = Some(document.name().to_owned());
                    }
                    value["metadata"]["name"] = Value::String(settings.namespace.clone());
                }
                "Service" | "Gateway" | "HTTPRoute" if settings.data_plane_gateway.is_some() => {
                    replaced.push(format!("{} {}", document.kind(), document.name()));
                    continue;
                }
                "Gateway" | "HTTPRoute" if !settings.gateway_api => {
                    skipped_routes.push(format!("{} {}", document.kind(), document.name()));
                    continue;
                }
                "RoleBinding" if !settings.role_bindings => {
                    skipped_bindings.push(document.name().to_owned());
                    continue;
                }
                "CutoverPlan" => {
                    let mut typed: CutoverPlan =
                        serde_json::from_value(value.clone()).map_err(|err| {
                            RewriteError::Document {
                                file: document.file.clone(),
                                detail: format!("not a CutoverPlan: {err}"),
                            }
                        })?;
                    rewrite_plan(
                        &mut typed,
                        settings,
                        &mut durations,
                        &mut ranges,
                        &mut notes,
                    )?;
                    value = to_value(&typed, &document.file)?;
                    plan = Some(typed);
                }
                "MigrationWave" => {
                    let mut typed: MigrationWave =
                        serde_json::from_value(value.clone()).map_err(|err| {
                            RewriteError::Document {
                                file: document.file.clone(),
                                detail: format!("not a MigrationWave: {err}"),
                            }
                        })?;
                    rewrite_wave(&mut typed, settings, &mut durations, &mut ranges)?;
                    value = to_value(&typed, &document.file)?;
                    waves.push(typed);
                }
                _ => {}
            }
            if document.kind() != "Namespace" {
                value["metadata"]["namespace"] = Value::String(settings.namespace.clone());
            }
            if let Some(plan) = plan.as_mut().filter(|_| document.kind() == "CutoverPlan") {
                plan.metadata.namespace = Some(settings.namespace.clone());
            }
            if let Some(wave) = waves
                .last_mut()
                .filter(|_| document.kind() == "MigrationWave")
            {
                wave.metadata.namespace = Some(settings.namespace.clone());
            }
            documents.push(Document {
                file: document.file.clone(),
                value,
            });
        }
        let plan = plan.ok_or_else(|| RewriteError::Document {
            file: self.dir.display().to_string(),
            detail: "no CutoverPlan".into(),
        })?;
        let mut head = Vec::new();
        match renamed_from {
            Some(from) => head.push(format!("namespace: {from} → {}", settings.namespace)),
            None => head.push(format!("namespace: {}", settings.namespace)),
        }
        head.push(format!(
            "durations (÷{}, whole seconds, at least 1s): {}",
            settings.scale.factor(),
            durations.describe()
        ));
        if !ranges.is_empty() {
            head.push(format!(
                "PromQL ranges (÷{}, at least {}s for 1s scrapes): {}",
                settings.scale.factor(),
                MIN_RANGE.as_secs(),
                ranges.describe()
            ));
        }
        head.append(&mut notes);
        if !skipped_routes.is_empty() {
            head.push(format!(
                "not applied: {} (no Gateway API on this cluster)",
                skipped_routes.join(", ")
            ));
        }
        if !replaced.is_empty() {
            head.push(format!(
                "not applied: {} (the data plane has its own Services with endpoints, Gateway and base route)",
                replaced.join(", ")
            ));
        }
        if !skipped_bindings.is_empty() {
            head.push(format!(
                "not applied: RoleBindings {} (the ClusterRoles they bind, from policies/rbac.yaml, are not installed on this cluster)",
                skipped_bindings.join(", ")
            ));
        }
        Ok(Rewritten {
            documents,
            plan,
            waves,
            notes: head,
        })
    }
}

fn to_value<T: serde::Serialize>(typed: &T, file: &str) -> Result<Value, RewriteError> {
    let mut value = serde_json::to_value(typed).map_err(|err| RewriteError::Document {
        file: file.to_owned(),
        detail: format!("cannot serialize: {err}"),
    })?;
    if let Some(object) = value.as_object_mut() {
        object.remove("status");
    }
    Ok(value)
}

/// The first fenced YAML block of a README that holds Prometheus rule groups.
fn rules_block(readme: &str) -> Option<String> {
    let mut rest = readme;
    while let Some(start) = rest.find("```yaml\n") {
        let body = &rest[start + "```yaml\n".len()..];
        let end = body.find("```")?;
        let block = &body[..end];
        if block.trim_start().starts_with("groups:") {
            return Some(block.to_owned());
        }
        rest = &body[end + 3..];
    }
    None
}

fn scale_spec(
    duration: &mut DurationString,
    scale: Scale,
    what: impl Fn() -> String,
    changes: &mut Changes,
) -> Result<(), RewriteError> {
    let original = duration.parse().map_err(|source| RewriteError::Duration {
        what: what(),
        source,
    })?;
    let new = go_duration(scale.apply(original, MIN_SPEC_DURATION));
    changes.record(original, duration.as_str(), &new);
    *duration = DurationString::new(new);
    Ok(())
}

fn rewrite_analysis(
    analysis: &mut AnalysisSpec,
    scale: Scale,
    owner: &str,
    durations: &mut Changes,
    ranges: &mut Changes,
) -> Result<(), RewriteError> {
    if let Some(interval) = &mut analysis.interval {
        scale_spec(
            interval,
            scale,
            || format!("{owner}: analysis.interval"),
            durations,
        )?;
    }
    for metric in &mut analysis.metrics {
        metric.query = rewrite_ranges(&metric.query, scale, MIN_RANGE, ranges)?;
    }
    Ok(())
}

fn add_user(subjects: &mut Option<Subjects>, user: &str) {
    let subjects = subjects.get_or_insert_with(Subjects::default);
    if !subjects.users.iter().any(|u| u == user) {
        subjects.users.push(user.to_owned());
    }
}

fn rewrite_plan(
    plan: &mut CutoverPlan,
    settings: &Settings,
    durations: &mut Changes,
    ranges: &mut Changes,
    notes: &mut Vec<String>,
) -> Result<(), RewriteError> {
    let scale = settings.scale;
    let name = plan.metadata.name.clone().unwrap_or_default();
    let spec = &mut plan.spec;
    if let Some(analysis) = &mut spec.analysis {
        rewrite_analysis(analysis, scale, &format!("plan {name}"), durations, ranges)?;
    }
    for gate in &mut spec.readiness_gates {
        if let Some(prometheus) = &mut gate.prometheus {
            prometheus.query = rewrite_ranges(&prometheus.query, scale, MIN_RANGE, ranges)?;
        }
        if let Some(manual) = &mut gate.manual
            && manual.approvers.is_some()
        {
            add_user(&mut manual.approvers, &settings.me);
        }
    }
    let deadline = settings
        .now
        .checked_add(jiff::SignedDuration::try_from(settings.horizon).unwrap_or_default())
        .unwrap_or(settings.now);
    let mut kept = Vec::new();
    for mut window in std::mem::take(&mut spec.freeze_windows) {
        let original = window.duration.as_str().to_owned();
        scale_spec(
            &mut window.duration,
            scale,
            || format!("freeze window {}: duration", window.name),
            durations,
        )?;
        let parsed = freeze::parse(&window).map_err(|source| RewriteError::Freeze {
            name: window.name.clone(),
            source,
        })?;
        let zone = parsed.time_zone().clone();
        let local = |t: Timestamp| {
            t.to_zoned(zone.clone())
                .strftime("%Y-%m-%d %H:%M:%S %Z")
                .to_string()
        };
        let what = format!(
            "freeze window {} ({} {}, {original} → {})",
            window.name,
            window.schedule,
            window.time_zone.as_deref().unwrap_or("UTC"),
            window.duration
        );
        if let Some(until) = parsed.open_until(settings.now) {
            notes.push(format!(
                "{what}: open now (until {}), so dropped: the demo would stall",
                local(until)
            ));
        } else if let Some(next) = parsed
            .next_opening(settings.now)
            .filter(|next| *next < deadline)
        {
            notes.push(format!(
                "{what}: would open during the demo ({}), so dropped",
                local(next)
            ));
        } else {
            let next = parsed
                .next_opening(settings.now)
                .map_or("never".into(), |t| format!("at {}", local(t)));
            notes.push(format!(
                "{what}: kept (it does not open during the demo); next opens {next}"
            ));
            kept.push(window);
        }
    }
    spec.freeze_windows = kept;
    add_user(&mut spec.approvers, &settings.me);
    add_user(&mut spec.rollback_authority, &settings.me);
    notes.push(format!(
        "approvers and rollbackAuthority: + user {} (the demo acts as the release manager)",
        settings.me
    ));
    if let (Some(gateway), Some(routing)) = (
        &settings.data_plane_gateway,
        spec.routing.gateway_api.as_mut(),
    ) {
        // The data plane's Gateway has one listener, for every hostname: no sectionName.
        routing.parent_refs = vec![ParentRef {
            name: gateway.clone(),
            namespace: None,
            section_name: None,
            port: None,
        }];
        notes.push(format!(
            "routing: parentRefs → the data plane's Gateway {gateway}; hostnames kept ({})",
            routing.hostnames.join(", ")
        ));
    }
    if !settings.gateway_api && spec.routing.gateway_api.is_some() {
        spec.routing = Routing {
            gateway_api: None,
            config_map: Some(ConfigMapRouting {
                name: ROUTING_CONFIG_MAP.into(),
            }),
        };
        notes.push(format!(
            "routing: the cluster has no Gateway API CRDs, so the plan routes through the ConfigMap {ROUTING_CONFIG_MAP} instead"
        ));
    }
    Ok(())
}

fn rewrite_wave(
    wave: &mut MigrationWave,
    settings: &Settings,
    durations: &mut Changes,
    ranges: &mut Changes,
) -> Result<(), RewriteError> {
    let scale = settings.scale;
    let name = wave.metadata.name.clone().unwrap_or_default();
    if let Some(analysis) = &mut wave.spec.analysis {
        rewrite_analysis(analysis, scale, &format!("wave {name}"), durations, ranges)?;
    }
    for (i, step) in wave.spec.steps.iter_mut().enumerate() {
        let what = || format!("wave {name}: steps[{i}]");
        for timed in [&mut step.analysis, &mut step.quiet, &mut step.dual_access]
            .into_iter()
            .flatten()
        {
            scale_spec(&mut timed.duration, scale, what, durations)?;
        }
        if let Some(approval) = &mut step.approval
            && approval.approvers.is_some()
        {
            add_user(&mut approval.approvers, &settings.me);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Example {
        Example::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/crm-unification"))
            .unwrap()
    }

    fn settings(now: &str) -> Settings {
        Settings {
            scale: Scale::new(43_200),
            namespace: "crm".into(),
            me: "switchyard-admin".into(),
            gateway_api: true,
            role_bindings: true,
            data_plane_gateway: None,
            now: now.parse().unwrap(),
            horizon: Duration::from_secs(600),
        }
    }

    #[test]
    fn durations_divide_round_and_floor() {
        let scale = Scale::new(43_200);
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(scale.apply(h(72), MIN_SPEC_DURATION).as_secs(), 6);
        assert_eq!(scale.apply(h(48), MIN_SPEC_DURATION).as_secs(), 4);
        assert_eq!(scale.apply(h(4), MIN_SPEC_DURATION).as_secs(), 1);
        assert_eq!(scale.apply(h(1), MIN_RANGE).as_secs(), 10);
        assert_eq!(Scale::new(60).apply(h(72), MIN_SPEC_DURATION), h(72) / 60);
        assert_eq!(Scale::new(0).factor(), 1);
        assert_eq!(go_duration(Duration::from_secs(6)), "6s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(4320)), "1h12m");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn prom_durations_parse() {
        assert_eq!(parse_prom_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(
            parse_prom_duration("1h30m"),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_prom_duration("2d"),
            Some(Duration::from_secs(172_800))
        );
        assert_eq!(
            parse_prom_duration("250ms"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_prom_duration("5"), None);
        assert_eq!(parse_prom_duration("m"), None);
        assert_eq!(parse_prom_duration("1.5h"), None);
    }

    #[test]
    fn ranges_shrink_but_strings_do_not() {
        let mut changes = Changes::default();
        let query = r#"sum(rate(x{a=~"[0-9]+",b='[1h]'}[1h])) + max_over_time(y[1h:5m]) # [2h]"#;
        let rewritten = rewrite_ranges(query, Scale::new(43_200), MIN_RANGE, &mut changes).unwrap();
        assert_eq!(
            rewritten,
            r#"sum(rate(x{a=~"[0-9]+",b='[1h]'}[10s])) + max_over_time(y[10s:1s]) # [2h]"#
        );
        assert_eq!(changes.describe(), "[1h:5m]→[10s:1s], [1h]→[10s]");
        let long = rewrite_ranges("rate(x[30d])", Scale::new(3600), MIN_RANGE, &mut changes);
        assert_eq!(long.unwrap(), "rate(x[720s])");
        let err = rewrite_ranges("rate(x[5])", Scale::new(2), MIN_RANGE, &mut changes);
        assert!(matches!(err, Err(RewriteError::Range { .. })), "{err:?}");
        let err = rewrite_ranges("rate(x[5m)", Scale::new(2), MIN_RANGE, &mut changes);
        assert!(matches!(err, Err(RewriteError::Range { .. })), "{err:?}");
    }

    #[test]
    fn the_example_is_shortened_and_made_actionable_by_the_demo() {
        // Mid-May: the quarter-end freeze is closed and does not open within the horizon.
        let example = example();
        assert_eq!(example.cohorts().len(), 6);
        let rewritten = example.rewrite(&settings("2026-05-15T12:00:00Z")).unwrap();
        let plan = &rewritten.plan.spec;
        let analysis = plan.analysis.as_ref().unwrap();
        assert_eq!(analysis.interval.as_ref().unwrap().as_str(), "1s");
        assert!(analysis.metrics.iter().all(|m| !m.query.contains("[1h]")));
        assert_eq!(
            analysis
                .metrics
                .iter()
                .filter(|m| m.query.contains("[10s]"))
                .count(),
            2
        );
        assert!(plan.readiness_gates.iter().all(|g| {
            g.prometheus
                .as_ref()
                .is_none_or(|p| !p.query.contains("[15m]") && !p.query.contains("[1h]"))
        }));
        assert_eq!(plan.freeze_windows.len(), 1);
        assert_eq!(plan.freeze_windows[0].duration.as_str(), "18s");
        assert!(
            plan.approvers
                .as_ref()
                .unwrap()
                .users
                .contains(&"switchyard-admin".to_owned())
        );
        assert!(
            plan.rollback_authority
                .as_ref()
                .unwrap()
                .users
                .contains(&"switchyard-admin".to_owned())
        );
        assert_eq!(
            plan.approvers.as_ref().unwrap().groups,
            ["crm-release-managers"]
        );
        assert_eq!(rewritten.waves.len(), 6);
        for wave in &rewritten.waves {
            let dual = wave
                .spec
                .steps
                .last()
                .unwrap()
                .dual_access
                .as_ref()
                .unwrap();
            assert_eq!(dual.duration.as_str(), "6s");
            for step in &wave.spec.steps {
                for timed in [&step.analysis, &step.quiet].into_iter().flatten() {
                    let d = timed.duration.parse().unwrap();
                    assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(4));
                }
            }
        }
        // The documents carry the rewrite, and every namespaced one the namespace.
        let plan_doc = rewritten
            .documents
            .iter()
            .find(|d| d.kind() == "CutoverPlan")
            .unwrap();
        assert_eq!(plan_doc.value["spec"]["analysis"]["interval"], "1s");
        assert!(plan_doc.value.get("status").is_none());
        assert!(
            rewritten
                .documents
                .iter()
                .filter(|d| d.kind() != "Namespace")
                .all(|d| d.value["metadata"]["namespace"] == "crm")
        );
        let notes = rewritten.notes.join("\n");
        assert!(
            notes.contains("216h→18s, 72h→6s, 48h→4s, 24h→2s"),
            "{notes}"
        );
        assert!(
            notes.contains("[15m]→[10s]") && notes.contains("[1h]→[10s]"),
            "{notes}"
        );
        assert!(
            notes.contains("next opens at 2026-06-24 00:00:00 EDT"),
            "{notes}"
        );
    }

    #[test]
    fn a_freeze_window_open_now_or_soon_is_dropped() {
        let example = example();
        // 00:00:05 New York time on the 24th of June: the scaled 18s window is open.
        let rewritten = example.rewrite(&settings("2026-06-24T04:00:05Z")).unwrap();
        assert!(rewritten.plan.spec.freeze_windows.is_empty());
        assert!(
            rewritten.notes.iter().any(|n| n.contains("open now")),
            "{:?}",
            rewritten.notes
        );
        // Five minutes before it opens: it would open during the demo.
        let rewritten = example.rewrite(&settings("2026-06-24T03:55:00Z")).unwrap();
        assert!(rewritten.plan.spec.freeze_windows.is_empty());
        assert!(
            rewritten
                .notes
                .iter()
                .any(|n| n.contains("would open during the demo")),
            "{:?}",
            rewritten.notes
        );
    }

    #[test]
    fn with_a_data_plane_its_gateway_replaces_the_examples() {
        let mut settings = settings("2026-05-01T12:00:00Z");
        settings.namespace = "data-plane-0a1b2c3d".into();
        settings.data_plane_gateway = Some("gateway".into());
        let rewritten = example().rewrite(&settings).unwrap();
        let routing = rewritten.plan.spec.routing.gateway_api.unwrap();
        assert_eq!(routing.parent_refs.len(), 1);
        assert_eq!(routing.parent_refs[0].name, "gateway");
        assert_eq!(routing.parent_refs[0].section_name, None);
        assert_eq!(routing.hostnames, ["crm.example.com"]);
        let kinds: Vec<&str> = rewritten.documents.iter().map(Document::kind).collect();
        for kind in ["Service", "Gateway", "HTTPRoute"] {
            assert!(!kinds.contains(&kind), "{kind} applied: {kinds:?}");
        }
        assert!(kinds.contains(&"CutoverPlan") && kinds.contains(&"MigrationWave"));
    }

    #[test]
    fn on_a_cluster_the_namespace_and_router_change() {
        let example = example();
        let mut settings = settings("2026-05-15T12:00:00Z");
        settings.namespace = "switchyard-demo-0a1b2c3d".into();
        settings.gateway_api = false;
        settings.role_bindings = false;
        let rewritten = example.rewrite(&settings).unwrap();
        let routing = &rewritten.plan.spec.routing;
        assert!(routing.gateway_api.is_none());
        assert_eq!(
            routing.config_map.as_ref().unwrap().name,
            ROUTING_CONFIG_MAP
        );
        let kinds: Vec<&str> = rewritten.documents.iter().map(Document::kind).collect();
        assert!(!kinds.contains(&"Gateway") && !kinds.contains(&"HTTPRoute"));
        assert!(!kinds.contains(&"RoleBinding"));
        let namespace = rewritten
            .documents
            .iter()
            .find(|d| d.kind() == "Namespace")
            .unwrap();
        assert_eq!(namespace.name(), "switchyard-demo-0a1b2c3d");
        assert!(rewritten.notes[0].contains("crm → switchyard-demo-0a1b2c3d"));
        assert!(
            rewritten
                .notes
                .iter()
                .any(|n| n.contains("ConfigMap crm-routing")),
            "{:?}",
            rewritten.notes
        );
    }

    #[test]
    fn the_readme_alert_rules_are_scaled() {
        let (yaml, note) = example()
            .scaled_alert_rules(Scale::new(43_200))
            .unwrap()
            .expect("the README has alert rules");
        assert!(yaml.contains("[10s]") && !yaml.contains("[5m]") && !yaml.contains("[15m]"));
        assert!(yaml.contains("for: 30s"), "{yaml}");
        assert!(note.contains("CRMCohortHandoffsFailing"), "{note}");
        assert!(note.contains("5m→30s"), "{note}");
    }
}
