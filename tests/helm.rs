//! The Helm chart (charts/switchyard): it lints, its schema refuses bad values, it renders
//! what the operator needs, its copies of crds/ and policies/ match the sources, and every
//! object it renders is accepted by a real API server (server-side apply, dry run).
//!
//! Helm is built from its Go module by `make helm` (hack/build-helm.sh); `HELM` overrides.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
    core::GroupVersionKind,
    discovery::{Discovery, Scope},
};
use serde::Deserialize;
use serde_json::Value;

/// The Helm release hack/build-helm.sh builds (keep the two in step).
const HELM_VERSION: &str = "v3.22.0";
/// The prometheus-operator module whose CRDs (ServiceMonitor, PrometheusRule) are
/// installed before the chart is applied (the Makefile's `helm` target downloads it).
const PROMETHEUS_OPERATOR_VERSION: &str = "v0.85.0";
const RELEASE: &str = "switchyard";
const FIELD_MANAGER: &str = "switchyard-test";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/switchyard")
}

fn all_options_values() -> PathBuf {
    chart().join("ci/all-options-values.yaml")
}

fn helm() -> PathBuf {
    if let Some(path) = std::env::var_os("HELM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "HELM={} is not a file: unset it, or point it at a helm binary",
            path.display()
        );
        return path;
    }
    let cache = match std::env::var_os("SWITCHYARD_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"))
            .join("switchyard"),
    };
    let path = cache.join(format!("helm-{HELM_VERSION}/helm"));
    assert!(
        path.is_file(),
        "Helm {HELM_VERSION} is not built: run `make helm` (hack/build-helm.sh builds it from \
         the helm.sh/helm/v3 Go module into {}), or set HELM to a helm binary",
        path.display()
    );
    path
}

struct HelmRun {
    success: bool,
    stdout: String,
    stderr: String,
}

fn run_helm(args: &[&str]) -> HelmRun {
    let output = Command::new(helm())
        .args(args)
        // Keep Helm away from the user's repositories, plugins and kubeconfig.
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("switchyard-helm-test/cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("switchyard-helm-test/config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("switchyard-helm-test/data"),
        )
        .env("KUBECONFIG", "/dev/null")
        .output()
        .expect("helm runs");
    HelmRun {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn template_args<'a>(namespace: &'a str, chart: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let kube_version = switchyard_testenv::KUBE_VERSION;
    let mut args = vec![
        "template",
        RELEASE,
        chart,
        "--namespace",
        namespace,
        "--kube-version",
        kube_version,
    ];
    args.extend_from_slice(extra);
    args
}

/// `helm template` with `extra` arguments, parsed into one JSON value per object.
fn render(namespace: &str, extra: &[&str]) -> Vec<Value> {
    let chart = chart().display().to_string();
    let run = run_helm(&template_args(namespace, &chart, extra));
    assert!(
        run.success,
        "helm template {extra:?} failed:\n{}",
        run.stderr
    );
    parse_documents(&run.stdout)
}

/// `helm template` with `extra` arguments, which must fail; returns Helm's message.
fn render_error(extra: &[&str]) -> String {
    let chart = chart().display().to_string();
    let run = run_helm(&template_args("switchyard-system", &chart, extra));
    assert!(
        !run.success,
        "helm template {extra:?} should have failed, but rendered:\n{}",
        run.stdout
    );
    run.stderr
}

fn parse_documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("helm renders valid YAML"))
        .filter(|value| !value.is_null())
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn only<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}, found {found:#?}"
    );
    found[0]
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name} was rendered"))
}

fn container(objects: &[Value]) -> &Value {
    &only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn args(objects: &[Value]) -> Vec<String> {
    container(objects)["args"]
        .as_array()
        .expect("the container has args")
        .iter()
        .map(|a| a.as_str().expect("args are strings").to_owned())
        .collect()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{value} is not a list"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

fn chart_app_version() -> String {
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .unwrap();
    chart["appVersion"].as_str().unwrap().to_owned()
}

#[test]
fn helm_lint_passes_with_default_values_and_with_every_option_on() {
    let chart = chart().display().to_string();
    let all = all_options_values().display().to_string();
    for extra in [vec![], vec!["--values", all.as_str()]] {
        let mut args = vec![
            "lint",
            "--strict",
            &chart,
            "--kube-version",
            switchyard_testenv::KUBE_VERSION,
        ];
        args.extend(extra.iter().copied());
        let run = run_helm(&args);
        assert!(
            run.success && run.stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "helm {args:?} failed:\n{}{}",
            run.stdout,
            run.stderr
        );
    }
}

#[test]
fn the_schema_refuses_unknown_keys_and_values_outside_their_enums() {
    let dir = tempfile::tempdir().unwrap();
    let chart = chart().display().to_string();
    let cases = [
        (
            "logFormat: xml\n",
            "at '/logFormat': value must be one of 'text', 'json'",
        ),
        (
            "replicas: 3\n",
            "additional properties 'replicas' not allowed",
        ),
        (
            "leaderElection:\n  leaseDurationSeconds: 15\n",
            "at '/leaderElection': additional properties 'leaseDurationSeconds' not allowed",
        ),
        (
            "leaderElection:\n  leaseDuration: 15\n",
            "at '/leaderElection/leaseDuration'",
        ),
        (
            "topologySpread:\n  whenUnsatisfiable: Sometimes\n",
            "'ScheduleAnyway', 'DoNotSchedule'",
        ),
        ("watchNamespaces: [CRM]\n", "at '/watchNamespaces/0'"),
        (
            "maxConcurrentReconciles: 0\n",
            "at '/maxConcurrentReconciles'",
        ),
        ("apiWriteTimeout: 5\n", "at '/apiWriteTimeout'"),
        ("perWaveMetrics: yes please\n", "at '/perWaveMetrics'"),
    ];
    for (index, (values, expected)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad-{index}.yaml"));
        std::fs::write(&file, values).unwrap();
        let file = file.display().to_string();
        // `helm lint` (what CI of a chart runs) and `helm template` (what install and
        // upgrade run first) both refuse it, saying which value is wrong.
        let lint = run_helm(&["lint", &chart, "--values", &file]);
        assert!(
            !lint.success && lint.stdout.contains(expected),
            "helm lint should refuse {values:?} with {expected:?}, said:\n{}{}",
            lint.stdout,
            lint.stderr
        );
        let message = render_error(&["--values", &file]);
        assert!(
            message.contains("values don't meet the specifications of the schema")
                && message.contains(expected),
            "helm template should refuse {values:?} with {expected:?}, said:\n{message}"
        );
    }
}

#[test]
fn several_replicas_need_leader_election() {
    let message = render_error(&["--set", "leaderElection.enabled=false"]);
    assert!(
        message.contains("replicaCount > 1 needs leaderElection.enabled=true"),
        "{message}"
    );
    let objects = render(
        "switchyard-system",
        &[
            "--set",
            "leaderElection.enabled=false",
            "--set",
            "replicaCount=1",
        ],
    );
    let args = args(&objects);
    assert!(
        args.contains(&"--leader-election=false".to_owned()),
        "{args:?}"
    );
    assert!(!args.iter().any(|a| a.starts_with("--lease-")), "{args:?}");
    assert!(
        of_kind(&objects, "Role").is_empty(),
        "no Lease, no Lease Role"
    );
}

#[test]
fn default_values_render_a_hardened_highly_available_operator() {
    let objects = render("switchyard-system", &[]);
    let deployment = only(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["metadata"]["namespace"], "switchyard-system");

    let container = container(&objects);
    assert_eq!(
        container["image"],
        format!("ghcr.io/switchyard-dev/switchyard:{}", chart_app_version())
    );
    let args = args(&objects);
    for expected in [
        "run",
        "--http-addr=0.0.0.0:8080",
        "--log-format=json",
        "--leader-election=true",
        "--lease-name=switchyard",
        "--lease-namespace=switchyard-system",
        "--lease-duration=15s",
        "--identity=$(POD_NAME)",
        "--prometheus-timeout=5s",
        "--prometheus-max-concurrent=8",
        "--api-write-timeout=5s",
        "--per-wave-metrics=false",
    ] {
        assert!(
            args.contains(&expected.to_owned()),
            "{expected} missing from {args:?}"
        );
    }
    for absent in [
        "--namespaces",
        "--prometheus-url",
        "--prometheus-token-file",
        "--receiver-token-file",
    ] {
        assert!(
            !args.iter().any(|a| a.starts_with(absent)),
            "{absent} in {args:?}"
        );
    }
    let env = container["env"].as_array().unwrap();
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not set"));
        assert_eq!(var["valueFrom"]["fieldRef"]["fieldPath"], field);
    }

    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "http");
    assert_eq!(container["ports"][0]["containerPort"], 8080);

    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource} is not set"
            );
        }
    }
    // Read-only root: /tmp is the one writable place.
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/tmp");

    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        spread["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    let pdb = only(&objects, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["selector"], deployment["spec"]["selector"]);

    let service = named(&objects, "Service", "switchyard");
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        of_kind(&objects, "Service").len(),
        2,
        "switchyard and -receiver"
    );

    // The operator's ServiceAccount is bound cluster-wide to the operator's ClusterRole
    // and to the CRD reader, and in the release namespace to the leader election role.
    let account = only(&objects, "ServiceAccount");
    assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
    let subject = serde_json::json!([{
        "kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "switchyard-system"
    }]);
    let mut cluster_roles: Vec<&str> = of_kind(&objects, "ClusterRoleBinding")
        .into_iter()
        .map(|binding| {
            assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
            assert_eq!(binding["subjects"], subject);
            binding["roleRef"]["name"].as_str().unwrap()
        })
        .collect();
    cluster_roles.sort();
    assert_eq!(
        cluster_roles,
        ["switchyard-operator", "switchyard-operator-crds"]
    );
    named(&objects, "ClusterRole", "switchyard-operator");
    let election = named(&objects, "ClusterRole", "switchyard-leader-election");
    let resources: Vec<&str> = election["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| strings(&rule["resources"]))
        .collect();
    assert_eq!(resources, ["leases", "leases", "pods"]);
    // Its own Lease only (but for create, which RBAC cannot limit by name).
    assert_eq!(
        election["rules"][1]["resourceNames"],
        serde_json::json!(["switchyard"])
    );
    assert!(
        of_kind(&objects, "Role").is_empty(),
        "roles come from policies/rbac.yaml"
    );
    let role_binding = only(&objects, "RoleBinding");
    assert_eq!(role_binding["metadata"]["namespace"], "switchyard-system");
    assert_eq!(role_binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(
        role_binding["roleRef"]["name"],
        "switchyard-leader-election"
    );
    assert_eq!(role_binding["subjects"], subject);

    assert_eq!(of_kind(&objects, "ValidatingAdmissionPolicy").len(), 6);
    assert_eq!(
        of_kind(&objects, "ValidatingAdmissionPolicyBinding").len(),
        6
    );
    // Off by default: they need prometheus-operator's CRDs, or a CNI that enforces them.
    for kind in ["ServiceMonitor", "PrometheusRule", "NetworkPolicy"] {
        assert!(
            of_kind(&objects, kind).is_empty(),
            "{kind} rendered by default"
        );
    }
    // CRDs come from crds/ only with --include-crds (as `helm install` does).
    assert!(of_kind(&objects, "CustomResourceDefinition").is_empty());
}

#[test]
fn every_option_renders_where_it_belongs() {
    let all = all_options_values().display().to_string();
    let objects = render("switchyard-system", &["--values", &all, "--include-crds"]);
    let deployment = only(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["metadata"]["name"], "switchyard-ops");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let container = container(&objects);
    assert_eq!(
        container["image"],
        "registry.example.com/platform/switchyard@sha256:\
         0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    let args = args(&objects);
    for expected in [
        "--http-addr=0.0.0.0:9443",
        "--namespaces=crm,billing",
        "--log-format=text",
        "--lease-name=switchyard-ops-leader",
        "--lease-duration=20s",
        "--prometheus-url=http://prometheus-operated.monitoring.svc:9090",
        "--prometheus-token-file=/etc/switchyard/prometheus/bearer",
        "--prometheus-timeout=3s",
        "--prometheus-max-concurrent=16",
        "--receiver-token-file=/etc/switchyard/receiver/token",
        "--api-write-timeout=2s",
        "--per-wave-metrics=true",
    ] {
        assert!(
            args.contains(&expected.to_owned()),
            "{expected} missing from {args:?}"
        );
    }
    // The token files come from Secrets, mounted read-only where the flags point.
    for (volume, secret, mount) in [
        (
            "prometheus-token",
            "prometheus-token",
            "/etc/switchyard/prometheus",
        ),
        (
            "receiver-token",
            "alertmanager-webhook",
            "/etc/switchyard/receiver",
        ),
    ] {
        let mounted = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap_or_else(|| panic!("{volume} is not mounted"));
        assert_eq!(mounted["mountPath"], mount);
        assert_eq!(mounted["readOnly"], true);
        let declared = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == volume)
            .unwrap();
        assert_eq!(declared["secret"]["secretName"], secret);
    }
    assert_eq!(
        pod["topologySpreadConstraints"].as_array().unwrap().len(),
        2
    );
    assert_eq!(
        pod["topologySpreadConstraints"][0]["whenUnsatisfiable"],
        "DoNotSchedule"
    );
    assert_eq!(pod["serviceAccountName"], "switchyard-operator");
    assert_eq!(
        only(&objects, "PodDisruptionBudget")["spec"]["minAvailable"],
        2
    );

    // Watching two namespaces: the operator's role is granted in those two only (the
    // CRD reader stays cluster-wide: CRDs are cluster-scoped).
    let cluster_roles: Vec<&str> = of_kind(&objects, "ClusterRoleBinding")
        .into_iter()
        .map(|b| b["roleRef"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(cluster_roles, ["switchyard-operator-crds"]);
    let grants: Vec<&str> = of_kind(&objects, "RoleBinding")
        .into_iter()
        .filter(|b| b["roleRef"]["name"] == "switchyard-operator")
        .map(|b| b["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(grants, ["crm", "billing"]);

    let monitor = only(&objects, "ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    let rules = &only(&objects, "PrometheusRule")["spec"]["groups"][0]["rules"];
    let expressions: Vec<(&str, &str)> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["alert"].as_str().unwrap(), r["expr"].as_str().unwrap()))
        .collect();
    for (alert, needle) in [
        (
            "SwitchyardNoLeader",
            "max(switchyard_leader{service=\"switchyard-ops\"}) < 1",
        ),
        (
            "SwitchyardReconcileErrors",
            "switchyard_reconcile_errors_total{",
        ),
        (
            "SwitchyardAnalysisQueryErrors",
            "switchyard_analysis_queries_total{service=\"switchyard-ops\", outcome=\"error\"}",
        ),
        (
            "SwitchyardReceiverUnauthorized",
            "switchyard_receiver_requests_total{service=\"switchyard-ops\", code=\"401\"}",
        ),
    ] {
        assert!(
            expressions
                .iter()
                .any(|(a, e)| *a == alert && e.contains(needle)),
            "no alert {alert} with {needle} in {expressions:#?}"
        );
    }
    for rule in rules.as_array().unwrap() {
        assert_eq!(rule["labels"]["team"], "platform", "alertLabels on {rule}");
    }

    let policy = only(&objects, "NetworkPolicy");
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], "http");
    assert_eq!(
        policy["spec"]["ingress"][0]["from"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let egress_ports: Vec<&Value> = policy["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_array().unwrap())
        .map(|port| &port["port"])
        .collect();
    for port in [443, 6443, 9090, 53] {
        assert!(
            egress_ports.contains(&&Value::from(port)),
            "egress to {port}"
        );
    }

    let crds: Vec<&str> = of_kind(&objects, "CustomResourceDefinition")
        .into_iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        crds,
        [
            "cutoverplans.switchyard.dev",
            "migrationwaves.switchyard.dev"
        ]
    );
}

#[test]
fn policies_and_rbac_can_be_left_out() {
    let objects = render(
        "switchyard-system",
        &[
            "--set",
            "policies.enabled=false",
            "--set",
            "rbac.create=false",
        ],
    );
    for kind in [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ] {
        assert!(of_kind(&objects, kind).is_empty(), "{kind} rendered");
    }
    only(&objects, "Deployment");
    only(&objects, "ServiceAccount");
}

fn yaml_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    names.sort();
    names
}

#[test]
fn the_charts_crds_are_the_generated_crds() {
    let source = repo().join("crds");
    let copies = chart().join("crds");
    assert_eq!(
        yaml_files(&copies),
        yaml_files(&source),
        "charts/switchyard/crds/ must hold exactly the files of crds/: run `make crds`"
    );
    for name in yaml_files(&source) {
        assert!(
            std::fs::read(copies.join(&name)).unwrap()
                == std::fs::read(source.join(&name)).unwrap(),
            "charts/switchyard/crds/{name} differs from crds/{name}: the chart's CRDs are \
             copies; run `make crds` (never edit either by hand)"
        );
    }
}

#[test]
fn the_charts_policies_and_roles_are_the_repository_files() {
    for name in ["actions.yaml", "rbac.yaml"] {
        let source = repo().join("policies").join(name);
        let copy = chart().join("files/policies").join(name);
        assert!(
            std::fs::read(&copy).unwrap() == std::fs::read(&source).unwrap(),
            "charts/switchyard/files/policies/{name} differs from policies/{name}: the chart \
             ships a copy; run `make crds` to refresh it"
        );
    }
    // And the chart renders them unchanged but for its labels.
    let rendered = render("switchyard-system", &[]);
    for name in ["actions.yaml", "rbac.yaml"] {
        let text = std::fs::read_to_string(repo().join("policies").join(name)).unwrap();
        for mut source in parse_documents(&text) {
            let kind = source["kind"].as_str().unwrap().to_owned();
            let object_name = source["metadata"]["name"].as_str().unwrap().to_owned();
            let mut shipped = named(&rendered, &kind, &object_name).clone();
            for object in [&mut source, &mut shipped] {
                object["metadata"].as_object_mut().unwrap().remove("labels");
            }
            assert_eq!(
                shipped, source,
                "{kind} {object_name} as the chart renders it"
            );
        }
    }
}

/// The CRDs of prometheus-operator's ServiceMonitor and PrometheusRule, from its Go
/// module (downloaded into Go's module cache by `make helm`, or now).
fn prometheus_operator_crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    let module =
        format!("github.com/prometheus-operator/prometheus-operator@{PROMETHEUS_OPERATOR_VERSION}");
    let output = Command::new("go")
        .args(["mod", "download", "-json", &module])
        .current_dir(std::env::temp_dir())
        .env("GOFLAGS", "-mod=mod")
        .output()
        .expect("go runs");
    let download: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "go mod download {module} printed no module description ({err}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let dir = download["Dir"]
        .as_str()
        .unwrap_or_else(|| panic!("could not download {module}: {download}"));
    let mut crds = Vec::new();
    for kind in ["servicemonitors", "prometheusrules"] {
        let path = Path::new(dir).join(format!(
            "example/prometheus-operator-crd/monitoring.coreos.com_{kind}.yaml"
        ));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        crds.extend(switchyard_testenv::crds_in_yaml(&text).unwrap());
    }
    crds
}

/// Applies every rendered object to the API server with server-side apply in dry-run
/// mode, and returns the refusals ("Kind name: message").
async fn dry_run_apply(client: &Client, namespace: &str, objects: &[Value]) -> Vec<String> {
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let params = PatchParams::apply(FIELD_MANAGER).dry_run();
    let mut refusals = Vec::new();
    for value in objects {
        let object: DynamicObject = serde_json::from_value(value.clone()).unwrap();
        let types = object
            .types
            .clone()
            .expect("rendered objects have apiVersion and kind");
        let name = object
            .metadata
            .name
            .clone()
            .expect("rendered objects have names");
        let gvk = GroupVersionKind::try_from(&types).unwrap();
        let Some((resource, capabilities)) = discovery.resolve_gvk(&gvk) else {
            refusals.push(format!(
                "{} {name}: the API server does not serve {gvk:?}",
                types.kind
            ));
            continue;
        };
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Cluster => Api::all_with(client.clone(), &resource),
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                object.metadata.namespace.as_deref().unwrap_or(namespace),
                &resource,
            ),
        };
        if let Err(err) = api.patch(&name, &params, &Patch::Apply(&object)).await {
            refusals.push(format!("{} {name}: {err}", types.kind));
        }
    }
    refusals
}

/// Renders the chart into a fresh release namespace and dry-run applies all of it,
/// CRDs included; the release namespace, the CRDs the objects need and the watched
/// namespaces are created for real first.
async fn assert_api_server_accepts(prefix: &str, values: &[&str], watched: usize) -> Vec<Value> {
    let plane = common::plane();
    let (client, namespace) = common::admin_in_fresh_namespace(prefix).await;
    plane
        .install_crds(&prometheus_operator_crds())
        .await
        .expect("prometheus-operator CRDs install");
    let mut watch = Vec::new();
    for _ in 0..watched {
        watch.push(plane.create_namespace(prefix).await.unwrap());
    }
    let watch_json = format!("watchNamespaces={}", serde_json::to_string(&watch).unwrap());
    let mut extra = vec!["--include-crds"];
    extra.extend_from_slice(values);
    if watched > 0 {
        extra.extend(["--set-json", watch_json.as_str()]);
    }
    let objects = render(&namespace, &extra);
    let refusals = dry_run_apply(&client, &namespace, &objects).await;
    assert!(
        refusals.is_empty(),
        "the API server refused {} of {} rendered objects:\n{}",
        refusals.len(),
        objects.len(),
        refusals.join("\n")
    );
    objects
}

#[tokio::test]
async fn the_api_server_accepts_everything_the_default_values_render() {
    let objects = assert_api_server_accepts("helm-defaults", &[], 0).await;
    assert_eq!(of_kind(&objects, "CustomResourceDefinition").len(), 2);
    assert_eq!(of_kind(&objects, "Deployment").len(), 1);
}

#[tokio::test]
async fn the_api_server_accepts_everything_every_option_renders() {
    let all = all_options_values().display().to_string();
    let objects = assert_api_server_accepts("helm-all-options", &["--values", &all], 2).await;
    for kind in [
        "CustomResourceDefinition",
        "ServiceMonitor",
        "PrometheusRule",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ValidatingAdmissionPolicy",
        "RoleBinding",
    ] {
        assert!(!of_kind(&objects, kind).is_empty(), "no {kind} was applied");
    }
}

/// `switchyard run` as its own command line parses it.
#[derive(clap::Parser)]
struct SwitchyardCommand {
    #[command(subcommand)]
    command: SwitchyardSubcommand,
}

#[derive(clap::Subcommand)]
enum SwitchyardSubcommand {
    Run(switchyard::runtime::RunOptions),
}

#[test]
fn the_operators_arguments_are_flags_switchyard_run_accepts() {
    use clap::Parser;
    for (values, concurrency) in [
        (vec![], 32),
        (
            vec!["-f".to_owned(), all_options_values().display().to_string()],
            64,
        ),
    ] {
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let objects = render("switchyard-system", &values);
        let args = args(&objects);
        let parsed = SwitchyardCommand::try_parse_from(
            std::iter::once("switchyard".to_owned()).chain(args.iter().cloned()),
        )
        .unwrap_or_else(|err| panic!("the chart's args {args:?} do not parse: {err}"));
        let SwitchyardSubcommand::Run(options) = parsed.command;
        assert!(options.leader_election);
        assert!(
            options.label_leader_pod,
            "the leader labels its Pod for the receiver Service"
        );
        assert_eq!(
            options.lease_namespace.as_deref(),
            Some("switchyard-system")
        );
        assert_eq!(options.max_concurrent_reconciles, concurrency);
    }
}

#[test]
fn alertmanager_reaches_the_leader_only() {
    let objects = render("switchyard-system", &[]);
    let receiver = named(&objects, "Service", "switchyard-receiver");
    assert_eq!(
        receiver["spec"]["selector"][switchyard::leader::LEADER_POD_LABEL],
        "true"
    );
    // Metrics are scraped from every replica, through the other Service.
    let service = named(&objects, "Service", "switchyard");
    assert!(
        service["spec"]["selector"]
            .get(switchyard::leader::LEADER_POD_LABEL)
            .is_none()
    );
    // The leader may label its own Pod: the leader-election role, in its namespace.
    let binding = named(&objects, "RoleBinding", "switchyard-leader-election");
    assert_eq!(binding["roleRef"]["name"], "switchyard-leader-election");
    assert_eq!(binding["metadata"]["namespace"], "switchyard-system");
}

/// The verbs that change nothing.
const READ_VERBS: [&str; 3] = ["get", "list", "watch"];

/// The verbs of the rendered ClusterRole `name` that are not reads.
fn write_verbs<'a>(objects: &'a [Value], name: &str) -> Vec<&'a str> {
    named(objects, "ClusterRole", name)["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| strings(&rule["verbs"]))
        .filter(|verb| !READ_VERBS.contains(verb))
        .collect()
}

#[test]
fn namespaced_mode_grants_no_cluster_wide_write() {
    let objects = render(
        "switchyard-system",
        &["--set-json", r#"watchNamespaces=["crm","billing"]"#],
    );
    assert!(args(&objects).contains(&"--namespaces=crm,billing".to_owned()));
    let cluster_bindings = of_kind(&objects, "ClusterRoleBinding");
    assert!(!cluster_bindings.is_empty());
    for binding in cluster_bindings {
        let role = binding["roleRef"]["name"].as_str().unwrap();
        assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
        let writes = write_verbs(&objects, role);
        assert!(
            writes.is_empty(),
            "the ClusterRoleBinding {} grants {writes:?} cluster-wide (role {role})",
            binding["metadata"]["name"]
        );
    }
    // Every write is granted in a watched namespace, or (leader election) in the
    // release namespace.
    let mut grants: Vec<(&str, &str)> = of_kind(&objects, "RoleBinding")
        .into_iter()
        .map(|b| {
            (
                b["metadata"]["namespace"].as_str().unwrap(),
                b["roleRef"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    grants.sort();
    assert_eq!(
        grants,
        [
            ("billing", "switchyard-operator"),
            ("crm", "switchyard-operator"),
            ("switchyard-system", "switchyard-leader-election"),
        ]
    );
    // Without the value, the operator's role is bound cluster-wide (the contrast).
    let all = render("switchyard-system", &[]);
    let wide: Vec<&str> = of_kind(&all, "ClusterRoleBinding")
        .into_iter()
        .map(|b| b["roleRef"]["name"].as_str().unwrap())
        .filter(|role| !write_verbs(&all, role).is_empty())
        .collect();
    assert_eq!(wide, ["switchyard-operator"]);
}

#[test]
fn the_operators_policies_and_lease_are_fitted_to_the_release() {
    use switchyard::policies::operator::{DEFAULT_OPERATOR, for_operator};
    let objects = render(
        "ops",
        &[
            "--set",
            "serviceAccount.name=cutover",
            "--set",
            "leaderElection.leaseName=cutover-leader",
        ],
    );
    let (policies, _) = switchyard::policies::all();
    let expected = for_operator(policies, "system:serviceaccount:ops:cutover");
    let mut fitted = 0;
    for policy in &expected {
        let name = policy.metadata.name.as_deref().unwrap();
        let mut rendered = named(&objects, "ValidatingAdmissionPolicy", name).clone();
        rendered["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("labels");
        let mut expected = serde_json::to_value(policy).unwrap();
        expected["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("labels");
        assert_eq!(rendered, expected, "{name} as the chart renders it");
        let text = rendered.to_string();
        assert!(!text.contains(DEFAULT_OPERATOR), "{text}");
        if text.contains("system:serviceaccount:ops:cutover") {
            fitted += 1;
        }
    }
    assert_eq!(fitted, 3, "the three policies that bind the operator");
    let election = named(&objects, "ClusterRole", "switchyard-leader-election");
    assert_eq!(
        election["rules"][1]["resourceNames"],
        serde_json::json!(["cutover-leader"])
    );
    assert!(args(&objects).contains(&"--lease-name=cutover-leader".to_owned()));
    assert_eq!(
        only(&objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
        "cutover"
    );
}

/// Applies (for real) the rendered objects of these kinds.
async fn apply_kinds(client: &Client, namespace: &str, objects: &[Value], kinds: &[&str]) {
    let chosen: Vec<Value> = objects
        .iter()
        .filter(|o| kinds.contains(&o["kind"].as_str().unwrap()))
        .cloned()
        .collect();
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for value in chosen {
        let object: DynamicObject = serde_json::from_value(value).unwrap();
        let gvk = GroupVersionKind::try_from(object.types.as_ref().unwrap()).unwrap();
        let (resource, capabilities) = discovery.resolve_gvk(&gvk).unwrap();
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Cluster => Api::all_with(client.clone(), &resource),
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                object.metadata.namespace.as_deref().unwrap_or(namespace),
                &resource,
            ),
        };
        api.patch(
            object.metadata.name.as_deref().unwrap(),
            &params,
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|err| panic!("{} {:?}: {err}", gvk.kind, object.metadata.name));
    }
}

/// The chart in namespaced mode, installed for real (its RBAC and admission policies):
/// its ServiceAccount writes routing tables in the watched namespaces only, and only
/// labelled ones, because the chart wrote that ServiceAccount into the policies.
#[tokio::test]
async fn the_installed_namespaced_chart_lets_its_service_account_write_only_where_it_may() {
    use k8s_openapi::api::{authorization::v1::SelfSubjectAccessReview, core::v1::ConfigMap};
    use kube::api::PostParams;
    let plane = common::plane();
    let (admin, namespace) = common::admin_in_fresh_namespace("helm-namespaced").await;
    let watched = plane.create_namespace("helm-watched").await.unwrap();
    let unwatched = plane.create_namespace("helm-unwatched").await.unwrap();
    let watch_json = format!("watchNamespaces=[{watched:?}]");
    let objects = render(&namespace, &["--set-json", &watch_json]);
    apply_kinds(
        &admin,
        &namespace,
        &objects,
        &[
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "RoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ],
    )
    .await;
    let account = only(&objects, "ServiceAccount")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let username = format!("system:serviceaccount:{namespace}:{account}");
    let group = format!("system:serviceaccounts:{namespace}");
    let operator = plane
        .client_as(&username, &["system:serviceaccounts", &group])
        .await
        .unwrap();
    let can = |verb: &'static str, resource: &'static str, ns: String, name: &'static str| {
        let operator = operator.clone();
        async move {
            let group = match resource {
                "leases" => "coordination.k8s.io",
                "httproutes" => "gateway.networking.k8s.io",
                _ => "",
            };
            let review: SelfSubjectAccessReview = serde_json::from_value(serde_json::json!({
                "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"verb": verb, "group": group,
                    "resource": resource, "namespace": ns, "name": name}}
            }))
            .unwrap();
            Api::<SelfSubjectAccessReview>::all(operator)
                .create(&PostParams::default(), &review)
                .await
                .unwrap()
                .status
                .unwrap()
                .allowed
        }
    };
    for (verb, resource, ns, name, allowed) in [
        ("create", "configmaps", watched.clone(), "", true),
        ("patch", "httproutes", watched.clone(), "", true),
        ("create", "configmaps", unwatched.clone(), "", false),
        ("patch", "httproutes", unwatched.clone(), "", false),
        ("create", "configmaps", "kube-system".to_owned(), "", false),
        ("list", "configmaps", "".to_owned(), "", false),
        ("patch", "leases", namespace.clone(), "switchyard", true),
        (
            "patch",
            "leases",
            namespace.clone(),
            "kube-scheduler",
            false,
        ),
        ("patch", "leases", watched.clone(), "switchyard", false),
        ("patch", "pods", namespace.clone(), "", true),
        ("get", "pods", namespace.clone(), "", false),
        ("patch", "pods", watched.clone(), "", false),
    ] {
        assert_eq!(
            can(verb, resource, ns.clone(), name).await,
            allowed,
            "{verb} {resource}/{name} in {ns:?}"
        );
    }
    // The policies name this release's ServiceAccount: an unlabelled ConfigMap is
    // refused (once the API server has loaded them), a routing table is not.
    let tables: Api<ConfigMap> = Api::namespaced(operator.clone(), &watched);
    let table = |name: &str, labels: Value| -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}}))
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let message = loop {
        match tables
            .create(
                &PostParams::default(),
                &table("plain", serde_json::json!({})),
            )
            .await
        {
            Err(kube::Error::Api(status))
                if status.message.contains("ValidatingAdmissionPolicy") =>
            {
                break status.message;
            }
            Ok(_) => {
                // Created before the policy took effect: clean up and try again.
                let _ = Api::<ConfigMap>::namespaced(admin.clone(), &watched)
                    .delete("plain", &Default::default())
                    .await;
            }
            Err(err) => panic!("{err}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the chart's policies never refused its ServiceAccount"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        message.contains("switchyard-operator-writes-only-routing-tables"),
        "{message}"
    );
    tables
        .create(
            &PostParams::default(),
            &table(
                "crm-routing",
                serde_json::json!({"switchyard.dev/routing-table": "true"}),
            ),
        )
        .await
        .expect("a routing table in a watched namespace");
}
