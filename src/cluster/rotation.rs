//! Rotation reaches environment variables: when the CSI driver's rotation mounts a new version of
//! an object that a pod's env vars read (through its synced Secret), the pod's workload is
//! restarted, so its containers read the new value at start.
//!
//! Every replica follows the driver's SecretProviderClassPodStatus objects (per pod and SPC, each
//! object's version) and tells a version change from a first sighting; the replica holding the
//! collector Lease acts on the changes:
//!
//! - only pods annotated `kvinject.io/restart-on-rotation: "true"`, and only objects their SPC
//!   copies into a synced Secret that is not `kubernetes.io/tls` (files rotate in place);
//! - the workload is the top of the pod's owner chain; Deployments, StatefulSets and DaemonSets
//!   are restarted, a Job, CronJob, lone ReplicaSet or bare pod gets an Event saying it was not;
//! - changes to one workload are gathered for the debounce period and restart it once; a
//!   workload is restarted at most once per minimum interval (as this replica remembers it and
//!   as the workload's `kvinject.io/restarted-at` says), and at most `max_concurrent` restarted
//!   workloads roll at once;
//! - a version a workload was already restarted for (its other pods report it later) restarts
//!   nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::Api;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{mpsc, watch};

use crate::cluster::Cluster;
use crate::cluster::events::{EventWriter, Involved, Reason};
use crate::cluster::workloads::{OwnerError, Workload, restarted_at, rolling};
use crate::core::facts::ClusterFacts;
use crate::lifecycle::ticks::Ticks;

/// The SecretProviderClassPodStatus API (the CSI driver's record of what it mounted).
pub fn pod_status_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "secrets-store.csi.x-k8s.io",
            "v1",
            "SecretProviderClassPodStatus",
        ),
        "secretproviderclasspodstatuses",
    )
}

/// The restarts' settings (`serve --rotation-*`).
#[derive(Debug, Clone, Copy)]
pub struct RotationSettings {
    /// How long changes to one workload are gathered before it restarts.
    pub debounce: Duration,
    /// Least time between two restarts of one workload.
    pub min_interval: Duration,
    /// Most restarted workloads rolling at once.
    pub max_concurrent: usize,
}

/// One object of one pod's SPC mounted at another version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The SPC it mounts.
    pub spc: String,
    /// The object, `<type>/<name>` as the driver's provider names it.
    pub object: String,
    /// The version mounted before.
    pub from: String,
    /// The version mounted now.
    pub to: String,
}

/// What one SecretProviderClassPodStatus says: the pod, the SPC, each object's version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Mounted {
    pod: String,
    spc: String,
    versions: BTreeMap<String, String>,
}

impl Mounted {
    fn of(status: &DynamicObject) -> Self {
        let status = &status.data["status"];
        let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
        Self {
            pod: text(&status["podName"]),
            spc: text(&status["secretProviderClassName"]),
            versions: status["objects"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|object| {
                    Some((
                        object["id"].as_str()?.to_owned(),
                        object["version"].as_str()?.to_owned(),
                    ))
                })
                .collect(),
        }
    }

    /// The objects whose version differs in `now` (a first sighting is no change).
    fn changes(&self, now: &Mounted, namespace: &str) -> Vec<Change> {
        if self.pod != now.pod || self.spc != now.spc {
            return Vec::new();
        }
        now.versions
            .iter()
            .filter_map(|(object, to)| {
                let from = self.versions.get(object)?;
                (from != to).then(|| Change {
                    namespace: namespace.to_owned(),
                    pod: now.pod.clone(),
                    spc: now.spc.clone(),
                    object: object.clone(),
                    from: from.clone(),
                    to: to.clone(),
                })
            })
            .collect()
    }
}

type StatusKey = (String, String);

/// The versions last seen per SecretProviderClassPodStatus; a relist (after a watch error or a
/// compaction) is compared with them, so a change made meanwhile is not lost.
#[derive(Default)]
pub struct VersionTracker {
    seen: HashMap<StatusKey, Mounted>,
    listing: Option<HashMap<StatusKey, Mounted>>,
}

impl VersionTracker {
    /// Applies one watch event; the version changes it shows.
    pub fn apply(&mut self, event: Event<DynamicObject>) -> Vec<Change> {
        let key = |status: &DynamicObject| {
            (
                status.metadata.namespace.clone().unwrap_or_default(),
                status.metadata.name.clone().unwrap_or_default(),
            )
        };
        match event {
            Event::Init => {
                self.listing = Some(HashMap::new());
                Vec::new()
            }
            Event::InitApply(status) => {
                let key = key(&status);
                let mounted = Mounted::of(&status);
                let changes = self.changes(&key, &mounted);
                if let Some(listing) = self.listing.as_mut() {
                    listing.insert(key, mounted);
                }
                changes
            }
            Event::InitDone => {
                if let Some(listed) = self.listing.take() {
                    self.seen = listed;
                }
                Vec::new()
            }
            Event::Apply(status) => {
                let key = key(&status);
                let mounted = Mounted::of(&status);
                let changes = self.changes(&key, &mounted);
                self.seen.insert(key, mounted);
                changes
            }
            Event::Delete(status) => {
                self.seen.remove(&key(&status));
                Vec::new()
            }
        }
    }

    fn changes(&self, key: &StatusKey, now: &Mounted) -> Vec<Change> {
        self.seen
            .get(key)
            .map(|before| before.changes(now, &key.0))
            .unwrap_or_default()
    }
}

/// Follows every SecretProviderClassPodStatus and sends each version change to `changes`, until
/// the receiver is gone.
pub async fn follow_versions(client: Client, changes: mpsc::Sender<Change>) {
    let api = Api::<DynamicObject>::all_with(client, &pod_status_resource());
    let config = watcher::Config::default().page_size(crate::cluster::caches::LIST_PAGE_SIZE);
    let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut tracker = VersionTracker::default();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                for change in tracker.apply(event) {
                    if changes.send(change).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "SecretProviderClassPodStatus watch error; retrying with backoff")
            }
        }
    }
}

/// Changes gathered for one workload.
struct Pending {
    since: Instant,
    /// Not before then: the minimum interval since the last restart.
    not_before: Instant,
    /// (SPC, object) → (from, to).
    changes: BTreeMap<(String, String), (String, String)>,
    /// Deferral reasons already counted for this restart.
    deferred: Vec<&'static str>,
}

/// A restart this replica made.
struct Restarted {
    at: Instant,
    /// (SPC, object) → the version it was restarted for.
    versions: BTreeMap<(String, String), String>,
}

/// How long a restart is remembered (to recognise the versions it was for).
const REMEMBER_RESTARTS: Duration = Duration::from_secs(24 * 3600);
/// Most changes one restart's Event lists.
const LISTED_CHANGES: usize = 10;

/// The restarts: changes in, restarts out.
pub struct Restarts {
    events: EventWriter,
    settings: RotationSettings,
    pending: BTreeMap<Workload, Pending>,
    restarted: HashMap<Workload, Restarted>,
    rolling: Vec<(Workload, Instant)>,
}

impl Restarts {
    /// Restarts written through `events`' cluster, with `settings`.
    pub fn new(events: EventWriter, settings: RotationSettings) -> Self {
        Self {
            events,
            settings,
            pending: BTreeMap::new(),
            restarted: HashMap::new(),
            rolling: Vec::new(),
        }
    }

    fn cluster(&self) -> &Cluster {
        self.events.cluster()
    }

    fn skipped(&self, reason: &str) {
        self.events.metrics().rotation_skipped(reason);
    }

    /// Takes one change in: counted as skipped, or gathered for its workload's restart.
    pub async fn observe(&mut self, change: Change) {
        let cluster = self.cluster().clone();
        // Not a pod kvinject injected: not kvinject's to restart.
        let Some(pod) = cluster.pod(&change.namespace, &change.pod) else {
            return;
        };
        if pod.marker.is_none() {
            return;
        }
        let env = cluster
            .secret_provider_class(&change.namespace, &change.spc)
            .is_some_and(|spc| spc.env_objects.contains(&change.object));
        if !env {
            return self.skipped("file_only");
        }
        if !pod.restart_on_rotation {
            return self.skipped("not_opted_in");
        }
        let what = format!(
            "{} (version {} → {})",
            change.object, change.from, change.to
        );
        let Some(controller) = pod.controller else {
            let involved = Involved::pod(&change.namespace, &change.pod, &pod.uid);
            self.not_restarted(&involved, "it is a bare pod", &what, &change.to)
                .await;
            return;
        };
        let workload = match cluster.top_workload(*controller).await {
            Ok(workload) => workload,
            Err(OwnerError::Missing(gone)) => {
                tracing::info!(%gone, pod = %change.pod, "rotation: the pod's owner is gone");
                return self.skipped("owner_not_found");
            }
            Err(error) => {
                tracing::warn!(%error, pod = %change.pod, "rotation: could not read the pod's owner");
                return self.skipped("failed");
            }
        };
        if !workload.kind.restartable() {
            let why = format!("a {} is not restarted", workload.kind.as_str());
            self.not_restarted(&Involved::from(&workload), &why, &what, &change.to)
                .await;
            return;
        }
        let key = (change.spc, change.object);
        let covered = self
            .restarted
            .get(&workload)
            .and_then(|restarted| restarted.versions.get(&key))
            .is_some_and(|version| *version == change.to);
        if covered {
            return;
        }
        let pending = self.pending.entry(workload).or_insert_with(|| Pending {
            since: Instant::now(),
            not_before: Instant::now(),
            changes: BTreeMap::new(),
            deferred: Vec::new(),
        });
        let entry = pending
            .changes
            .entry(key)
            .or_insert((change.from, change.to.clone()));
        entry.1 = change.to;
    }

    async fn not_restarted(&self, involved: &Involved, why: &str, what: &str, version: &str) {
        self.skipped("not_restartable");
        let message = format!(
            "Key Vault object rotated: {what}; env vars keep the old value until the pod restarts, and {why}: \
             restart it yourself, or read the object from its file, which is rotated in place"
        );
        let key = format!("{what}@{version}");
        let _ = self
            .events
            .write(involved, Reason::RotationNotRestarted, &message, &key)
            .await;
    }

    /// Restarts every workload whose changes have waited the debounce period, within the
    /// minimum interval and the concurrency limit.
    pub async fn restart_due(&mut self) {
        let now = Instant::now();
        self.restarted
            .retain(|_, restarted| now.duration_since(restarted.at) < REMEMBER_RESTARTS);
        let due: Vec<Workload> = self
            .pending
            .iter()
            .filter(|(_, pending)| {
                now.duration_since(pending.since) >= self.settings.debounce
                    && now >= pending.not_before
            })
            .map(|(workload, _)| workload.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        self.forget_finished_rollouts().await;
        for workload in due {
            self.restart(workload).await;
        }
    }

    async fn restart(&mut self, workload: Workload) {
        let min_interval = self.settings.min_interval;
        if let Some(restarted) = self.restarted.get(&workload)
            && restarted.at.elapsed() < min_interval
        {
            return self.defer(&workload, "min_interval", restarted.at + min_interval);
        }
        let object = match self.cluster().read_workload(&workload).await {
            Ok(object) => object,
            Err(OwnerError::Missing(_)) => {
                self.pending.remove(&workload);
                return self.skipped("owner_not_found");
            }
            Err(error) => {
                tracing::warn!(%error, "rotation: could not read the workload; retrying");
                return;
            }
        };
        // Another replica (an earlier Lease holder) may have restarted it.
        let wall = Timestamp::now();
        let since_last = restarted_at(&object).map(|at| wall.duration_since(at).unsigned_abs());
        if let Some(since_last) = since_last.filter(|since| *since < min_interval) {
            let until = Instant::now() + (min_interval - since_last);
            return self.defer(&workload, "min_interval", until);
        }
        if self.rolling.len() >= self.settings.max_concurrent {
            return self.defer(&workload, "max_concurrent", Instant::now());
        }
        match self.cluster().restart_workload(&workload, wall).await {
            Ok(()) => {
                let Some(pending) = self.pending.remove(&workload) else {
                    return;
                };
                self.restarted_now(&workload, pending, wall).await;
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
                self.pending.remove(&workload);
                self.skipped("owner_not_found");
            }
            Err(error) => {
                tracing::warn!(%workload, %error, "rotation: restart failed; retrying after the debounce period");
                self.skipped("failed");
                if let Some(pending) = self.pending.get_mut(&workload) {
                    pending.since = Instant::now();
                }
            }
        }
    }

    async fn restarted_now(&mut self, workload: &Workload, pending: Pending, at: Timestamp) {
        self.events
            .metrics()
            .rotation_restart(workload.kind.as_str());
        let mut listed: Vec<String> = pending
            .changes
            .iter()
            .take(LISTED_CHANGES)
            .map(|((_, object), (from, to))| format!("{object} (version {from} → {to})"))
            .collect();
        if pending.changes.len() > LISTED_CHANGES {
            listed.push(format!(
                "and {} more",
                pending.changes.len() - LISTED_CHANGES
            ));
        }
        tracing::info!(%workload, namespace = %workload.namespace, objects = %listed.join(", "),
            "rotation: restarted");
        let message = format!(
            "restarted by kvinject so env vars read the rotated Key Vault objects: {}",
            listed.join(", ")
        );
        let _ = self
            .events
            .write(
                &Involved::from(workload),
                Reason::SecretsRotated,
                &message,
                &at.to_string(),
            )
            .await;
        let versions = self.restarted.entry(workload.clone()).or_insert(Restarted {
            at: Instant::now(),
            versions: BTreeMap::new(),
        });
        versions.at = Instant::now();
        versions
            .versions
            .extend(pending.changes.into_iter().map(|(key, (_, to))| (key, to)));
        self.rolling.push((workload.clone(), Instant::now()));
    }

    /// Leaves a workload's restart for later (`until`, or the next tick), counting each reason
    /// once per restart.
    fn defer(&mut self, workload: &Workload, reason: &'static str, until: Instant) {
        let Some(pending) = self.pending.get_mut(workload) else {
            return;
        };
        pending.not_before = until;
        if !pending.deferred.contains(&reason) {
            pending.deferred.push(reason);
            self.events.metrics().rotation_deferred(reason);
        }
    }

    /// Drops the restarted workloads whose rollout has finished (or is gone, or has run longer
    /// than the minimum interval: a stuck rollout does not hold every other restart back).
    async fn forget_finished_rollouts(&mut self) {
        let mut still = Vec::new();
        for (workload, since) in std::mem::take(&mut self.rolling) {
            if since.elapsed() >= self.settings.min_interval {
                continue;
            }
            match self.cluster().read_workload(&workload).await {
                Ok(object) if rolling(workload.kind, &object) => still.push((workload, since)),
                Ok(_) | Err(OwnerError::Missing(_)) => {}
                Err(_) => still.push((workload, since)),
            }
        }
        self.rolling = still;
    }

    /// While not holding the Lease: changes are not gathered (the holder gathers them).
    fn forget_pending(&mut self) {
        self.pending.clear();
        self.rolling.clear();
    }
}

/// Runs the restarts: every replica follows the versions, the Lease holder (`leading`) acts on
/// the changes. Ends when `shutdown` resolves.
pub async fn run(
    mut restarts: Restarts,
    leading: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) {
    let (sender, mut changes) = mpsc::channel(1024);
    let follower = tokio::spawn(follow_versions(restarts.cluster().client().clone(), sender));
    let tick =
        (restarts.settings.debounce / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut ticks = Ticks::new(tick, shutdown);
    loop {
        tokio::select! {
            more = ticks.next() => {
                if !more {
                    break;
                }
                if *leading.borrow() {
                    restarts.restart_due().await;
                } else {
                    restarts.forget_pending();
                }
            }
            Some(change) = changes.recv() => {
                if *leading.borrow() {
                    restarts.observe(change).await;
                }
            }
        }
    }
    follower.abort();
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn status(name: &str, versions: &[(&str, &str)]) -> DynamicObject {
        let objects: Vec<_> = versions
            .iter()
            .map(|(id, version)| json!({"id": id, "version": version}))
            .collect();
        serde_json::from_value(json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClassPodStatus",
            "metadata": {"name": name, "namespace": "shop"},
            "status": {"podName": "web-1", "secretProviderClassName": "kvinject-abc",
                "mounted": true, "objects": objects}}))
        .unwrap()
    }

    #[test]
    fn a_first_sighting_is_no_change_and_a_new_version_is_one() {
        let mut tracker = VersionTracker::default();
        let first = status("s", &[("secret/db", "v1"), ("secret/api", "a1")]);
        assert!(tracker.apply(Event::Apply(first)).is_empty());
        let rotated = status("s", &[("secret/db", "v2"), ("secret/api", "a1")]);
        let changes = tracker.apply(Event::Apply(rotated));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].object, "secret/db");
        assert_eq!(
            (changes[0].from.as_str(), changes[0].to.as_str()),
            ("v1", "v2")
        );
        assert_eq!(changes[0].pod, "web-1");
    }

    #[test]
    fn a_relist_is_compared_with_what_was_seen_and_replaces_it() {
        let mut tracker = VersionTracker::default();
        tracker.apply(Event::Apply(status("s", &[("secret/db", "v1")])));
        tracker.apply(Event::Apply(status("gone", &[("secret/db", "v1")])));
        tracker.apply(Event::Init);
        let changes = tracker.apply(Event::InitApply(status("s", &[("secret/db", "v2")])));
        assert_eq!(changes.len(), 1, "a change made while the watch was down");
        tracker.apply(Event::InitDone);
        assert!(!tracker.seen.contains_key(&("shop".into(), "gone".into())));
        let again = tracker.apply(Event::Apply(status("gone", &[("secret/db", "v9")])));
        assert!(
            again.is_empty(),
            "a status deleted meanwhile is seen afresh"
        );
    }
}
