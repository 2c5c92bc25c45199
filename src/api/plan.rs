//! `CutoverPlan`: one migration programme, made of waves.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{AnalysisSpec, Backend, HistoryEntry, Subjects};
use super::duration::{self, DurationString};
use super::rules;

/// A migration programme: where traffic goes, how cohorts are recognised, which waves
/// run in which order, and what must hold before and while they run.
// clippy reads the repeated `printcolumn(type_ = ...)` keys as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "CutoverPlan",
    namespaced,
    status = "CutoverPlanStatus",
    shortname = "cp",
    category = "switchyard",
    doc = "CutoverPlan is one migration programme: legacy and target backends, routing, cohort keys, waves and their order, readiness gates, freeze windows and who may approve or roll back.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the plan is in its lifecycle"
    ),
    printcolumn(
        name = "Waves",
        type_ = "string",
        json_path = ".status.wavesSummary",
        description = "Waves completed / total"
    ),
    printcolumn(
        name = "Gates",
        type_ = "string",
        json_path = ".status.gatesSummary",
        description = "Readiness gates passing / total"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = kube::core::Rule::new("self.metadata.name.size() <= 63").message(
        "metadata.name of a CutoverPlan must be at most 63 characters: it is written as a label value (switchyard.dev/plan) on the routing objects"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "self.waves.all(w, self.waves.exists_one(x, x.name == w.name))"
).message("spec.waves: wave names must be unique").field_path(".waves"))]
#[x_kube(validation = kube::core::Rule::new(
    "self.waves.all(w, !has(w.after) || w.after.all(a, self.waves.exists(x, x.name == a)))"
).message("spec.waves: every name in after must be a wave listed in spec.waves").field_path(".waves"))]
#[x_kube(validation = kube::core::Rule::new(
    "[self.waves.map(x, x.name)].all(names, self.waves.all(w, !has(w.after) || w.after.all(a, names.indexOf(a) < names.indexOf(w.name))))"
).message("spec.waves: a wave may only come after waves listed before it (this also rules out cycles)").field_path(".waves"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.readinessGates) || self.readinessGates.all(g, self.readinessGates.exists_one(x, x.name == g.name))"
).message("spec.readinessGates: gate names must be unique").field_path(".readinessGates"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.freezeWindows) || self.freezeWindows.all(f, self.freezeWindows.exists_one(x, x.name == f.name))"
).message("spec.freezeWindows: window names must be unique").field_path(".freezeWindows"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.legacyAccess) || self.cohortKeys.all(k, self.cohortKeys[k].header.lowerAscii() != self.legacyAccess.header.lowerAscii())"
).message("spec.legacyAccess.header must differ from every cohortKeys header").field_path(".legacyAccess.header"))]
#[x_kube(validation = kube::core::Rule::new(
    "!(self.target.service.name == self.legacy.service.name && self.target.service.port == self.legacy.service.port)"
).message("spec.target must not be the legacy backend (the same Service and port): the waves would move their cohorts nowhere").field_path(".target"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.maintenance) || !(self.maintenance.service.name == self.legacy.service.name && self.maintenance.service.port == self.legacy.service.port)"
).message("spec.maintenance must not be the legacy backend (the same Service and port): quiet steps would let the cohort's writes reach legacy during the final sync").field_path(".maintenance"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.maintenance) || !(self.maintenance.service.name == self.target.service.name && self.maintenance.service.port == self.target.service.port)"
).message("spec.maintenance must not be the target backend (the same Service and port): quiet steps would let the cohort's writes reach the target during the final sync").field_path(".maintenance"))]
pub struct CutoverPlanSpec {
    /// The system being migrated away from. Receives every cohort not yet migrated.
    pub legacy: Backend,
    /// The system being migrated to.
    pub target: Backend,
    /// How Switchyard routes a cohort's requests. Exactly one router.
    pub routing: Routing,
    /// How a request shows which cohort it belongs to: a key (such as `team` or
    /// `region`) and the request header that carries its value. Waves give a value for
    /// each key they use.
    #[x_kube(validation = kube::core::Rule::new("self.size() >= 1")
        .message("spec.cohortKeys must define at least one key, for example team: {header: x-team}"))]
    #[x_kube(validation = rules::cohort_key_names("spec.cohortKeys"))]
    #[x_kube(validation = rules::cohort_keys_not_reserved("spec.cohortKeys"))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(a, self.all(b, a == b || self[a].header.lowerAscii() != self[b].header.lowerAscii()))"
    ).message("spec.cohortKeys: each key needs a header of its own (header names are compared case-insensitively): two keys on one header could never both match"))]
    #[schemars(extend("maxProperties" = 8))]
    pub cohort_keys: BTreeMap<String, CohortKey>,
    /// The header and value that reach legacy during dual access, for example
    /// `{header: x-switchyard-legacy, value: "true"}`. Without it, dual access keeps no
    /// override route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_access: Option<HeaderMatch>,
    /// The backend that answers the cohort's writes during quiet steps. Required when a
    /// wave has a quiet step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Backend>,
    /// The MigrationWaves of this plan, in this namespace. A wave starts only after the
    /// waves named in its `after` have completed.
    #[schemars(length(min = 1, max = 64))]
    pub waves: Vec<WaveRef>,
    /// How many waves may be active at once. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrent_waves: Option<i32>,
    /// Conditions that must all pass before any wave moves forward.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub readiness_gates: Vec<ReadinessGate>,
    /// Recurring windows in which no wave moves forward. Rollback is always allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub freeze_windows: Vec<FreezeWindow>,
    /// Who may approve approval steps and pass manual gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Subjects>,
    /// Who may request rollbacks and retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_authority: Option<Subjects>,
    /// What a failed wave does to the rest of the plan: PausePlan holds every unfinished
    /// wave, RollbackWave rolls back only the failed wave, RollbackPlan rolls back every
    /// started, unfinished wave. Defaults to PausePlan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_wave_failure: Option<OnWaveFailure>,
    /// Default analysis for every wave. A wave's own metric of the same name overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSpec>,
    /// Human actions on this plan (passing manual gates), in the order they were made.
    /// Append-only, one entry per request; admission checks that each new entry records
    /// the requesting user and groups. The operator removes entries it has processed
    /// once there are many (see the `switchyard.dev/actions-compacted` annotation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub actions: Vec<PlanAction>,
}

/// The router that carries the cohorts' traffic. Exactly one field is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("[has(self.gatewayAPI), has(self.configMap)].filter(x, x).size() == 1")
    .message("spec.routing must set exactly one router: gatewayAPI or configMap"))]
pub struct Routing {
    /// Switchyard writes one HTTPRoute per wave, attached to these parents.
    #[serde(
        rename = "gatewayAPI",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiRouting>,
    /// Switchyard writes a JSON routing table into a ConfigMap, for applications that
    /// route in code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapRouting>,
}

/// Gateway API routing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiRouting {
    /// The Gateways (or listeners) the wave's HTTPRoutes attach to. Two references to
    /// one Gateway must each set `sectionName` or `port`, and differ in them, as Gateway
    /// API requires.
    #[x_kube(validation = kube::core::Rule::new(PARENT_REFS_SAME_FIELDS)
        .message("spec.routing.gatewayAPI.parentRefs: references to the same Gateway must each set sectionName or port (the same ones), as Gateway API requires of an HTTPRoute"))]
    #[x_kube(validation = kube::core::Rule::new(PARENT_REFS_UNIQUE)
        .message("spec.routing.gatewayAPI.parentRefs must be unique: references to the same Gateway must differ in sectionName or port"))]
    #[schemars(length(min = 1, max = 32))]
    pub parent_refs: Vec<ParentRef>,
    /// The hostnames the HTTPRoutes match, for example `crm.example.com` or
    /// `*.example.com`: RFC 1123 names in lowercase, optionally behind a `*.` wildcard
    /// label, not IP addresses, no duplicates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = kube::core::Rule::new(format!(
        "self.all(h, h.matches({}) && !h.matches('^[0-9.]+$'))",
        rules::cel_str(rules::HOSTNAME_PATTERN)
    )).message("spec.routing.gatewayAPI.hostnames must be DNS names such as crm.example.com, optionally with a leading *. wildcard label (*.example.com): lowercase letters, digits, '-' and '.', each label starting and ending with a letter or digit, no IP addresses"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(h, self.exists_one(x, x == h))")
        .message("spec.routing.gatewayAPI.hostnames must not repeat a hostname"))]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253)))]
    pub hostnames: Vec<String>,
}

/// Gateway API's rule for an HTTPRoute's parentRefs (for our refs, which always name
/// a Gateway): references to the same Gateway agree on whether they set sectionName
/// and whether they set port.
const PARENT_REFS_SAME_FIELDS: &str = "self.all(p1, self.all(p2, \
    p1.name == p2.name && (has(p1.__namespace__) ? p1.__namespace__ : '') == (has(p2.__namespace__) ? p2.__namespace__ : '') \
    ? (has(p1.sectionName) == has(p2.sectionName) && has(p1.port) == has(p2.port)) : true))";
/// Gateway API's rule for an HTTPRoute's parentRefs: no two the same.
const PARENT_REFS_UNIQUE: &str = "self.all(p1, self.exists_one(p2, \
    p1.name == p2.name && (has(p1.__namespace__) ? p1.__namespace__ : '') == (has(p2.__namespace__) ? p2.__namespace__ : '') \
    && (has(p1.sectionName) ? p1.sectionName : '') == (has(p2.sectionName) ? p2.sectionName : '') \
    && (has(p1.port) ? p1.port : 0) == (has(p2.port) ? p2.port : 0)))";

/// A Gateway API parent reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// Name of the Gateway.
    #[x_kube(validation = rules::object_name("parentRefs name", 253))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Gateway. Defaults to the plan's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::matches(
        "parentRefs namespace",
        rules::DNS_LABEL_PATTERN,
        63,
        "the name of a namespace: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit",
    ))]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// The listener of the Gateway to attach to. Defaults to all listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::object_name("parentRefs sectionName", 253))]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
    /// The listener port to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// ConfigMap routing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapRouting {
    /// Name of the ConfigMap, in the plan's namespace, that holds the routing table. Not
    /// `kube-root-ca.crt`, which Kubernetes keeps in every namespace.
    #[x_kube(validation = rules::object_name("spec.routing.configMap.name", 253))]
    #[x_kube(validation = kube::core::Rule::new("self != 'kube-root-ca.crt'")
        .message("spec.routing.configMap.name must not be kube-root-ca.crt: Kubernetes keeps that ConfigMap in every namespace; name a ConfigMap of your own, for example crm-routing"))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// How a request carries one cohort key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CohortKey {
    /// The request header whose value names the cohort, for example `x-crm-team`: an
    /// HTTP token of at most 128 characters, not a hop-by-hop header, `host` or
    /// `content-length`. Compared case-insensitively.
    #[x_kube(validation = rules::header_name("cohort key header"))]
    #[x_kube(validation = rules::routable_header("cohort key header"))]
    #[schemars(length(min = 1, max = 128))]
    pub header: String,
}

/// A request header and its exact value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// The header name: an HTTP token of at most 128 characters, not a hop-by-hop
    /// header, `host` or `content-length`.
    #[x_kube(validation = rules::header_name("spec.legacyAccess.header"))]
    #[x_kube(validation = rules::routable_header("spec.legacyAccess.header"))]
    #[schemars(length(min = 1, max = 128))]
    pub header: String,
    /// The exact value the header must carry: 1-128 letters, digits, `-`, `_` or `.`,
    /// starting and ending with a letter or digit.
    #[x_kube(validation = rules::header_value("spec.legacyAccess.value", rules::MAX_LEGACY_ACCESS_VALUE))]
    #[schemars(length(min = 1, max = 128))]
    pub value: String,
}

/// A wave of the plan and its order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaveRef {
    /// Name of the MigrationWave (at most 63 characters, as it is a label value on the
    /// wave's route).
    #[x_kube(validation = rules::object_name("spec.waves[].name", 63))]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Waves, listed earlier in `spec.waves`, that must complete before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = rules::object_names("spec.waves[].after", 63))]
    #[schemars(length(max = 8), inner(length(min = 1, max = 63)))]
    pub after: Vec<String>,
}

/// A readiness gate. Exactly one of `prometheus` and `manual` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("[has(self.prometheus), has(self.manual)].filter(x, x).size() == 1")
    .message("readiness gate must set exactly one of prometheus or manual"))]
pub struct ReadinessGate {
    /// Name of the gate, unique within the plan: 1-63 letters, digits, `-`, `_` or `.`.
    #[x_kube(validation = rules::simple_name("readiness gate name"))]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Passes while the query's value is within `min`/`max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusGate>,
    /// Passes once an approver has passed it (`kubectl wave gate pass`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<ManualGate>,
    /// What happens when the gate stops passing after waves have started: Hold (no
    /// further progress, no rollback) or Rollback (roll back every started, unfinished
    /// wave). Defaults to Hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_fail: Option<GateFailAction>,
}

/// A gate evaluated by Prometheus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.min) || has(self.max)")
    .message("prometheus gate needs min, max or both: the passing range of the query's value"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max")
    .message("prometheus gate min must be less than or equal to max").field_path(".min"))]
pub struct PrometheusGate {
    /// An instant PromQL query, for example `sum(crm_open_defects{severity="critical"})`.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// The lowest passing value, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The highest passing value, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// A gate passed by a person.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManualGate {
    /// Who may pass this gate. Defaults to the plan's `approvers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Subjects>,
}

// What a gate that stops passing does to started waves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum GateFailAction {
    /// Hold further progress; nothing is rolled back.
    #[default]
    Hold,
    /// Roll back every started, unfinished wave.
    Rollback,
}

/// A recurring window with no forward progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FreezeWindow {
    /// Name of the window, unique within the plan: 1-63 letters, digits, `-`, `_` or `.`.
    #[x_kube(validation = rules::simple_name("freeze window name"))]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// When the window opens: a five-field cron expression (minute hour day-of-month
    /// month day-of-week), for example `0 0 28 3,6,9,12 *`.
    #[x_kube(validation = kube::core::Rule::new("self.split(' ').filter(f, f != '').size() == 5")
        .message("freeze window schedule must be a cron expression with five fields: minute hour day-of-month month day-of-week"))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[0-9A-Za-z*,/?#-]+( +[0-9A-Za-z*,/?#-]+)* *$')")
        .message("freeze window schedule may only hold digits, month and day names, * , / - ? # and fields separated by spaces, for example 0 0 28 3,6,9,12 *"))]
    #[schemars(length(min = 9, max = 128))]
    pub schedule: String,
    /// How long the window stays open, for example `96h`: from 1s to 8784h (366 days).
    #[x_kube(validation = duration::bounds_rule(
        "freeze window duration",
        duration::MIN_SPAN,
        duration::MAX_SPAN,
        " (366 days); for a longer freeze, pause the plan",
    ))]
    pub duration: DurationString,
    /// The IANA time zone the schedule is read in, for example `Asia/Kolkata`. Defaults
    /// to UTC. Daylight-saving changes are honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$')")
        .message("freeze window timeZone must be an IANA time zone name such as UTC, Asia/Kolkata or America/Argentina/Buenos_Aires"))]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
}

// What a failed wave does to the rest of the plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OnWaveFailure {
    /// Hold every wave that has not finished.
    #[default]
    PausePlan,
    /// Roll back only the failed wave; the others go on.
    RollbackWave,
    /// Roll back every started, unfinished wave.
    RollbackPlan,
}

// The kind of a human action on a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PlanActionType {
    /// Pass the manual readiness gate named by `gate`.
    PassGate,
}

/// One human action on a plan, recorded with the user who made it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanAction {
    /// What the user asks for. Currently only PassGate.
    #[serde(rename = "type")]
    pub action: PlanActionType,
    /// The username of the person who made this action, exactly as the API server
    /// authenticated them. Admission rejects an entry whose user is not the requester.
    #[schemars(length(min = 1, max = 253))]
    pub user: String,
    /// The groups of the person who made this action, exactly as the API server
    /// authenticated them. Admission rejects an entry whose groups are not the
    /// requester's, so the operator can check authority itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub groups: Vec<super::common::GroupName>,
    /// The manual gate being passed.
    #[schemars(length(min = 1, max = 63))]
    pub gate: String,
    /// A free-text note, for example the rehearsal report's link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub message: Option<String>,
}

// The lifecycle of a plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PlanPhase {
    /// No wave has started: gates, order or a freeze hold them.
    #[default]
    Pending,
    /// At least one wave is active.
    Progressing,
    /// Held by the failure policy or a failing gate.
    Paused,
    /// Inside a freeze window.
    Frozen,
    /// Rolling back waves because of the failure policy or a gate.
    RollingBack,
    /// Every wave completed.
    Completed,
    /// A wave failed and the plan cannot go on without a human.
    Failed,
}

/// The last evaluation of one readiness gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateStatus {
    /// The gate's name.
    pub name: String,
    /// Whether the gate passes now.
    pub passing: bool,
    /// For prometheus gates: the last value the query returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// For manual gates: who passed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed_by: Option<String>,
    /// Why the gate passes or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the gate was last evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluated: Option<Time>,
}

/// One wave, as the plan sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaveSummary {
    /// The wave's name.
    pub name: String,
    /// The wave's phase, or Pending when the wave does not exist yet.
    pub phase: super::wave::WavePhase,
    /// The plan lets this wave start: its turn in the order and concurrency has come
    /// and nothing holds the plan.
    #[serde(default)]
    pub admitted: bool,
    /// What keeps the wave from moving forward now, as a constant: Order, Concurrency,
    /// GateFailing, Frozen, PlanPaused, InvalidFreezeWindow or PlanDeleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    /// The hold, for people: which wave it waits for, which gate fails, which window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the hold lifts by itself (the end of a freeze window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Time>,
    /// Set when the plan requires this wave to roll back, with why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
}

/// An open freeze window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FreezeStatus {
    /// The open window's name.
    pub window: String,
    /// When the window closes.
    pub until: Time,
}

/// What the operator observed and decided for a plan. Written only by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CutoverPlanStatus {
    /// Where the plan is in its lifecycle: Pending, Progressing, Paused, Frozen,
    /// RollingBack, Completed or Failed.
    #[serde(default)]
    pub phase: PlanPhase,
    /// Waves completed and in total, as `done/total`, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves_summary: Option<String>,
    /// Gates passing and in total, as `passing/total`, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates_summary: Option<String>,
    /// Each readiness gate's last evaluation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateStatus>,
    /// Each wave's phase and what holds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<WaveSummary>,
    /// The freeze window open now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<FreezeStatus>,
    /// How many entries of `spec.actions` the operator has processed.
    #[serde(default)]
    pub actions_processed: i32,
    /// Standard conditions: Ready, GatesPassing, Frozen, Valid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// A bounded audit trail of what happened and who caused it, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
