//! The commands of `kubectl wave`, against the API server of the caller's kubeconfig.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::{
    Api, Client, Config,
    api::{ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, watcher},
};
use serde::Serialize;

use super::act::{self, ActionError, Recorded, WaveCommand};
use super::{Style, view};
use crate::api::{CutoverPlan, MigrationWave};

/// `kubectl wave`: watch and act on Switchyard's migration waves and plans.
#[derive(Debug, clap::Parser)]
#[command(
    name = "kubectl-wave",
    bin_name = "kubectl wave",
    version,
    about = "Watch and act on Switchyard migration waves and cutover plans",
    long_about = "Watch and act on Switchyard migration waves and cutover plans.\n\n\
        Every action (approve, pause, resume, rollback, retry, gate pass) is recorded in \
        the object's spec.actions under your identity, as the API server knows it; the \
        cluster's admission policies check that you may take it."
)]
pub struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then
    /// in-cluster).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// List across all namespaces (`list` only).
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Output format: text for people, json or yaml for programs.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Readable text (colored on a terminal).
    Text,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The plans and their waves, one line each: cohort, phase, step, weight, and what
    /// each waits for.
    List,
    /// One wave: its steps, weight, dual-access countdown, metrics, pending approval
    /// and latest history.
    Get {
        /// The MigrationWave.
        wave: String,
        /// Redraw whenever the wave or its plan changes (from a watch, not polling).
        #[arg(short, long)]
        watch: bool,
    },
    /// One plan as a tree: gates, freeze windows, and waves in their order.
    Plan {
        /// The CutoverPlan.
        plan: String,
        /// Redraw whenever the plan or one of its waves changes.
        #[arg(short, long)]
        watch: bool,
    },
    /// Approve the approval step the wave waits at.
    Approve {
        /// The MigrationWave.
        wave: String,
        /// The index of the approval step (default: the step the wave is at).
        #[arg(long)]
        step: Option<i32>,
        /// A note kept in the wave's history, e.g. a change ticket.
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Hold the wave at its current step.
    Pause {
        /// The MigrationWave.
        wave: String,
        /// Why, kept in the wave's history.
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Continue a paused wave.
    Resume {
        /// The MigrationWave.
        wave: String,
        /// Why, kept in the wave's history.
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Send the wave's cohort back to legacy, at once.
    Rollback {
        /// The MigrationWave.
        wave: String,
        /// Why, kept in the wave's history.
        #[arg(short, long, visible_short_alias = 'm', visible_alias = "message")]
        reason: Option<String>,
    },
    /// Start a rolled-back wave again from its first step.
    Retry {
        /// The MigrationWave.
        wave: String,
        /// Why, kept in the wave's history.
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Readiness gates of a plan.
    Gate {
        /// What to do with the gate.
        #[command(subcommand)]
        command: GateCommand,
    },
    /// Who the API server says you are: the name your actions are recorded under.
    Whoami,
}

/// `kubectl wave gate ...`
#[derive(Debug, clap::Subcommand)]
pub enum GateCommand {
    /// Pass a manual readiness gate.
    Pass {
        /// The CutoverPlan.
        plan: String,
        /// The manual gate.
        gate: String,
        /// A note kept in the plan's history, e.g. the rehearsal report.
        #[arg(short, long)]
        message: Option<String>,
    },
}

/// Why a command failed. Each is shown as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The kubeconfig could not be read.
    #[error("cannot use the kubeconfig: {0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    /// No kubeconfig and not in a cluster.
    #[error("cannot find cluster credentials: {0}")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built.
    #[error("cannot reach the cluster: {0}")]
    Client(#[source] kube::Error),
    /// The object does not exist.
    #[error("no {kind} {name:?} in namespace {namespace:?}")]
    NotFound {
        /// `MigrationWave` or `CutoverPlan`.
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// The namespace looked in.
        namespace: String,
    },
    /// The action does not apply to the object's state.
    #[error(transparent)]
    Action(#[from] ActionError),
    /// RBAC does not let the caller do this.
    #[error("not permitted: {user} may not {verb} {resource} in namespace {namespace:?}{hint}")]
    NotPermitted {
        /// The caller.
        user: String,
        /// The verb that is missing.
        verb: &'static str,
        /// The resource, with its group.
        resource: &'static str,
        /// The namespace.
        namespace: String,
        /// Which role grants it.
        hint: &'static str,
    },
    /// Admission refused the change; the message is the policy's.
    #[error("the API server refused the change: {0}")]
    Refused(String),
    /// SelfSubjectReview failed.
    #[error("cannot find out who you are (SelfSubjectReview): {0}")]
    Identity(#[source] kube::Error),
    /// Any other API error.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// The watch ended with an error.
    #[error("the watch failed: {0}")]
    Watch(#[source] watcher::Error),
    /// The object kept changing while the action was recorded.
    #[error("{kind} {name} kept changing while the action was being recorded; try again")]
    Contended {
        /// The kind.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A flag that does not apply.
    #[error("{0}")]
    Usage(&'static str),
    /// Output could not be written.
    #[error("cannot write the output: {0}")]
    Output(String),
}

const WAVES: &str = "migrationwaves.switchyard.dev";
const PLANS: &str = "cutoverplans.switchyard.dev";
const ACT_HINT: &str = " (the switchyard-release-manager role grants it)";
const READ_HINT: &str = " (the switchyard-viewer role grants it)";

/// Runs the command line; what it prints goes to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    let config = load_config(&cli).await?;
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(CliError::Client)?;
    let style = Style::for_terminal(std::io::stdout().is_terminal());
    let ctx = Ctx {
        client,
        namespace,
        output: cli.output,
        style,
    };
    if cli.all_namespaces && !matches!(cli.command, Command::List) {
        return Err(CliError::Usage("-A/--all-namespaces works only with list"));
    }
    match cli.command {
        Command::List => ctx.list(cli.all_namespaces, out).await,
        Command::Get { wave, watch } => ctx.get(&wave, watch, out).await,
        Command::Plan { plan, watch } => ctx.plan(&plan, watch, out).await,
        Command::Approve {
            wave,
            step,
            message,
        } => {
            ctx.act(&wave, WaveCommand::Approve { step, message }, out)
                .await
        }
        Command::Pause { wave, message } => {
            ctx.act(&wave, WaveCommand::Pause { message }, out).await
        }
        Command::Resume { wave, message } => {
            ctx.act(&wave, WaveCommand::Resume { message }, out).await
        }
        Command::Rollback { wave, reason } => {
            ctx.act(&wave, WaveCommand::Rollback { reason }, out).await
        }
        Command::Retry { wave, message } => {
            ctx.act(&wave, WaveCommand::Retry { message }, out).await
        }
        Command::Gate {
            command:
                GateCommand::Pass {
                    plan,
                    gate,
                    message,
                },
        } => ctx.pass_gate(&plan, &gate, message, out).await,
        Command::Whoami => {
            let who = whoami(&ctx.client).await?;
            ctx.emit(
                out,
                &serde_json::json!({ "username": who.user, "groups": who.groups }),
                || format!("{}\n", who.user),
            )
        }
    }
}

async fn load_config(cli: &Cli) -> Result<Config, CliError> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        cluster: None,
        user: None,
    };
    match (&cli.kubeconfig, &cli.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(CliError::Kubeconfig)?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(CliError::Kubeconfig)
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(CliError::Kubeconfig),
        (None, None) => Config::infer().await.map_err(CliError::Infer),
    }
}

/// The caller's username and groups, as the API server authenticates them.
pub async fn whoami(client: &Client) -> Result<act::Identity, CliError> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(CliError::Identity)?;
    let info = review.status.and_then(|s| s.user_info).unwrap_or_default();
    let user = info.username.ok_or_else(|| {
        CliError::Identity(kube::Error::Service(
            "the SelfSubjectReview came back without a username".into(),
        ))
    })?;
    Ok(act::Identity {
        user,
        groups: info.groups.unwrap_or_default(),
    })
}

struct Ctx {
    client: Client,
    namespace: String,
    output: Output,
    style: Style,
}

impl Ctx {
    fn emit<T: Serialize>(
        &self,
        out: &mut dyn Write,
        value: &T,
        text: impl FnOnce() -> String,
    ) -> Result<(), CliError> {
        let rendered = match self.output {
            Output::Text => text(),
            Output::Json => {
                let mut s = serde_json::to_string_pretty(value)
                    .map_err(|e| CliError::Output(e.to_string()))?;
                s.push('\n');
                s
            }
            Output::Yaml => {
                serde_yaml::to_string(value).map_err(|e| CliError::Output(e.to_string()))?
            }
        };
        out.write_all(rendered.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| CliError::Output(e.to_string()))
    }

    fn waves(&self) -> Api<MigrationWave> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn plans(&self) -> Api<CutoverPlan> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Maps an API error on a read to a one-line error.
    fn read_error(&self, what: String, resource: &'static str, source: kube::Error) -> CliError {
        match &source {
            kube::Error::Api(status) if status.code == 403 => CliError::NotPermitted {
                user: user_in(&status.message).unwrap_or_else(|| "you".into()),
                verb: "read",
                resource,
                namespace: self.namespace.clone(),
                hint: READ_HINT,
            },
            _ => CliError::Api { what, source },
        }
    }

    async fn get_wave(&self, name: &str) -> Result<MigrationWave, CliError> {
        self.waves()
            .get_opt(name)
            .await
            .map_err(|e| self.read_error(format!("cannot read wave {name}"), WAVES, e))?
            .ok_or_else(|| CliError::NotFound {
                kind: "MigrationWave",
                name: name.into(),
                namespace: self.namespace.clone(),
            })
    }

    async fn get_plan(&self, name: &str) -> Result<Option<CutoverPlan>, CliError> {
        self.plans()
            .get_opt(name)
            .await
            .map_err(|e| self.read_error(format!("cannot read plan {name}"), PLANS, e))
    }

    async fn list(&self, all: bool, out: &mut dyn Write) -> Result<(), CliError> {
        let (plans, waves): (Api<CutoverPlan>, Api<MigrationWave>) = if all {
            (Api::all(self.client.clone()), Api::all(self.client.clone()))
        } else {
            (self.plans(), self.waves())
        };
        let params = ListParams::default();
        let plans = plans
            .list(&params)
            .await
            .map_err(|e| self.read_error("cannot list plans".into(), PLANS, e))?;
        let waves = waves
            .list(&params)
            .await
            .map_err(|e| self.read_error("cannot list waves".into(), WAVES, e))?;
        let rows = view::list_rows(&plans.items, &waves.items, jiff::Timestamp::now());
        if rows.is_empty() && self.output == Output::Text && !all {
            return self.emit(out, &rows, || {
                format!("No plans or waves in namespace {}.\n", self.namespace)
            });
        }
        self.emit(out, &rows, || view::list_table(&rows, all, self.style))
    }

    async fn get(&self, name: &str, watch: bool, out: &mut dyn Write) -> Result<(), CliError> {
        let wave = self.get_wave(name).await?;
        let plan = self.get_plan(&wave.spec.plan).await?;
        let render = |wave: &MigrationWave, plan: Option<&CutoverPlan>| {
            view::wave_view(wave, plan, jiff::Timestamp::now(), self.style)
        };
        if !watch {
            return self.emit(out, &wave, || render(&wave, plan.as_ref()));
        }
        let waves = watcher(
            self.waves(),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        );
        let plans = watcher(
            self.plans(),
            watcher::Config::default().fields(&format!("metadata.name={}", wave.spec.plan)),
        );
        let mut state = (wave, plan);
        let mut changes = futures::stream::select(
            waves
                .default_backoff()
                .touched_objects()
                .map_ok(|w| Change::Wave(Box::new(w)))
                .boxed(),
            plans
                .default_backoff()
                .touched_objects()
                .map_ok(|p| Change::Plan(Box::new(p)))
                .boxed(),
        );
        let mut last = String::new();
        self.redraw(out, &mut last, &state.0, || {
            render(&state.0, state.1.as_ref())
        })?;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                change = changes.next() => match change {
                    Some(Ok(Change::Wave(w))) => state.0 = *w,
                    Some(Ok(Change::Plan(p))) => state.1 = Some(*p),
                    Some(Ok(Change::Waves)) => {}
                    Some(Err(err)) => return Err(CliError::Watch(err)),
                    None => return Ok(()),
                },
                // Countdowns move with the clock; only a terminal redraws for them.
                _ = tick.tick(), if self.style.colored() => {}
            }
            self.redraw(out, &mut last, &state.0, || {
                render(&state.0, state.1.as_ref())
            })?;
        }
    }

    async fn plan(&self, name: &str, watch: bool, out: &mut dyn Write) -> Result<(), CliError> {
        let plan = self
            .get_plan(name)
            .await?
            .ok_or_else(|| CliError::NotFound {
                kind: "CutoverPlan",
                name: name.into(),
                namespace: self.namespace.clone(),
            })?;
        let list_waves = || async {
            self.waves()
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .into_iter()
                        .filter(|w| w.spec.plan == name)
                        .collect::<Vec<_>>()
                })
                .map_err(|e| self.read_error("cannot list waves".into(), WAVES, e))
        };
        let waves = list_waves().await?;
        let machine = |plan: &CutoverPlan, waves: &[MigrationWave]| {
            let mut items = vec![serde_json::to_value(plan).unwrap_or_default()];
            items.extend(
                waves
                    .iter()
                    .map(|w| serde_json::to_value(w).unwrap_or_default()),
            );
            serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
        };
        let render = |plan: &CutoverPlan, waves: &[MigrationWave]| {
            view::plan_view(plan, waves, jiff::Timestamp::now(), self.style)
        };
        if !watch {
            return self.emit(out, &machine(&plan, &waves), || render(&plan, &waves));
        }
        let plans = watcher(
            self.plans(),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        );
        let wave_changes = watcher(self.waves(), watcher::Config::default());
        let mut changes = futures::stream::select(
            plans
                .default_backoff()
                .touched_objects()
                .map_ok(|p| Change::Plan(Box::new(p)))
                .boxed(),
            wave_changes
                .default_backoff()
                .map_ok(|_| Change::Waves)
                .boxed(),
        );
        let (mut plan, mut waves) = (plan, waves);
        let mut last = String::new();
        self.redraw(out, &mut last, &machine(&plan, &waves), || {
            render(&plan, &waves)
        })?;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                change = changes.next() => match change {
                    Some(Ok(Change::Plan(p))) => plan = *p,
                    Some(Ok(Change::Waves)) => waves = list_waves().await?,
                    Some(Ok(Change::Wave(_))) => {}
                    Some(Err(err)) => return Err(CliError::Watch(err)),
                    None => return Ok(()),
                },
                _ = tick.tick(), if self.style.colored() => {}
            }
            self.redraw(out, &mut last, &machine(&plan, &waves), || {
                render(&plan, &waves)
            })?;
        }
    }

    /// Prints a new frame when it differs from the last one: on a terminal over the
    /// old one, otherwise after it (a blank line between frames).
    fn redraw<T: Serialize>(
        &self,
        out: &mut dyn Write,
        last: &mut String,
        value: &T,
        text: impl FnOnce() -> String,
    ) -> Result<(), CliError> {
        let frame = match self.output {
            Output::Text => text(),
            Output::Json => {
                let mut s =
                    serde_json::to_string(value).map_err(|e| CliError::Output(e.to_string()))?;
                s.push('\n');
                s
            }
            Output::Yaml => format!(
                "---\n{}",
                serde_yaml::to_string(value).map_err(|e| CliError::Output(e.to_string()))?
            ),
        };
        if frame == *last {
            return Ok(());
        }
        let written = if self.output == Output::Text && self.style.colored() {
            write!(out, "\x1b[H\x1b[2J{frame}")
        } else if self.output == Output::Text && !last.is_empty() {
            write!(out, "\n{frame}")
        } else {
            write!(out, "{frame}")
        };
        written
            .and_then(|()| out.flush())
            .map_err(|e| CliError::Output(e.to_string()))?;
        *last = frame;
        Ok(())
    }

    /// Whether the caller may patch `resource` `name` here; the error names what is missing.
    async fn check_permitted(
        &self,
        user: &str,
        resource: &'static str,
        name: &str,
    ) -> Result<(), CliError> {
        let plural = resource.split('.').next().unwrap_or(resource);
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some("switchyard.dev".into()),
                    resource: Some(plural.into()),
                    verb: Some("patch".into()),
                    namespace: Some(self.namespace.clone()),
                    name: Some(name.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        // If the review itself cannot be made, the write below still finds out.
        let Ok(answer) = Api::<SelfSubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
        else {
            return Ok(());
        };
        if answer.status.is_some_and(|s| s.allowed) {
            Ok(())
        } else {
            Err(self.not_permitted(user, resource))
        }
    }

    fn not_permitted(&self, user: &str, resource: &'static str) -> CliError {
        CliError::NotPermitted {
            user: user.into(),
            verb: "patch",
            resource,
            namespace: self.namespace.clone(),
            hint: ACT_HINT,
        }
    }

    /// Maps the API server's answer to a write.
    fn write_error(&self, user: &str, resource: &'static str, source: kube::Error) -> CliError {
        match &source {
            kube::Error::Api(status) if status.message.contains("ValidatingAdmissionPolicy") => {
                CliError::Refused(policy_message(&status.message))
            }
            kube::Error::Api(status) if status.code == 403 => self.not_permitted(user, resource),
            kube::Error::Api(status) if status.code == 422 || status.code == 400 => {
                CliError::Refused(status.message.clone())
            }
            _ => CliError::Api {
                what: "cannot record the action".into(),
                source,
            },
        }
    }

    async fn act(
        &self,
        name: &str,
        command: WaveCommand,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        let who = whoami(&self.client).await?;
        let user = who.user.clone();
        let wave = self.get_wave(name).await?;
        // An action takes effect only under the plan it was recorded for, so it names
        // the plan's UID; without a plan, nobody can be authorised.
        let plan = self
            .get_plan(&wave.spec.plan)
            .await?
            .ok_or_else(|| CliError::NotFound {
                kind: "CutoverPlan",
                name: wave.spec.plan.clone(),
                namespace: self.namespace.clone(),
            })?;
        let plan_uid = plan.metadata.uid.clone().unwrap_or_default();
        self.check_permitted(&user, WAVES, name).await?;
        let (entry, index) = self
            .append_action(self.waves(), WAVES, name, &user, |wave: &MigrationWave| {
                Ok((
                    act::wave_action(wave, &command, &who, &plan_uid)?,
                    wave.spec.actions.len(),
                ))
            })
            .await?;
        let line = format!(
            "wave/{name}: {} recorded for {user}\n",
            describe(&command, &entry)
        );
        let recorded = Recorded {
            kind: "MigrationWave",
            namespace: self.namespace.clone(),
            name: name.into(),
            action: entry,
            index,
        };
        self.emit(out, &recorded, || line)
    }

    async fn pass_gate(
        &self,
        name: &str,
        gate: &str,
        message: Option<String>,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        let who = whoami(&self.client).await?;
        let user = who.user.clone();
        self.get_plan(name)
            .await?
            .ok_or_else(|| CliError::NotFound {
                kind: "CutoverPlan",
                name: name.into(),
                namespace: self.namespace.clone(),
            })?;
        self.check_permitted(&user, PLANS, name).await?;
        let (entry, index) = self
            .append_action(self.plans(), PLANS, name, &user, |plan: &CutoverPlan| {
                Ok((
                    act::pass_gate(plan, gate, &who, message.clone())?,
                    plan.spec.actions.len(),
                ))
            })
            .await?;
        let recorded = Recorded {
            kind: "CutoverPlan",
            namespace: self.namespace.clone(),
            name: name.into(),
            action: entry,
            index,
        };
        self.emit(out, &recorded, || {
            format!("plan/{name}: gate {gate} passed by {user}\n")
        })
    }

    /// Reads `name`, checks and builds the action with `build` (which also says how many
    /// entries `spec.actions` holds), and appends it, guarded by the resourceVersion
    /// read. When the object changed in between, it starts again from a fresh read (at
    /// most five times). Returns the entry and its index.
    async fn append_action<K, A>(
        &self,
        api: Api<K>,
        resource: &'static str,
        name: &str,
        user: &str,
        build: impl Fn(&K) -> Result<(A, usize), CliError>,
    ) -> Result<(A, usize), CliError>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        A: Serialize,
    {
        let kind = if resource == WAVES {
            "MigrationWave"
        } else {
            "CutoverPlan"
        };
        for _ in 0..5 {
            let object = api
                .get_opt(name)
                .await
                .map_err(|e| self.read_error(format!("cannot read {kind} {name}"), resource, e))?
                .ok_or_else(|| CliError::NotFound {
                    kind,
                    name: name.into(),
                    namespace: self.namespace.clone(),
                })?;
            let (entry, existing) = build(&object)?;
            test_delay_before_write().await;
            let seen = object.meta().resource_version.clone();
            let patch = act::append_patch(&entry, existing, seen.as_deref().unwrap_or_default());
            let patch = Patch::<()>::Json(serde_json::from_value(patch).expect("a JSON patch"));
            match api.patch(name, &PatchParams::default(), &patch).await {
                Ok(_) => return Ok((entry, existing)),
                Err(err) => {
                    if may_be_stale(&err) && changed_since(&api, name, &seen).await {
                        continue;
                    }
                    return Err(self.write_error(user, resource, err));
                }
            }
        }
        Err(CliError::Contended {
            kind,
            name: name.into(),
        })
    }
}

enum Change {
    Wave(Box<MigrationWave>),
    Plan(Box<CutoverPlan>),
    Waves,
}

fn describe(command: &WaveCommand, entry: &crate::api::WaveAction) -> String {
    match command {
        WaveCommand::Approve { .. } => {
            format!("approval of step {}", entry.step.unwrap_or_default())
        }
        WaveCommand::Pause { .. } => "pause".into(),
        WaveCommand::Resume { .. } => "resume".into(),
        WaveCommand::Rollback { .. } => "rollback".into(),
        WaveCommand::Retry { .. } => "retry".into(),
    }
}

/// Debug builds only: waits `SWITCHYARD_TEST_DELAY_WRITE_MS` between reading the object
/// and writing the action, so that a test can change the object in between.
async fn test_delay_before_write() {
    if cfg!(debug_assertions)
        && let Some(ms) = std::env::var("SWITCHYARD_TEST_DELAY_WRITE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// Whether a write may have failed because the object changed since it was read: the
/// patch's resourceVersion `test` failed. The API server answers that with a 422 whose
/// message does not say so ("the server rejected our request due to an error in our
/// request"), so [`changed_since`] decides.
fn may_be_stale(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status)
        if (status.code == 422 || status.code == 409)
            && !status.message.contains("ValidatingAdmissionPolicy"))
}

/// Whether the object's resourceVersion is no longer `seen`.
async fn changed_since<K>(api: &Api<K>, name: &str, seen: &Option<String>) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_metadata_opt(name).await {
        Ok(Some(current)) => current.metadata.resource_version != *seen,
        _ => false,
    }
}

/// The policy's own message, without the API server's prefix naming the policy and
/// binding.
fn policy_message(message: &str) -> String {
    message
        .split_once("denied request: ")
        .map_or(message, |(_, rest)| rest)
        .trim()
        .to_owned()
}

/// The user an RBAC denial names: `User "alice" cannot ...`.
fn user_in(message: &str) -> Option<String> {
    let rest = message.split_once("User \"")?.1;
    Some(rest.split_once('"')?.0.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_denials_keep_the_policys_words() {
        let message = "migrationwaves.switchyard.dev \"w\" is forbidden: ValidatingAdmissionPolicy \
            'switchyard-wave-authority' with binding 'switchyard-wave-authority' denied request: \
            only the approvers of CutoverPlan crm may approve a step (users: alice)";
        assert_eq!(
            policy_message(message),
            "only the approvers of CutoverPlan crm may approve a step (users: alice)"
        );
    }

    #[test]
    fn rbac_denials_name_the_user() {
        let message = "migrationwaves.switchyard.dev \"w\" is forbidden: User \"mallory\" cannot \
            patch resource \"migrationwaves\" in API group \"switchyard.dev\"";
        assert_eq!(user_in(message).as_deref(), Some("mallory"));
    }

    #[test]
    fn flags_parse_like_kubectl() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "kubectl-wave",
            "approve",
            "support-emea",
            "--step",
            "2",
            "-n",
            "crm",
            "-m",
            "ticket 7",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("crm"));
        assert_eq!(cli.output, Output::Json);
        assert!(matches!(
            cli.command,
            Command::Approve { step: Some(2), ref message, .. } if message.as_deref() == Some("ticket 7")
        ));
        assert!(Cli::try_parse_from(["kubectl-wave", "approve"]).is_err());
    }
}
