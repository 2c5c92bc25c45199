//! `make demo`: the CRM unification example (`examples/crm-unification/`, six cohorts
//! under one CutoverPlan) migrated end to end in a few minutes, on an embedded control
//! plane (or the cluster of `KUBECONFIG`), with a synthetic metrics source, a real
//! Prometheus and Alertmanager, and the real operator (`switchyard run`) as a child
//! process. The demo acts as the release manager through `kubectl wave`'s own code,
//! breaks one cohort's hand-offs at 25% to show an automatic rollback and the plan's
//! hold, fixes them and retries. See `demo/README.md`.

mod director;
mod env;
mod error;
mod gateway;
mod rewrite;
mod screen;
mod traffic;
mod traffic_view;

use std::{
    io::{IsTerminal, Write as _},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Parser;
use jiff::Timestamp;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use switchyard::{
    analysis::{self, template},
    api::CutoverPlan,
    cli::{Tone, commands},
};
use switchyard_testenv::{GATEWAY_API_VERSION, KUBE_VERSION};

use crate::director::{Context, Director, Finish, Parts, VICTIM, print_summary};
use crate::env::{Choice, Environment, Operator, OperatorSettings};
use crate::error::{DemoError, details, one_line};
use crate::rewrite::{Example, Scale, Settings};
use crate::screen::{Mode, Screen, since};
use crate::traffic::Traffic;
use crate::traffic_view::Report;

/// The default time scale: one real day in two seconds.
const DEFAULT_SCALE: u64 = 43_200;
/// The hard limit in CI mode, unless `--timeout` says otherwise.
const CI_TIMEOUT: Duration = Duration::from_secs(8 * 60);
/// How far ahead a freeze window is looked for when the demo has no timeout.
const FREEZE_HORIZON: Duration = Duration::from_secs(30 * 60);
/// How long Prometheus may take to have a first answer for every query.
const DATA_WAIT: Duration = Duration::from_secs(60);
/// How long every cohort's requests may take to reach the target once all waves completed
/// (Traefik applies route changes asynchronously).
const ON_TARGET_WAIT: Duration = Duration::from_secs(10);

/// The CRM unification example, migrated cohort by cohort in a few minutes.
#[derive(Debug, Parser)]
#[command(
    name = "switchyard-demo",
    version,
    about = "The CRM unification example, migrated cohort by cohort in a few minutes",
    long_about = "The CRM unification example (examples/crm-unification: six cohorts, one \
        CutoverPlan) migrated end to end: an embedded control plane (or the cluster of \
        KUBECONFIG), a synthetic metrics source, a real Prometheus and Alertmanager, and the \
        operator (switchyard run). The demo acts as the release manager with kubectl wave, \
        breaks sales-emea's hand-offs at 25% to show an automatic rollback, fixes them and \
        retries. Ctrl-C stops it and cleans up. See demo/README.md."
)]
struct Args {
    /// Divide every duration of the example by N (whole seconds, at least 1s); PromQL
    /// ranges become at least 10s. The default, 43200, runs one real day in two seconds.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SCALE,
          value_parser = clap::value_parser!(u64).range(1..))]
    time_scale: u64,
    /// Non-interactive: no colors, no redraws, a log line per change, the whole view every
    /// 15s, and a hard timeout (8m unless --timeout). Also on when CI=true.
    #[arg(long)]
    ci: bool,
    /// Give up after this long, e.g. 5m (default: 8m with --ci, none otherwise).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// Use the cluster of this kubeconfig (fails if it does not answer).
    #[arg(long, value_name = "FILE", conflicts_with = "embedded")]
    kubeconfig: Option<PathBuf>,
    /// Use the embedded control plane even when KUBECONFIG is set.
    #[arg(long)]
    embedded: bool,
    /// The switchyard binary to run as the operator (default: `switchyard` next to this
    /// executable).
    #[arg(long, value_name = "PATH", env = "SWITCHYARD_DEMO_OPERATOR")]
    operator: Option<PathBuf>,
    /// The example to migrate.
    #[arg(long, value_name = "DIR",
          default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/crm-unification"))]
    example: PathBuf,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    switchyard::api::parse_duration(text).map_err(|e| e.to_string())
}

fn ci_from_env() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn main() -> ExitCode {
    let args = Args::parse();
    // rustls with ring is the one TLS provider compiled in (as for kubectl-wave).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("switchyard-demo: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Servers are started from the future block_on polls on this, the main, thread: their
    // processes are bound to the thread that started them, and this one lives longest.
    runtime.block_on(demo(args))
}

enum Ended {
    Finished(Box<Result<Finish, (DemoError, Option<Finish>)>>),
    Interrupted,
    TimedOut(Duration),
}

async fn demo(args: Args) -> ExitCode {
    let started = Instant::now();
    let ci = args.ci || ci_from_env();
    let mode = if !ci && std::io::stdout().is_terminal() {
        Mode::Live
    } else {
        Mode::Log
    };
    let timeout = args.timeout.or(ci.then_some(CI_TIMEOUT));
    let mut env = Environment::new(Screen::new(mode, started));
    let ended = {
        let run = run(&args, &mut env, started, timeout);
        let deadline = async {
            match timeout {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = run => Ended::Finished(Box::new(result)),
            _ = tokio::signal::ctrl_c() => Ended::Interrupted,
            () = deadline => Ended::TimedOut(timeout.unwrap_or_default()),
        }
    };
    env.screen.stop_drawing();
    let code = match ended {
        Ended::Finished(result) => match *result {
            Ok(finish) => {
                print_summary(&mut env.screen, &finish, started);
                let failure = finish.failure();
                env.cleanup(failure.is_some()).await;
                match failure {
                    None => {
                        env.screen.say_in(
                        Tone::Good,
                        &format!(
                            "Demo complete in {}: {VICTIM} rolled back by itself on its failed hand-offs, was retried, and all six waves completed.",
                            since(started)
                        ),
                    );
                        ExitCode::SUCCESS
                    }
                    Some(reason) => {
                        eprintln!("switchyard-demo: {reason}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err((err, finish)) => {
                if let Some(finish) = &finish {
                    print_summary(&mut env.screen, finish, started);
                }
                for line in details(&err) {
                    env.screen.say_in(Tone::Dim, &format!("  {line}"));
                }
                if let DemoError::OperatorExited { log, .. }
                | DemoError::OperatorNotReady { log, .. } = &err
                {
                    env.screen.say_in(
                        Tone::Dim,
                        &format!("the end of the operator's log ({}):", log.display()),
                    );
                    for line in env::log_tail(log, 15) {
                        env.screen.say_in(Tone::Dim, &format!("  {line}"));
                    }
                }
                env.cleanup(true).await;
                eprintln!("switchyard-demo: {}", one_line(&err));
                ExitCode::FAILURE
            }
        },
        Ended::Interrupted => {
            env.screen.say("");
            env.screen.say_in(Tone::Warn, "Ctrl-C: stopping the demo.");
            env.cleanup(false).await;
            ExitCode::from(130)
        }
        Ended::TimedOut(limit) => {
            if let Some(view) = env.screen.latest_view.clone() {
                env.screen.say("The plan when the time ran out:");
                env.screen.say(&view);
            }
            let waiting = env.screen.waiting_for.clone();
            env.cleanup(true).await;
            eprintln!(
                "switchyard-demo: the demo did not finish within {} (--timeout); it was waiting for {waiting}",
                rewrite::go_duration(limit)
            );
            ExitCode::FAILURE
        }
    };
    let _ = std::io::stdout().flush();
    code
}

async fn run(
    args: &Args,
    env: &mut Environment,
    started: Instant,
    timeout: Option<Duration>,
) -> Result<Finish, (DemoError, Option<Finish>)> {
    let ctx = setup(args, env, started, timeout)
        .await
        .map_err(|err| (err, None))?;
    let (Some(prometheus), Some(exporter), Some(operator)) = (
        env.prometheus.as_ref(),
        env.exporter.clone(),
        env.operator.as_mut(),
    ) else {
        return Err((
            DemoError::Stalled("the monitoring or the operator did not start".into()),
            None,
        ));
    };
    let parts = Parts {
        screen: &mut env.screen,
        prometheus,
        exporter,
        incident_task: &mut env.incident,
        operator,
        traffic: env.traffic.as_mut(),
    };
    let result = Director::new(ctx, parts).run().await;
    let Some(traffic) = env.traffic.as_ref() else {
        return result.map_err(|(err, finish)| (err, Some(finish)));
    };
    match result {
        Ok(mut finish) => {
            let on_target = traffic.wait_all_on_target(ON_TARGET_WAIT).await;
            finish.traffic = Some(Report::new(traffic, on_target, director::VICTIM));
            Ok(finish)
        }
        Err((err, mut finish)) => {
            let unfinished = Err("the demo stopped before every wave completed".to_owned());
            finish.traffic = Some(Report::new(traffic, unfinished, director::VICTIM));
            Err((err, Some(finish)))
        }
    }
}

/// Where the demo runs, once connected.
struct Cluster {
    client: Client,
    embedded: bool,
    /// `KUBECONFIG` for the operator (None: it inherits the demo's).
    kubeconfig_env: Option<PathBuf>,
    /// `--kubeconfig` for `kubectl wave` (None: its default).
    plugin_kubeconfig: Option<PathBuf>,
    gateway_api: bool,
    role_bindings: bool,
    namespace: String,
}

async fn setup(
    args: &Args,
    env: &mut Environment,
    started: Instant,
    timeout: Option<Duration>,
) -> Result<Context, DemoError> {
    let scale = Scale::new(args.time_scale);
    let mut milestones: Vec<(String, String)> = Vec::new();
    let mut milestone =
        |what: &str| milestones.push((format!("+{}", since(started)), what.to_owned()));
    let day = 86_400.0 / scale.factor() as f64;
    env.screen.say_in(
        Tone::Bold,
        &format!(
            "Switchyard demo: {} (six cohorts, one CutoverPlan), every duration ÷{} (one day = {day:.1}s).",
            display_path(&args.example),
            scale.factor()
        ),
    );
    env.screen.say(
        "It runs a control plane, a synthetic metrics source, Prometheus, Alertmanager and the operator; acts as the \
         release manager with kubectl wave; breaks sales-emea's hand-offs at 25% to show an automatic rollback; \
         fixes them and retries. Ctrl-C stops it and cleans up.",
    );

    let example = Example::load(&args.example)?;
    let backends = gateway::Backends::of(&example)?;
    let mut data_plane = None;
    let (rules, rules_note) = match example.scaled_alert_rules(scale)? {
        Some((rules, note)) => (rules, note),
        None => (
            String::new(),
            "no alert rules in the example's README.md: Prometheus sends no alerts".into(),
        ),
    };
    let operator_binary = match &args.operator {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|source| DemoError::Io {
                what: "cannot find this executable",
                path: PathBuf::from("/proc/self/exe"),
                source,
            })?
            .parent()
            .map(|dir| dir.join("switchyard"))
            .unwrap_or_else(|| PathBuf::from("switchyard")),
    };
    if !operator_binary.is_file() {
        return Err(DemoError::OperatorMissing {
            path: operator_binary,
        });
    }

    let workdir = tempfile::Builder::new()
        .prefix("switchyard-demo-")
        .tempdir()
        .map_err(|source| DemoError::Io {
            what: "cannot create a directory in",
            path: std::env::temp_dir(),
            source,
        })?
        .keep();
    env.workdir = Some(workdir.clone());
    let log = workdir.join("operator.log");
    let token = format!("{:032x}", rand::random::<u128>());
    let token_file = workdir.join("receiver-token");
    write_private(&token_file, &token)?;
    let http_addr = std::net::SocketAddr::from(([127, 0, 0, 1], env::free_port()?));
    let receiver_url = format!("http://{http_addr}{}", switchyard::alerts::receiver::PATH);

    // The cluster: the embedded control plane starts on its own thread while the
    // monitoring starts here.
    let choice = env::choose(args.embedded, args.kubeconfig.as_deref());
    let mut external = None;
    let mut note = None;
    match &choice {
        Choice::Embedded => {}
        Choice::Kubeconfig(_) => external = Some(env::external_client(&choice).await?),
        Choice::Env(value) => match env::external_client(&choice).await {
            Ok(client) => external = Some(client),
            Err(err) => {
                note = Some(format!(
                    "KUBECONFIG={value} is set, but {}: using the embedded control plane instead",
                    one_line(&err)
                ));
            }
        },
    }
    let plane = external.is_none().then(|| env.start_plane());
    env.screen.say_in(Tone::Bold, "Starting:");
    if let Some(note) = note {
        env.screen.say_in(Tone::Warn, &format!("  {note}"));
    }
    if plane.is_some() {
        env.screen.say(&format!(
            "  control plane     etcd and kube-apiserver {KUBE_VERSION} (embedded; starting in the background)"
        ));
    }
    env::start_monitoring(env, &example.cohorts(), &rules, &receiver_url, &token).await?;
    env.screen.say(&format!("  alert rules       {rules_note}"));

    let cluster = match plane {
        Some(plane) => {
            let plane = plane
                .await
                .map_err(|_| DemoError::Stalled("the control plane's thread stopped".into()))?
                .map_err(|source| DemoError::TestEnv {
                    what: "cannot start the embedded control plane",
                    source,
                })?;
            env.screen.say(&format!(
                "  control plane     ready at {} (+{}); kubeconfig {}",
                plane.server_url(),
                since(started),
                plane.kubeconfig_path().display()
            ));
            let kubeconfig = plane.kubeconfig_path().to_owned();
            let client = plane.client().await.map_err(|source| DemoError::TestEnv {
                what: "cannot connect to the embedded control plane",
                source,
            })?;
            env.plane = Some(plane);
            let mut crds: Vec<_> = switchyard::crdgen::all()
                .map_err(|err| DemoError::Stalled(format!("cannot generate the CRDs: {err}")))?
                .into_iter()
                .map(|generated| generated.crd)
                .collect();
            let own = crds.len();
            let gateway = tokio::task::spawn_blocking(switchyard_testenv::gateway_api_crds)
                .await
                .map_err(|err| DemoError::Stalled(format!("reading the Gateway API CRDs: {err}")))?
                .map_err(|source| DemoError::TestEnv {
                    what: "cannot get the Gateway API CRDs",
                    source,
                })?;
            let gateway_count = gateway.len();
            crds.extend(gateway);
            if let Some(plane) = &env.plane {
                plane
                    .install_crds(&crds)
                    .await
                    .map_err(|source| DemoError::TestEnv {
                        what: "cannot install the CRDs",
                        source,
                    })?;
            }
            env.screen.say(&format!(
                "  CRDs              Switchyard's {own} and the Gateway API's {gateway_count} (standard channel, {GATEWAY_API_VERSION})"
            ));
            let policies = env::install_policies(&client).await?;
            env.screen.say(&format!("  installed         {policies}"));
            milestone("control plane ready");
            match (gateway::unavailable(true), &env.plane) {
                (None, Some(plane)) => {
                    let started_at = Instant::now();
                    let plane = gateway::start(plane, &backends).await?;
                    let (netns, addr) = plane.netns();
                    env.screen.say(&format!(
                        "  data plane        Traefik on {} for Host {}, Gateway {} and base route {} to {}, in namespace {}; \
                         echo backends {} at {addr} (network namespace {netns}), ready in {:.1}s",
                        plane.gateway_addr(),
                        plane.hostname(),
                        switchyard_testenv::GATEWAY,
                        switchyard_testenv::BASE_ROUTE,
                        backends.legacy,
                        plane.namespace(),
                        plane.backend_addrs().keys().cloned().collect::<Vec<_>>().join(", "),
                        started_at.elapsed().as_secs_f64()
                    ));
                    milestone("data plane ready");
                    data_plane = Some(plane);
                }
                (why, _) => env.screen.say_in(
                    Tone::Warn,
                    &format!(
                        "  traffic           {}",
                        why.unwrap_or("no traffic: no control plane")
                    ),
                ),
            }
            Cluster {
                client,
                embedded: true,
                kubeconfig_env: Some(kubeconfig.clone()),
                plugin_kubeconfig: Some(kubeconfig),
                gateway_api: true,
                role_bindings: true,
                // The data plane's Traefik watches only the namespace it made.
                namespace: match &data_plane {
                    Some(plane) => plane.namespace().to_owned(),
                    None => example
                        .documents
                        .iter()
                        .find(|d| d.kind() == "Namespace")
                        .map_or("crm".to_owned(), |d| d.name().to_owned()),
                },
            }
        }
        None => {
            let (client, url) = external.ok_or_else(|| {
                DemoError::Stalled("no cluster: neither embedded nor external".into())
            })?;
            let source = match &choice {
                Choice::Kubeconfig(path) => format!("--kubeconfig {}", path.display()),
                _ => "KUBECONFIG".into(),
            };
            env.screen
                .say(&format!("  cluster           {url} (from {source})"));
            let crds: Vec<_> = switchyard::crdgen::all()
                .map_err(|err| DemoError::Stalled(format!("cannot generate the CRDs: {err}")))?
                .into_iter()
                .map(|generated| generated.crd)
                .collect();
            let installed = env::install_missing_crds(&client, crds).await?;
            env.screen.say(&if installed.is_empty() {
                "  CRDs              Switchyard's CRDs are already installed: left as they are"
                    .into()
            } else {
                format!(
                    "  CRDs              installed {} (server-side apply)",
                    installed.join(", ")
                )
            });
            let gateway_api = env::gateway_api_installed(&client).await?;
            let role_bindings = env::release_manager_role_exists(&client).await?;
            env.screen.say_in(
                Tone::Warn,
                "  admission policies  not installed on your cluster (they are cluster-wide): approvals and gate passes \
                 are checked only if you installed them (kubectl apply -f policies/)",
            );
            if let Some(why) = gateway::unavailable(false) {
                env.screen
                    .say_in(Tone::Warn, &format!("  traffic           {why}"));
            }
            let namespace = format!("switchyard-demo-{:08x}", rand::random::<u32>());
            let (kubeconfig_env, plugin_kubeconfig) = match &choice {
                Choice::Kubeconfig(path) => (Some(path.clone()), Some(path.clone())),
                _ => (None, None),
            };
            milestone("cluster connected");
            Cluster {
                client,
                embedded: false,
                kubeconfig_env,
                plugin_kubeconfig,
                gateway_api,
                role_bindings,
                namespace,
            }
        }
    };

    let me = commands::whoami(&cluster.client)
        .await
        .map_err(|source| DemoError::Plugin {
            command: "whoami".into(),
            source,
        })?
        .user;
    let rewritten = example.rewrite(&Settings {
        scale,
        namespace: cluster.namespace.clone(),
        me: me.clone(),
        gateway_api: cluster.gateway_api,
        role_bindings: cluster.role_bindings,
        data_plane_gateway: data_plane
            .as_ref()
            .map(|_| switchyard_testenv::GATEWAY.to_owned()),
        now: Timestamp::now(),
        horizon: timeout.unwrap_or(FREEZE_HORIZON),
    })?;
    env.screen.say_in(
        Tone::Bold,
        &format!(
            "Rewriting {} for the demo (--time-scale {}), as {me}:",
            display_path(&args.example),
            scale.factor()
        ),
    );
    for line in &rewritten.notes {
        env.screen.say(&format!("  {line}"));
    }
    if let Some(plane) = data_plane {
        let cohorts = traffic::cohorts(&rewritten.waves, &backends);
        let traffic = Traffic::start(plane, backends.clone(), cohorts);
        env.screen.say_in(Tone::Bold, "Traffic:");
        env.screen.say(&format!("  {}", traffic.describe()));
        env.traffic = Some(traffic);
    }

    // Every query answers before the plan exists, so that the first evaluation is healthy
    // rather than NoData (rate() and increase() need two scrapes).
    let queries = queries(&rewritten.plan, &rewritten.waves, &cluster.namespace);
    if let Some(prometheus) = &env.prometheus {
        for query in &queries {
            prometheus
                .wait_for_value(query, f64::is_finite, DATA_WAIT)
                .await
                .map_err(|source| DemoError::TestEnv {
                    what: "Prometheus has no data for a query of the plan",
                    source,
                })?;
        }
        env.screen.say(&format!(
            "  Prometheus answers all {} gate and analysis queries (+{})",
            queries.len(),
            since(started)
        ));
    }
    milestone("metrics flowing");

    let settings = OperatorSettings {
        namespace: cluster.namespace.clone(),
        http_addr,
        prometheus_url: env.prometheus.as_ref().map(|p| p.url()).unwrap_or_default(),
        token_file,
    };
    let operator_args = env::operator_args(&settings);
    env.screen.say_in(Tone::Bold, "Operator:");
    env.screen.say(&format!(
        "  {} {}",
        operator_binary.display(),
        operator_args.join(" ")
    ));
    env.screen.say(&format!("  its log: {}", log.display()));
    let operator = Operator::start(
        &operator_binary,
        &operator_args,
        cluster.kubeconfig_env.as_deref(),
        &log,
        &format!("http://{http_addr}/readyz"),
    )
    .await?;
    env.screen.say(&format!(
        "  ready: pid {}, health and the Alertmanager receiver on {http_addr} (+{})",
        operator.pid,
        since(started)
    ));
    env.operator = Some(operator);
    milestone("operator ready");

    let mut applied: Vec<String> = Vec::new();
    for document in &rewritten.documents {
        let namespaced = document.kind() != "Namespace";
        env::apply(
            &cluster.client,
            namespaced.then_some(cluster.namespace.as_str()),
            &document.value,
        )
        .await
        .map_err(DemoError::kube(format!(
            "the API server refused {} {} ({})",
            document.kind(),
            document.name(),
            document.file
        )))?;
        if !namespaced && !cluster.embedded {
            env.cluster_namespace = Some((cluster.client.clone(), cluster.namespace.clone()));
        }
        applied.push(format!("{} {}", document.kind(), document.name()));
    }
    env.screen.say_in(
        Tone::Bold,
        &format!(
            "Applied {} to namespace {} ({} objects, server-side apply):",
            display_path(&args.example),
            cluster.namespace,
            applied.len()
        ),
    );
    env.screen.say(&format!("  {}", applied.join(", ")));
    milestone("example applied");
    let plan_name = rewritten
        .plan
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "crm-unification".into());
    if cluster.embedded {
        let gate = rewritten
            .plan
            .spec
            .readiness_gates
            .iter()
            .find(|g| g.manual.is_some())
            .map(|g| g.name.clone())
            .unwrap_or_default();
        let refusal =
            check_policies(&cluster.client, &cluster.namespace, &plan_name, &gate, &me).await?;
        env.screen.say(&format!(
            "  admission policies enforced: a gate pass recorded as someone else is refused: \"{refusal}\""
        ));
    }
    env.screen.say_in(
        Tone::Bold,
        &format!(
            "Watching: kubectl wave plan {plan_name} -n {} --watch{}",
            cluster.namespace,
            match &cluster.plugin_kubeconfig {
                Some(path) => format!(" --kubeconfig {}", path.display()),
                None => String::new(),
            }
        ),
    );
    Ok(Context {
        client: cluster.client,
        namespace: cluster.namespace.clone(),
        plan: plan_name.clone(),
        me,
        plugin_kubeconfig: cluster.plugin_kubeconfig,
        header: format!(
            "switchyard demo · kubectl wave plan {plan_name} -n {} · time ÷{}",
            cluster.namespace,
            scale.factor()
        ),
        plan_spec: rewritten.plan,
        waves_spec: rewritten.waves,
        started,
        milestones,
    })
}

/// Every query the operator will send: the Prometheus gates, and each wave's analysis.
fn queries(
    plan: &CutoverPlan,
    waves: &[switchyard::api::MigrationWave],
    namespace: &str,
) -> Vec<String> {
    let mut queries: Vec<String> = plan
        .spec
        .readiness_gates
        .iter()
        .filter_map(|g| g.prometheus.as_ref().map(|p| p.query.clone()))
        .collect();
    for wave in waves {
        let name = wave.metadata.name.clone().unwrap_or_default();
        let Ok(effective) =
            analysis::effective(plan.spec.analysis.as_ref(), wave.spec.analysis.as_ref())
        else {
            continue;
        };
        let values = template::wave_values(&wave.spec.cohort, &name, namespace);
        for metric in effective.metrics {
            if let Ok(query) = template::render(&metric.metric.query, &values)
                && !queries.contains(&query)
            {
                queries.push(query);
            }
        }
    }
    queries
}

/// Shows that the admission policies are live (and waits until they are): a dry-run gate
/// pass recorded as someone other than the requester must be refused. Returns the
/// policy's message.
async fn check_policies(
    client: &Client,
    namespace: &str,
    plan: &str,
    gate: &str,
    me: &str,
) -> Result<String, DemoError> {
    let api: Api<CutoverPlan> = Api::namespaced(client.clone(), namespace);
    let someone = if me == "someone-else" {
        "another-user"
    } else {
        "someone-else"
    };
    let entry = json!({"type": "PassGate", "gate": gate, "user": someone, "message": "not me"});
    let patch: Patch<()> = Patch::Json(
        serde_json::from_value(json!([{"op": "add", "path": "/spec/actions", "value": [entry]}]))
            .map_err(|err| DemoError::Stalled(format!("building a JSON patch: {err}")))?,
    );
    let params = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = match api.patch(plan, &params, &patch).await {
            Err(kube::Error::Api(status))
                if status.message.contains("ValidatingAdmissionPolicy") =>
            {
                return Ok(status
                    .message
                    .split_once("denied request: ")
                    .map_or(status.message.as_str(), |(_, rest)| rest)
                    .trim()
                    .to_owned());
            }
            Ok(_) => "the dry run was accepted".to_owned(),
            Err(err) => err.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(DemoError::Stalled(format!(
                "the admission policies were not enforced within 20s ({last})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), DemoError> {
    let io = |source| DemoError::Io {
        what: "cannot write",
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}

/// A path relative to the current directory when it is under it.
fn display_path(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_owned))
        .unwrap_or(path)
        .display()
        .to_string()
}
