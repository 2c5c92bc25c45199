//! Leader election: every replica watches, one acts.
//!
//! All replicas run the controllers, so their caches stay warm and a takeover needs no
//! full resync; only the holder of a `coordination.k8s.io/v1` Lease writes. The Lease is
//! acquired and renewed by kube-lease-manager, whose acquire step is a server-side apply:
//! two candidates cannot both win.
//!
//! On top of kube-lease-manager's view, a replica counts itself the leader only until its
//! last renewal (as the API server recorded it, seen through a watch on the Lease) plus
//! the lease duration, minus a safety margin. A replica whose renewals stall (API server
//! unreachable, process paused) therefore stops acting before any other replica may take
//! the Lease, without waiting for kube-lease-manager to notice.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::{FutureExt, Stream, StreamExt, future::BoxFuture};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::{oneshot, watch};
use tracing::{debug, error, info, warn};

/// Where the Lease lives and how this replica appears in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's identity, written as the Lease's holder.
    pub identity: String,
    /// How long a Lease stays valid after its last renewal: the failover time when the
    /// leader dies without releasing it. Whole seconds, at least 2.
    pub duration: Duration,
}

/// The shortest lease duration: kube-lease-manager renews a grace period (at least 1 s)
/// before expiry, and the grace must be shorter than the duration.
pub const MIN_LEASE_DURATION: Duration = Duration::from_secs(2);

impl LeaseSettings {
    fn duration_seconds(&self) -> u64 {
        self.duration.as_secs().max(MIN_LEASE_DURATION.as_secs())
    }

    /// How long before expiry the leader renews: a third of the duration (5 s of 15 s),
    /// which leaves room for retries when a renewal fails.
    fn grace_seconds(&self) -> u64 {
        let duration = self.duration_seconds();
        (duration / 3).clamp(1, duration - 1)
    }

    /// How much earlier than the Lease's expiry the leader stops acting on its own: half
    /// the grace period. It absorbs clock skew between nodes, and it is shorter than the
    /// grace, so that a healthy renewal lands before the leader would stop.
    fn margin(&self) -> Duration {
        Duration::from_millis(self.grace_seconds() * 1000 / 2)
    }
}

/// Whether this replica may write. Cheap to clone; every clone shares one state.
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<Inner>,
}

struct Inner {
    /// False when leader election is off: the replica always acts.
    elected: bool,
    /// kube-lease-manager's view: this replica holds the Lease.
    holder: AtomicBool,
    /// Until when (milliseconds since the Unix epoch) the last renewal keeps this
    /// replica the leader; 0 when the Lease is not ours.
    valid_until_ms: AtomicI64,
    /// The published state, for those who react to changes.
    published: watch::Sender<bool>,
    /// How many times the published state became "leading".
    terms: AtomicU64,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("elected", &self.inner.elected)
            .field("leader", &self.is_leader())
            .finish()
    }
}

impl Default for Leadership {
    /// Without election: the replica always acts.
    fn default() -> Self {
        Self::always()
    }
}

impl Leadership {
    /// No election: this replica is the only one, and always acts.
    pub fn always() -> Self {
        Self::new(false)
    }

    /// Elected: a standby until an [`Election`] wins the Lease.
    pub fn elected() -> Self {
        Self::new(true)
    }

    fn new(elected: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                elected,
                holder: AtomicBool::new(false),
                valid_until_ms: AtomicI64::new(0),
                published: watch::channel(!elected).0,
                terms: AtomicU64::new(0),
            }),
        }
    }

    /// Whether this replica may write now. Checked before every write.
    pub fn is_leader(&self) -> bool {
        !self.inner.elected
            || (self.inner.holder.load(Ordering::Acquire)
                && now_ms() < self.inner.valid_until_ms.load(Ordering::Acquire))
    }

    /// How long this replica may still act: the time to the end of its term, which
    /// already leaves the clock-skew margin before the Lease's expiry. None when leader
    /// election is off (the replica always acts); zero when it does not lead.
    pub fn time_left(&self) -> Option<Duration> {
        if !self.inner.elected {
            return None;
        }
        if !self.inner.holder.load(Ordering::Acquire) {
            return Some(Duration::ZERO);
        }
        let left = self.inner.valid_until_ms.load(Ordering::Acquire) - now_ms();
        Some(Duration::from_millis(u64::try_from(left).unwrap_or(0)))
    }

    /// Whether leader election is on.
    pub fn is_elected(&self) -> bool {
        self.inner.elected
    }

    /// The published state: true while leading. It changes shortly after
    /// [`is_leader`](Self::is_leader) does.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.published.subscribe()
    }

    /// The current leadership term, while the published state is "leading": a number
    /// that changes each time this replica becomes the leader (0 without election).
    /// What was true for one term (such as the set of firing alerts, see
    /// `alerts::rebuild`) must be established again for the next.
    pub fn term(&self) -> Option<u64> {
        let published = self.inner.published.borrow();
        (*published).then(|| self.inner.terms.load(Ordering::Acquire))
    }

    /// One item each time this replica becomes the leader (not for the state it is in
    /// when called).
    pub fn gained(&self) -> impl Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.subscribe(), |mut changes| async move {
            loop {
                changes.changed().await.ok()?;
                if *changes.borrow_and_update() {
                    return Some(((), changes));
                }
            }
        })
    }

    fn set_holder(&self, holder: bool) {
        self.inner.holder.store(holder, Ordering::Release);
    }

    /// Takes the deadline from the Lease as the API server holds it.
    fn observe(&self, lease: &Lease, settings: &LeaseSettings) {
        let spec = lease.spec.as_ref();
        let ours = spec.and_then(|s| s.holder_identity.as_deref()) == Some(&settings.identity);
        let renewed = spec.and_then(|s| s.renew_time.as_ref());
        let duration = spec.and_then(|s| s.lease_duration_seconds);
        let valid_until = match (ours, renewed, duration) {
            (true, Some(renewed), Some(seconds)) => {
                renewed.0.as_millisecond() + i64::from(seconds) * 1000
                    - settings.margin().as_millis() as i64
            }
            _ => 0,
        };
        self.inner
            .valid_until_ms
            .store(valid_until, Ordering::Release);
    }

    fn step_down(&self) {
        self.inner.holder.store(false, Ordering::Release);
        self.inner.valid_until_ms.store(0, Ordering::Release);
        self.publish();
    }

    /// Publishes the current state if it changed; returns it.
    fn publish(&self) -> bool {
        let leading = self.is_leader();
        self.inner.published.send_if_modified(|published| {
            let changed = *published != leading;
            if changed && leading {
                // Under the channel's lock: whoever sees "leading" sees the new term.
                self.inner.terms.fetch_add(1, Ordering::AcqRel);
            }
            *published = leading;
            changed
        });
        leading
    }

    /// When the current term ends unless renewed, if this replica leads.
    fn term_end(&self) -> Option<tokio::time::Instant> {
        if !self.is_leader() || !self.inner.elected {
            return None;
        }
        let left = self.inner.valid_until_ms.load(Ordering::Acquire) - now_ms();
        let left = Duration::from_millis(u64::try_from(left).ok()?);
        Some(tokio::time::Instant::now() + left)
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A running campaign for the Lease. [`Election::release`] ends it.
pub struct Election {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Election {
    /// Campaigns for the Lease in the background, and keeps `leadership` up to date.
    pub fn start(client: Client, settings: LeaseSettings, leadership: Leadership) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(campaign(client, settings, leadership, stopped));
        Self { stop, task }
    }

    /// Stops acting at once, then releases the Lease (if held), so that a standby takes
    /// over without waiting for it to expire.
    pub async fn release(self) {
        let _ = self.stop.send(());
        if let Err(err) = self.task.await {
            error!(error = %err, "the leader election task failed");
        }
    }
}

/// How long releasing the Lease may take at shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// kube-lease-manager's next change of our holding, as an owned future.
type Holding = BoxFuture<'static, Result<bool, LeaseManagerError>>;

fn next_change(manager: &Arc<LeaseManager>, after: Duration) -> Holding {
    let manager = manager.clone();
    async move {
        tokio::time::sleep(after).await;
        manager.changed().await
    }
    .boxed()
}

/// A Lease manager for `settings`; the Lease is created if it does not exist.
async fn lease_manager(
    client: &Client,
    settings: &LeaseSettings,
) -> Result<Arc<LeaseManager>, LeaseManagerError> {
    LeaseManagerBuilder::new(client.clone(), &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration_seconds())
        .with_grace(settings.grace_seconds())
        .build()
        .await
        .map(Arc::new)
}

/// Campaigns until `stop`, then stands down and releases the Lease if it holds it.
///
/// kube-lease-manager is driven by hand (`changed()`), next to a watch on the Lease:
/// the watch gives the term's deadline, and it shows at once when the leader releases
/// the Lease, which kube-lease-manager's standby would only notice when the released
/// term would have expired.
async fn campaign(
    client: Client,
    settings: LeaseSettings,
    leadership: Leadership,
    mut stop: oneshot::Receiver<()>,
) {
    let mut retry = Duration::from_secs(1);
    let mut manager = loop {
        match lease_manager(&client, &settings).await {
            Ok(manager) => break manager,
            Err(err) => {
                warn!(
                    lease = %settings.name,
                    namespace = %settings.namespace,
                    error = %err,
                    "could not set up the leader Lease; retrying in {retry:?}"
                );
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    _ = &mut stop => return,
                }
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    };
    info!(
        lease = %settings.name,
        namespace = %settings.namespace,
        identity = %settings.identity,
        duration_seconds = settings.duration_seconds(),
        "campaigning for the leader Lease; standing by until it is won"
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    let mut renewals = watcher(
        leases,
        watcher::Config::default().fields(&format!("metadata.name={}", settings.name)),
    )
    .default_backoff()
    .applied_objects()
    .boxed();
    let mut holding = next_change(&manager, Duration::ZERO);
    let mut seen = SeenHolder::default();
    retry = Duration::from_secs(1);
    loop {
        let term_end = leadership.term_end();
        tokio::select! {
            _ = &mut stop => break,
            changed = &mut holding => match changed {
                Ok(holds) => {
                    leadership.set_holder(holds);
                    retry = Duration::from_secs(1);
                    holding = next_change(&manager, Duration::ZERO);
                }
                Err(err) => {
                    // The term's deadline still bounds how long this replica acts.
                    warn!(error = %err, "the leader Lease could not be read or renewed; retrying in {retry:?}");
                    if matches!(err, LeaseManagerError::NonexistentLease(_))
                        && let Ok(fresh) = lease_manager(&client, &settings).await
                    {
                        leadership.set_holder(false);
                        manager = fresh;
                    }
                    holding = next_change(&manager, retry);
                    retry = (retry * 2).min(MAX_RETRY);
                }
            },
            event = renewals.next() => match event {
                Some(Ok(lease)) => {
                    leadership.observe(&lease, &settings);
                    let now = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
                    let holds = leadership.inner.holder.load(Ordering::Acquire);
                    let seen_before = seen.clone();
                    let change = seen.see(now.clone(), holds);
                    if change.changed {
                        match &now {
                            Some(identity) => info!(leader = %identity, "the leader Lease changed hands"),
                            None => info!("the leader Lease is free"),
                        }
                    }
                    if change.freed {
                        // Released by its holder: a fresh manager reads it now,
                        // instead of sleeping until the old term's expiry.
                        match lease_manager(&client, &settings).await {
                            Ok(fresh) => {
                                manager = fresh;
                                holding = next_change(&manager, Duration::ZERO);
                            }
                            Err(err) => {
                                warn!(error = %err, "could not look at the free Lease");
                                // So that the next sight of the free Lease tries again.
                                seen = seen_before;
                            }
                        }
                    }
                }
                Some(Err(err)) => warn!(error = %err, "watching the leader Lease failed; retrying"),
                None => break,
            },
            () = sleep_until(term_end) => {
                debug!("the leader term ended without a renewal");
            }
        }
        let was = *leadership.inner.published.borrow();
        let leading = leadership.publish();
        match (was, leading) {
            (false, true) => info!(identity = %settings.identity, "became the leader: acting"),
            (true, false) if leadership.inner.holder.load(Ordering::Acquire) => {
                warn!("the leader Lease was not renewed in time: standing by until it is renewed")
            }
            (true, false) => warn!("lost the leader Lease: standing by"),
            _ => {}
        }
    }
    // Stop acting before the Lease is released, so that no write of ours can follow a
    // standby's first one.
    drop(holding);
    leadership.step_down();
    match tokio::time::timeout(RELEASE_TIMEOUT, manager.release()).await {
        Ok(Ok(())) => info!(lease = %settings.name, "left the leader Lease"),
        Ok(Err(err)) => {
            warn!(error = %err, "could not release the leader Lease; it expires on its own")
        }
        Err(_) => warn!("releasing the leader Lease timed out; it expires on its own"),
    }
}

/// What the watch last showed of the Lease's holder.
///
/// "Not seen yet" is not "free": a standby whose manager read the Lease while it was
/// held, and whose watch's first sight of it is after the release, must see that
/// first sight as the release, or it waits for the old term to expire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum SeenHolder {
    #[default]
    Unseen,
    Seen(Option<String>),
}

/// What one sight of the Lease changed.
#[derive(Debug, PartialEq, Eq)]
struct HolderChange {
    /// The holder differs from the last sight (or this is the first).
    changed: bool,
    /// The Lease has just been seen free while this replica does not hold it: its
    /// manager must read it again now.
    freed: bool,
}

impl SeenHolder {
    fn see(&mut self, now: Option<String>, holds: bool) -> HolderChange {
        let now = Self::Seen(now);
        let changed = *self != now;
        let freed = changed && now == Self::Seen(None) && !holds;
        *self = now;
        HolderChange { changed, freed }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The label the leader keeps on its own Pod (`--label-leader-pod`), so that a Service
/// can send Alertmanager's notifications to the leader only: alerts live in the memory
/// of the replica that received them, and only the leader acts on them.
pub const LEADER_POD_LABEL: &str = "switchyard.dev/leader";

/// Keeps [`LEADER_POD_LABEL`] on Pod `pod` in `namespace` while this replica leads, and
/// removes it when it stops. Retries failed patches until the next change of leadership.
pub async fn label_own_pod(
    client: Client,
    namespace: String,
    pod: String,
    leadership: Leadership,
    writes: crate::writes::Writes,
) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Patch, PatchParams};

    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let mut changes = leadership.subscribe();
    loop {
        let leading = *changes.borrow_and_update();
        let value = if leading {
            serde_json::Value::from("true")
        } else {
            serde_json::Value::Null
        };
        let patch = serde_json::json!({"metadata": {"labels": {LEADER_POD_LABEL: value}}});
        let mut delay = Duration::from_millis(500);
        loop {
            use crate::writes::{resource, verb};
            match writes
                .send(
                    resource::PODS,
                    verb::PATCH,
                    pods.patch(&pod, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await
            {
                Ok(_) => {
                    debug!(pod, leading, "labelled this replica's Pod");
                    break;
                }
                Err(err) => {
                    warn!(pod, namespace, error = %err, "cannot label this replica's Pod as leader; Alertmanager's notifications may reach a standby (503) until it can");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => delay = (delay * 2).min(MAX_RETRY),
                        changed = changes.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            break;
                        }
                    }
                }
            }
        }
        if changes.has_changed().unwrap_or(false) {
            continue;
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::MicroTime,
    };

    fn settings(seconds: u64) -> LeaseSettings {
        LeaseSettings {
            name: "switchyard".into(),
            namespace: "ops".into(),
            identity: "me".into(),
            duration: Duration::from_secs(seconds),
        }
    }

    fn lease(holder: &str, renewed_ago: Duration, seconds: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(
                    jiff::Timestamp::now() - jiff::SignedDuration::try_from(renewed_ago).unwrap(),
                )),
                lease_duration_seconds: Some(seconds),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn grace_and_margin_leave_room_for_renewals() {
        let s = settings(15);
        assert_eq!(
            (s.grace_seconds(), s.margin()),
            (5, Duration::from_millis(2500))
        );
        let s = settings(4);
        assert_eq!(
            (s.grace_seconds(), s.margin()),
            (1, Duration::from_millis(500))
        );
        let s = settings(2);
        assert_eq!(s.grace_seconds(), 1);
        assert!(s.margin() < Duration::from_secs(s.grace_seconds()));
    }

    #[test]
    fn without_election_a_replica_always_leads() {
        let leadership = Leadership::always();
        assert!(leadership.is_leader());
        assert!(*leadership.subscribe().borrow());
        assert!(leadership.term_end().is_none());
        assert_eq!(leadership.time_left(), None, "no term to run out");
    }

    #[test]
    fn a_replica_leads_only_while_it_holds_a_fresh_lease() {
        let s = settings(4);
        let leadership = Leadership::elected();
        assert!(!leadership.is_leader(), "a new replica stands by");
        leadership.set_holder(true);
        assert!(!leadership.is_leader(), "no renewal seen yet");
        leadership.observe(&lease("me", Duration::ZERO, 4), &s);
        assert!(leadership.is_leader());
        assert!(leadership.publish());
        assert!(leadership.term_end().is_some());
        // 4 s from the renewal, less the 0.5 s margin.
        let left = leadership.time_left().unwrap();
        assert!(
            left > Duration::from_millis(3000) && left <= Duration::from_millis(3500),
            "{left:?}"
        );

        // A renewal 3.6 s ago: the Lease is still valid for 0.4 s, within the margin.
        leadership.observe(&lease("me", Duration::from_millis(3600), 4), &s);
        assert!(!leadership.is_leader(), "too close to expiry to act");
        assert_eq!(leadership.time_left(), Some(Duration::ZERO));

        leadership.observe(&lease("someone-else", Duration::ZERO, 4), &s);
        assert!(!leadership.is_leader(), "the Lease is not ours");

        leadership.observe(&lease("me", Duration::ZERO, 4), &s);
        leadership.set_holder(false);
        assert!(
            !leadership.is_leader(),
            "kube-lease-manager says we lost it"
        );

        leadership.set_holder(true);
        leadership.step_down();
        assert!(!leadership.is_leader());
        assert!(!*leadership.subscribe().borrow());
    }

    #[test]
    fn each_published_gain_starts_a_new_term() {
        let s = settings(4);
        assert_eq!(
            Leadership::always().term(),
            Some(0),
            "one replica: one term"
        );
        let leadership = Leadership::elected();
        assert_eq!(leadership.term(), None, "a standby has no term");
        leadership.set_holder(true);
        leadership.observe(&lease("me", Duration::ZERO, 4), &s);
        assert_eq!(
            leadership.term(),
            None,
            "leading, but not published yet: what the term needs is not ready"
        );
        leadership.publish();
        let first = leadership.term().expect("leading");
        leadership.publish();
        assert_eq!(leadership.term(), Some(first), "a renewal is the same term");
        leadership.step_down();
        assert_eq!(leadership.term(), None);
        leadership.set_holder(true);
        leadership.observe(&lease("me", Duration::ZERO, 4), &s);
        leadership.publish();
        assert!(
            leadership.term() > Some(first),
            "taking over again is a new term"
        );
    }

    #[test]
    fn a_free_lease_is_a_release_even_at_the_first_sight() {
        let mut seen = SeenHolder::default();
        assert_eq!(
            seen.see(None, false),
            HolderChange {
                changed: true,
                freed: true
            },
            "the watch began after the leader left"
        );
        assert_eq!(
            seen.see(None, false),
            HolderChange {
                changed: false,
                freed: false
            },
            "a relist of the same free Lease"
        );
        assert_eq!(
            seen.see(Some("other".into()), false),
            HolderChange {
                changed: true,
                freed: false
            }
        );
        assert_eq!(
            seen.see(None, false),
            HolderChange {
                changed: true,
                freed: true
            },
            "released by its holder"
        );
        let mut ours = SeenHolder::Seen(Some("me".into()));
        assert_eq!(
            ours.see(None, true),
            HolderChange {
                changed: true,
                freed: false
            },
            "our own release needs no fresh look"
        );
        let mut first = SeenHolder::default();
        assert_eq!(
            first.see(Some("other".into()), false),
            HolderChange {
                changed: true,
                freed: false
            }
        );
    }

    #[tokio::test]
    async fn gaining_leadership_is_announced_once() {
        let s = settings(4);
        let leadership = Leadership::elected();
        let mut gained = Box::pin(leadership.gained());
        leadership.set_holder(true);
        leadership.observe(&lease("me", Duration::ZERO, 4), &s);
        assert!(leadership.publish());
        assert_eq!(gained.next().await, Some(()));
        leadership.step_down();
        leadership.set_holder(true);
        leadership.observe(&lease("me", Duration::ZERO, 4), &s);
        leadership.publish();
        assert_eq!(gained.next().await, Some(()));
    }
}
