//! Whether Switchyard's admission policies are in force, watched for as long as the
//! operator runs.
//!
//! The identity recorded in an action (user, groups, plan UID) is believable only if
//! the policies checked it when it was recorded. Without them, anyone with `patch` could
//! write any name. So the operator watches the policies and bindings it ships, compares
//! them with its own (`policies::verify`), and while they are missing or altered it
//! refuses every human action, says so on `/readyz`, and sets the plans'
//! `AdmissionPolicies` condition. Automatic rollbacks (metrics, alerts) go on regardless.

use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, reflector, watcher},
};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::engine::authority::Admission;

/// The label Switchyard's policies and bindings carry.
const SELECTOR: &str = "app.kubernetes.io/part-of=switchyard";

/// The current [`Admission`] and its changes. Cheap to share.
#[derive(Debug)]
pub struct AdmissionGuard {
    state: watch::Sender<Admission>,
    watching: bool,
}

impl Default for AdmissionGuard {
    /// A guard that checks the cluster (once the controllers run).
    fn default() -> Self {
        Self::checking()
    }
}

impl AdmissionGuard {
    /// A guard that watches the cluster's policies; actions wait until the first check.
    pub fn checking() -> Self {
        Self {
            state: watch::Sender::new(Admission::Unknown),
            watching: true,
        }
    }

    /// A guard that believes recorded identities without the policies
    /// (`--trust-actions-without-admission-policies`).
    pub fn trusting() -> Self {
        Self::fixed(Admission::Trusted)
    }

    /// A guard that stays in `state` and watches nothing (for tests of what each state
    /// does).
    pub fn fixed(state: Admission) -> Self {
        Self {
            state: watch::Sender::new(state),
            watching: false,
        }
    }

    /// The state now.
    pub fn current(&self) -> Admission {
        self.state.borrow().clone()
    }

    /// One item each time the state changes.
    pub fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        let mut receiver = self.state.subscribe();
        receiver.mark_unchanged();
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.changed().await.ok().map(|()| ((), receiver))
        })
    }

    fn set(&self, next: Admission) {
        self.state.send_if_modified(|state| {
            if *state == next {
                return false;
            }
            match &next {
                Admission::Missing { message } => {
                    warn!(%message, "admission policies not in force: human actions are refused")
                }
                Admission::Verified => info!("admission policies in force"),
                _ => {}
            }
            *state = next;
            true
        });
    }

    /// Watches the policies and bindings until the stream ends (never, unless the
    /// client goes away). A fixed guard has nothing to watch.
    pub async fn watch(self: Arc<Self>, client: Client) {
        if !self.watching {
            return;
        }
        let config = watcher::Config::default().labels(SELECTOR);
        let (policies, policy_writer) = reflector::store();
        let (bindings, binding_writer) = reflector::store();
        let policy_events = reflector::reflector(
            policy_writer,
            watcher(
                Api::<ValidatingAdmissionPolicy>::all(client.clone()),
                config.clone(),
            ),
        )
        .default_backoff()
        .map(|event| (0usize, event.map(|_| ())))
        .boxed();
        let binding_events = reflector::reflector(
            binding_writer,
            watcher(Api::<ValidatingAdmissionPolicyBinding>::all(client), config),
        )
        .default_backoff()
        .map(|event| (1usize, event.map(|_| ())))
        .boxed();
        let mut events = futures::stream::select(policy_events, binding_events);
        let mut listed = [false, false];
        while let Some((which, event)) = events.next().await {
            match event {
                Ok(()) => {
                    listed[which] = listed[which] || stores_ready(&policies, &bindings, which);
                    if listed == [true, true] {
                        let policies: Vec<_> =
                            policies.state().iter().map(|p| (**p).clone()).collect();
                        let bindings: Vec<_> =
                            bindings.state().iter().map(|b| (**b).clone()).collect();
                        self.set(match crate::policies::verify(&policies, &bindings) {
                            Ok(()) => Admission::Verified,
                            Err(message) => Admission::Missing { message },
                        });
                    }
                }
                // Once both lists are in, the stores keep the last state while the
                // watch retries; before that, the operator cannot vouch for anything.
                Err(err) if !listed[which] => self.set(Admission::Missing {
                    message: format!("cannot read the admission policies: {err}"),
                }),
                Err(err) => warn!(error = %err, "watching the admission policies failed; retrying"),
            }
        }
    }
}

/// Whether the store that just changed holds a complete list.
fn stores_ready(
    policies: &reflector::Store<ValidatingAdmissionPolicy>,
    bindings: &reflector::Store<ValidatingAdmissionPolicyBinding>,
    which: usize,
) -> bool {
    // A reflector's store is ready once its first complete list is in.
    let ready = |ready: Option<()>| ready.is_some();
    match which {
        0 => ready(
            policies
                .wait_until_ready()
                .now_or_never()
                .and_then(Result::ok),
        ),
        _ => ready(
            bindings
                .wait_until_ready()
                .now_or_never()
                .and_then(Result::ok),
        ),
    }
}
