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
use crate::cluster::events::{EventWriter, Involved, Reason, digest};
use crate::cluster::workloads::{OwnerError, Workload, WorkloadKind, restarted_at, rolling};
use crate::core::annotations::{self, RESTART_ON_ROTATION, ROTATED, marker_spcs};
use crate::core::facts::ClusterFacts;
use crate::core::spc::hex;
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
    /// The pod's uid, from the status's owner reference: a pod recreated under the same name
    /// (a StatefulSet's) is a first sighting, not a rotation.
    pod_uid: Option<String>,
    spc: String,
    versions: BTreeMap<String, String>,
}

impl Mounted {
    fn of(status: &DynamicObject) -> Self {
        let pod_uid = status
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|owner| owner.kind == "Pod")
            .map(|owner| owner.uid.clone());
        let status = &status.data["status"];
        let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
        Self {
            pod_uid,
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
        if self.pod != now.pod || self.spc != now.spc || self.pod_uid != now.pod_uid {
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
    /// Not before then: the minimum interval since the last restart, or a retry's pause.
    not_before: Instant,
    /// (SPC, object) → (from, to).
    changes: BTreeMap<(String, String), (String, String)>,
    /// Deferral reasons already counted for this restart.
    deferred: Vec<&'static str>,
}

/// How long a change is kept waiting for its restart (by a replica not holding the Lease, or
/// for a workload that keeps failing).
const REMEMBER_PENDING: Duration = Duration::from_secs(24 * 3600);
/// Most changes one restart's Event lists.
const LISTED_CHANGES: usize = 10;
/// Pause before a restart whose workload could not be read is tried again.
const RETRY: Duration = Duration::from_secs(30);
/// Controllers whose workload is remembered, at most; when full, the memory starts afresh.
const REMEMBERED_OWNERS: usize = 10_000;

/// The restarts: changes in, restarts out. Every replica gathers the changes; the Lease holder
/// restarts. What a workload was restarted for is recorded on the workload itself
/// ([`ROTATED`]), so a new Lease holder neither restarts it again for the same versions nor
/// forgets a change the old one had not acted on.
pub struct Restarts {
    events: EventWriter,
    settings: RotationSettings,
    pending: BTreeMap<Workload, Pending>,
    /// A controller's uid → the top of its owner chain (owner chains do not change).
    owners: HashMap<String, Workload>,
    /// This replica's restarts, when, for the minimum interval.
    restarted: HashMap<Workload, Instant>,
    rolling: Vec<(Workload, Instant)>,
}

impl Restarts {
    /// Restarts written through `events`' cluster, with `settings`.
    pub fn new(events: EventWriter, settings: RotationSettings) -> Self {
        Self {
            events,
            settings,
            pending: BTreeMap::new(),
            owners: HashMap::new(),
            restarted: HashMap::new(),
            rolling: Vec::new(),
        }
    }

    fn cluster(&self) -> &Cluster {
        self.events.cluster()
    }

    /// Counts a change that restarts nothing, when this replica is the one that acts.
    fn skipped(&self, leading: bool, reason: &str) {
        if leading {
            self.events.metrics().rotation_skipped(reason);
        }
    }

    /// Takes one change in: ignored (not a kvinject pod's, or its SPC not one the pod's marker
    /// names), counted as skipped, or gathered for its workload's restart. `leading`: whether
    /// this replica holds the Lease (only the holder counts and writes Events).
    pub async fn observe(&mut self, change: Change, leading: bool) {
        let cluster = self.cluster().clone();
        let Some(pod) = cluster.pod(&change.namespace, &change.pod) else {
            return;
        };
        let marker = pod.marker.as_deref().unwrap_or_default();
        if !marker_spcs(marker).any(|spc| spc == change.spc) {
            return;
        }
        let Some(spc) = cluster.secret_provider_class(&change.namespace, &change.spc) else {
            return;
        };
        if !spc.env_objects.contains(&change.object) {
            return self.skipped(leading, "file_only");
        }
        if !pod.restart_on_rotation {
            return self.skipped(leading, "not_opted_in");
        }
        let what = format!(
            "{} (version {} → {})",
            change.object, change.from, change.to
        );
        let Some(controller) = pod.controller else {
            if leading {
                let involved = Involved::pod(&change.namespace, &change.pod, &pod.uid);
                self.not_restarted(&involved, "it is a bare pod", &what, &change.to)
                    .await;
            }
            return;
        };
        let Some(workload) = self.workload_of(*controller, leading).await else {
            return;
        };
        if !workload.kind.restartable() {
            if leading {
                let why = format!("a {} is not restarted", workload.kind.as_str());
                self.not_restarted(&Involved::from(&workload), &why, &what, &change.to)
                    .await;
            }
            return;
        }
        let now = Instant::now();
        let pending = self.pending.entry(workload).or_insert_with(|| Pending {
            since: now,
            not_before: now,
            changes: BTreeMap::new(),
            deferred: Vec::new(),
        });
        let entry = pending
            .changes
            .entry((change.spc, change.object))
            .or_insert((change.from, change.to.clone()));
        entry.1 = change.to;
    }

    /// The top of `controller`'s owner chain, read once per controller.
    async fn workload_of(&mut self, controller: Workload, leading: bool) -> Option<Workload> {
        if let Some(workload) = self.owners.get(&controller.uid) {
            return Some(workload.clone());
        }
        let uid = controller.uid.clone();
        match self.cluster().top_workload(controller).await {
            Ok(workload) => {
                if self.owners.len() >= REMEMBERED_OWNERS {
                    self.owners.clear();
                }
                self.owners.insert(uid, workload.clone());
                Some(workload)
            }
            Err(OwnerError::Missing(gone)) => {
                tracing::info!(%gone, "rotation: the pod's owner is gone");
                self.skipped(leading, "owner_not_found");
                None
            }
            Err(error) => {
                tracing::warn!(%error, "rotation: could not read the pod's owner");
                self.skipped(leading, "failed");
                None
            }
        }
    }

    async fn not_restarted(&self, involved: &Involved, why: &str, what: &str, version: &str) {
        self.skipped(true, "not_restartable");
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

    /// Restarts every workload whose changes have waited the debounce period, oldest first,
    /// within the minimum interval and the concurrency limit.
    pub async fn restart_due(&mut self) {
        let now = Instant::now();
        let min_interval = self.settings.min_interval;
        self.restarted
            .retain(|_, at| now.duration_since(*at) < min_interval);
        self.pending
            .retain(|_, pending| now.duration_since(pending.since) < REMEMBER_PENDING);
        let mut due: Vec<(Instant, Workload)> = self
            .pending
            .iter()
            .filter(|(_, pending)| {
                now.duration_since(pending.since) >= self.settings.debounce
                    && now >= pending.not_before
            })
            .map(|(workload, pending)| (pending.since, workload.clone()))
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort();
        self.forget_finished_rollouts().await;
        for (_, workload) in due {
            self.restart(workload).await;
        }
    }

    async fn restart(&mut self, workload: Workload) {
        let min_interval = self.settings.min_interval;
        // Before any read: many workloads waiting for a slot cost nothing per tick.
        if self.rolling.len() >= self.settings.max_concurrent {
            return self.defer(&workload, "max_concurrent", Instant::now());
        }
        let object = match self.cluster().read_workload(&workload).await {
            Ok(object) => object,
            Err(OwnerError::Missing(_)) => {
                self.pending.remove(&workload);
                return self.skipped(true, "owner_not_found");
            }
            Err(error) => {
                tracing::warn!(%error, "rotation: could not read the workload; retrying");
                if let Some(pending) = self.pending.get_mut(&workload) {
                    pending.not_before = later(Instant::now(), RETRY);
                }
                return;
            }
        };
        let Some(mut pending) = self.pending.remove(&workload) else {
            return;
        };
        // What a restart (by this or an earlier Lease holder) already covered.
        let rotated = rotated_for(&object);
        pending
            .changes
            .retain(|key, (_, to)| !rotated.contains(&version_digest(key, to)));
        if pending.changes.is_empty() {
            return;
        }
        // The workload's own template must ask: a pod's ownerReferences are its creator's word.
        if template_annotation(&object, RESTART_ON_ROTATION) != Some("true") {
            return self.skipped(true, "not_opted_in");
        }
        if let Some(why) = not_rolled_by_a_restart(workload.kind, &object) {
            let what = listed(&pending.changes);
            let last = pending
                .changes
                .values()
                .map(|(_, to)| to.as_str())
                .collect::<Vec<_>>()
                .join(",");
            return self
                .not_restarted(&Involved::from(&workload), why, &what, &last)
                .await;
        }
        // The minimum interval, as this replica remembers it and as the workload says (an
        // earlier Lease holder's restart counts).
        let wall = Timestamp::now();
        let remote = restarted_at(&object).map(|at| wall.duration_since(at).unsigned_abs());
        let local = self.restarted.get(&workload).map(Instant::elapsed);
        let since_last = remote.into_iter().chain(local).min();
        if let Some(since_last) = since_last.filter(|since| *since < min_interval) {
            let until = later(Instant::now(), min_interval - since_last);
            self.pending.insert(workload.clone(), pending);
            return self.defer(&workload, "min_interval", until);
        }
        let mut covered: Vec<String> = pending
            .changes
            .iter()
            .map(|(key, (_, to))| version_digest(key, to))
            .collect();
        covered.extend(
            rotated
                .into_iter()
                .take(MAX_ROTATED.saturating_sub(covered.len())),
        );
        covered.truncate(MAX_ROTATED);
        match self
            .cluster()
            .restart_workload(&workload, wall, &covered.join(","))
            .await
        {
            Ok(()) => self.restarted_now(&workload, pending, wall).await,
            // Gone, or another object of that name now (a uid in a patch is immutable: 422).
            Err(kube::Error::Api(status)) if [404, 409, 422].contains(&status.code) => {
                self.skipped(true, "owner_not_found");
            }
            Err(error) => {
                tracing::warn!(%workload, %error, "rotation: restart failed; retrying after the debounce period");
                self.skipped(true, "failed");
                pending.since = Instant::now();
                self.pending.insert(workload, pending);
            }
        }
    }

    async fn restarted_now(&mut self, workload: &Workload, pending: Pending, at: Timestamp) {
        self.events
            .metrics()
            .rotation_restart(workload.kind.as_str());
        let listed = listed(&pending.changes);
        tracing::info!(%workload, namespace = %workload.namespace, objects = %listed,
            "rotation: restarted");
        let message = format!(
            "restarted by kvinject so env vars read the rotated Key Vault objects ({}): {listed}",
            pending.changes.len()
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
        self.restarted.insert(workload.clone(), Instant::now());
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

    /// While not holding the Lease: what this replica restarted is no longer its to track (the
    /// gathered changes stay, for when it holds the Lease again).
    fn stand_by(&mut self) {
        self.rolling.clear();
        self.restarted.clear();
    }
}

/// Digests [`ROTATED`] keeps, at most (this restart's first).
const MAX_ROTATED: usize = 64;

/// 12 hex digits of SHA-256 over SPC, object and version.
fn version_digest((spc, object): &(String, String), version: &str) -> String {
    hex(&digest(&[spc, object, version])[..6])
}

/// The digests a workload's [`ROTATED`] annotation holds.
fn rotated_for(object: &DynamicObject) -> Vec<String> {
    object
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(ROTATED))
        .map(|value| annotations::comma_list(value))
        .unwrap_or_default()
}

/// A pod template annotation of a workload.
fn template_annotation<'a>(object: &'a DynamicObject, key: &str) -> Option<&'a str> {
    object.data["spec"]["template"]["metadata"]["annotations"][key].as_str()
}

/// Why a template change would not roll the workload's pods: a paused Deployment, or a
/// StatefulSet or DaemonSet updated only on delete (or a StatefulSet partition).
fn not_rolled_by_a_restart(kind: WorkloadKind, object: &DynamicObject) -> Option<&'static str> {
    let spec = &object.data["spec"];
    let strategy = &spec["updateStrategy"];
    match kind {
        WorkloadKind::Deployment if spec["paused"] == true => {
            Some("the Deployment is paused, so a restart would not roll it")
        }
        WorkloadKind::StatefulSet | WorkloadKind::DaemonSet if strategy["type"] == "OnDelete" => {
            Some("its updateStrategy is OnDelete, so a restart would replace no pod")
        }
        WorkloadKind::StatefulSet
            if strategy["rollingUpdate"]["partition"].as_i64().unwrap_or(0) > 0 =>
        {
            Some("its rolling update is partitioned, so a restart would replace only some pods")
        }
        _ => None,
    }
}

/// The changes as an Event lists them.
fn listed(changes: &BTreeMap<(String, String), (String, String)>) -> String {
    let mut listed: Vec<String> = changes
        .iter()
        .take(LISTED_CHANGES)
        .map(|((_, object), (from, to))| format!("{object} (version {from} → {to})"))
        .collect();
    if changes.len() > LISTED_CHANGES {
        listed.push(format!("and {} more", changes.len() - LISTED_CHANGES));
    }
    listed.join(", ")
}

/// `at + wait`, or far ahead when that cannot be told (a wait of centuries).
fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait)
        .unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Runs the restarts: every replica follows the versions and gathers the changes, the Lease
/// holder (`leading`) restarts. Ends when `shutdown` resolves.
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
                    restarts.stand_by();
                }
            }
            Some(change) = changes.recv() => {
                let leading = *leading.borrow();
                restarts.observe(change, leading).await;
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
