//! What the Lease holder does beyond collecting, and denial Events, against the API server double:
//! rotation restarts (through SecretProviderClassPodStatus objects and owner chains), pods that
//! run without injection (counted, told, evicted), and denials told to their workload.
//! Assertions are on the exact requests kvinject sends.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvinject::cluster::Cluster;
use kvinject::cluster::denials::DenialEvents;
use kvinject::cluster::events::EventWriter;
use kvinject::cluster::rotation::{self, Restarts, RotationSettings};
use kvinject::cluster::uninjected::{Eviction, UninjectedPods, UninjectedSettings};
use kvinject::core::plan::Settings;
use kvinject::lifecycle::readiness::Readiness;
use kvinject::webhook::listener::Limits;
use kvinject::webhook::metrics::SharedMetrics;
use kvinject::webhook::review::Reviewer;
use serde_json::{Value, json};
use support::apiserver::{ApiServer, Recorded};
use support::webhook::{admit, review as fixture, serve_against};
use tokio::sync::watch;

const SPC: &str = "kvinject-0123456789abcdef";

fn seed(api: &ApiServer) {
    api.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop",
        "labels": {"kvinject.io/injection": "enabled"},
        "annotations": {"kvinject.io/vault": "shop-prod-kv", "kvinject.io/tenant-id": "72f988bf-86f1-41af-91ab-2d7cd011db47"}}}));
    api.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "legacy"}}));
    api.put(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "checkout", "namespace": "shop",
        "annotations": {"azure.workload.identity/client-id": "5e2c6f4a-9d1b-4c3e-8a7f-0b1c2d3e4f50"}}}));
    // As kvinject generates it: db-password and api-key feed env vars, tls.crt is a file only.
    let objects = "array:\n  - |\n    objectName: db-password\n    objectType: secret\n  - |\n    objectName: api-key\n    objectType: secret\n  - |\n    objectName: checkout-tls\n    objectAlias: tls.crt\n    objectType: cert\n";
    api.put(json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": SPC, "namespace": "shop", "labels": {"app.kubernetes.io/managed-by": "kvinject"}},
        "spec": {"provider": "azure", "parameters": {"keyvaultName": "shop-prod-kv", "objects": objects},
            "secretObjects": [{"secretName": SPC, "type": "Opaque", "data": [
                {"objectName": "db-password", "key": "DB_PASSWORD"},
                {"objectName": "api-key", "key": "API_KEY"}]}]}}));
    api.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": "shop", "uid": "deployment-uid", "generation": 1},
        "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "checkout"},
            "annotations": {"kvinject.io/restart-on-rotation": "true"}}}},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}));
    api.put(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "checkout-7d9f8c6b5", "namespace": "shop", "uid": "2b7e3f5c-1a4d-4e6b-9c8a-7f6e5d4c3b2a",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout",
                "uid": "deployment-uid", "controller": true}]},
        "spec": {"replicas": 1}}));
}

/// A pod of `owner` (`None`: a bare pod), injected with [`SPC`] unless `marker` is false.
fn pod(name: &str, owner: Option<Value>, restart: bool, marker: bool) -> Value {
    let mut annotations = json!({"kvinject.io/env.DB_PASSWORD": "db-password"});
    if marker {
        annotations["kvinject.io/injected"] = json!(SPC);
    }
    if restart {
        annotations["kvinject.io/restart-on-rotation"] = json!("true");
    }
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("{name}-uid"),
            "labels": {"kvinject.io/inject": "true"}, "annotations": annotations},
        "spec": {}});
    if let Some(owner) = owner {
        pod["metadata"]["ownerReferences"] = json!([owner]);
    }
    pod
}

fn replica_set_owner() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-7d9f8c6b5",
        "uid": "2b7e3f5c-1a4d-4e6b-9c8a-7f6e5d4c3b2a", "controller": true})
}

/// The CSI driver's record of what it mounted for `pod`.
fn pod_status(pod: &str, versions: &[(&str, &str)]) -> Value {
    let objects: Vec<Value> = versions
        .iter()
        .map(|(id, version)| json!({"id": id, "version": version}))
        .collect();
    json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClassPodStatus",
        "metadata": {"name": format!("{pod}-shop-{SPC}"), "namespace": "shop",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": format!("{pod}-uid")}]},
        "status": {"podName": pod, "secretProviderClassName": SPC, "mounted": true,
            "targetPath": "/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/kvinject-secrets/mount",
            "objects": objects}})
}

const V1: [(&str, &str); 3] = mounted("d1", "a1", "c1");

/// The versions mounted of the SPC's three objects: db-password, api-key (env) and checkout-tls
/// (a file).
const fn mounted(
    db: &'static str,
    api: &'static str,
    cert: &'static str,
) -> [(&'static str, &'static str); 3] {
    [
        ("secret/db-password", db),
        ("secret/api-key", api),
        ("cert/checkout-tls", cert),
    ]
}

async fn start(api: &ApiServer) -> Cluster {
    let readiness = Arc::new(Readiness::default());
    let cluster = Cluster::start(api.client(), readiness.clone(), Duration::from_millis(500)).await;
    wait_for(|| readiness.check().is_ok(), "caches to sync").await;
    cluster
}

async fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is(request: &Recorded, method: &str, plural: &str) -> bool {
    request.method == method
        && request.path.contains(&format!("/{plural}"))
        && request.param("watch").is_none()
}

fn requests(api: &ApiServer, method: &str, plural: &str) -> Vec<Recorded> {
    api.requests()
        .into_iter()
        .filter(|r| is(r, method, plural))
        .collect()
}

fn events(api: &ApiServer, reason: &str) -> Vec<Value> {
    api.objects("events")
        .into_iter()
        .filter(|event| event["reason"] == reason)
        .collect()
}

fn metric(metrics: &SharedMetrics, series: &str) -> f64 {
    let text = metrics.render();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

struct Rotation {
    api: ApiServer,
    cluster: Cluster,
    metrics: SharedMetrics,
    stop: watch::Sender<bool>,
}

impl Rotation {
    /// `kvinject_rotation_restarts_deferred_total` for `reason`.
    fn deferred(&self, reason: &str) -> f64 {
        let series = format!("kvinject_rotation_restarts_deferred_total{{reason=\"{reason}\"}}");
        metric(&self.metrics, &series)
    }
}

impl Drop for Rotation {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The restarts running as the Lease holder over `pods`, each mounting version 1 of everything.
async fn rotation(pods: &[Value], settings: RotationSettings) -> Rotation {
    rotation_with(pods, settings, watch::channel(true).1).await
}

/// [`rotation`], holding the Lease while `leading` says so.
async fn rotation_with(
    pods: &[Value],
    settings: RotationSettings,
    leading: watch::Receiver<bool>,
) -> Rotation {
    let api = ApiServer::start().await;
    seed(&api);
    for pod in pods {
        api.put(pod.clone());
        let name = pod["metadata"]["name"].as_str().unwrap();
        api.put(pod_status(name, &V1));
    }
    let cluster = start(&api).await;
    let (stop, _) = watch::channel(false);
    let r = Rotation {
        api,
        cluster,
        metrics: SharedMetrics::default(),
        stop,
    };
    r.replica(settings, leading, r.metrics.clone()).await;
    r.api.clear_requests();
    r
}

impl Rotation {
    /// Another replica's restarts over the same cluster, holding the Lease while `leading` says
    /// so; returns once it follows the statuses.
    async fn replica(
        &self,
        settings: RotationSettings,
        leading: watch::Receiver<bool>,
        metrics: SharedMetrics,
    ) {
        let watches = || {
            self.api
                .requests()
                .iter()
                .filter(|r| {
                    r.path.ends_with("/secretproviderclasspodstatuses")
                        && r.param("watch").is_some()
                })
                .count()
        };
        let before = watches();
        let events = EventWriter::new(self.cluster.clone(), "kvinject-0", metrics);
        let mut stopped = self.stop.subscribe();
        tokio::spawn(rotation::run(
            Restarts::new(events, settings),
            leading,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
        // The first sightings are in once the list has been answered and the watch began.
        wait_for(|| watches() > before, "the status watch").await;
    }
}

fn settings(debounce_ms: u64, min_interval: Duration, max_concurrent: usize) -> RotationSettings {
    RotationSettings {
        debounce: Duration::from_millis(debounce_ms),
        min_interval,
        max_concurrent,
    }
}

fn restarted_at(api: &ApiServer, plural: &str, name: &str) -> Option<String> {
    api.get(plural, "shop", name)?["spec"]["template"]["metadata"]["annotations"]
        ["kvinject.io/restarted-at"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn a_rotated_env_object_restarts_the_deployment_once_after_the_debounce() {
    let web = pod("checkout-1", Some(replica_set_owner()), true, true);
    let sibling = pod("checkout-2", Some(replica_set_owner()), true, true);
    let r = rotation(&[web, sibling], settings(400, Duration::from_secs(600), 2)).await;
    let rotated_at = Instant::now();
    r.api
        .put(pod_status("checkout-1", &mounted("d2", "a1", "c1")));
    wait_for(
        || restarted_at(&r.api, "deployments", "checkout").is_some(),
        "the restart",
    )
    .await;
    assert!(
        rotated_at.elapsed() >= Duration::from_millis(400),
        "restarted before the debounce period"
    );
    let patches = requests(&r.api, "PATCH", "deployments");
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(
        patches[0].content_type,
        "application/strategic-merge-patch+json"
    );
    let body: Value = serde_json::from_str(&patches[0].body).unwrap();
    assert_eq!(
        body["metadata"]["uid"], "deployment-uid",
        "the patch names the uid read"
    );
    // The sibling pod's driver reports the same new version later: no second restart.
    r.api
        .put(pod_status("checkout-2", &mounted("d2", "a1", "c1")));
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(requests(&r.api, "PATCH", "deployments").len(), 1);
    assert_eq!(
        r.deferred("min_interval"),
        0.0,
        "covered, not merely deferred"
    );
    let rotated = events(&r.api, "SecretsRotated");
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    assert_eq!(rotated[0]["involvedObject"]["kind"], "Deployment");
    assert_eq!(rotated[0]["involvedObject"]["name"], "checkout");
    assert_eq!(rotated[0]["type"], "Normal");
    let message = rotated[0]["message"].as_str().unwrap();
    assert!(
        message.contains("secret/db-password (version d1 → d2)"),
        "{message}"
    );
    assert_eq!(
        metric(
            &r.metrics,
            "kvinject_rotation_restarts_total{kind=\"Deployment\"}"
        ),
        1.0
    );
    // Only the ReplicaSet and the Deployment were read, and written only the patch and the Event.
    let writes: Vec<String> = r
        .api
        .writes_and_gets()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        writes.iter().all(|w| w.contains("/replicasets/")
            || w.contains("/deployments/")
            || w.starts_with("POST /api/v1/namespaces/shop/events")),
        "{writes:?}"
    );
    drop(r.cluster.clone());
}

#[tokio::test]
async fn three_objects_rotated_together_are_one_restart_and_the_min_interval_holds() {
    let web = pod("checkout-1", Some(replica_set_owner()), true, true);
    let r = rotation(&[web], settings(500, Duration::from_secs(600), 2)).await;
    r.api
        .put(pod_status("checkout-1", &mounted("d2", "a1", "c1")));
    tokio::time::sleep(Duration::from_millis(150)).await;
    r.api
        .put(pod_status("checkout-1", &mounted("d2", "a2", "c2")));
    wait_for(
        || restarted_at(&r.api, "deployments", "checkout").is_some(),
        "the restart",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(requests(&r.api, "PATCH", "deployments").len(), 1);
    let message = events(&r.api, "SecretsRotated")[0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("secret/db-password") && message.contains("secret/api-key"),
        "{message}"
    );
    assert!(
        !message.contains("cert/checkout-tls"),
        "a file-only object is not named: {message}"
    );
    // Rotated again within the minimum interval: deferred, not restarted.
    r.api
        .put(pod_status("checkout-1", &mounted("d3", "a2", "c2")));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(requests(&r.api, "PATCH", "deployments").len(), 1);
    assert_eq!(r.deferred("min_interval"), 1.0);
}

#[tokio::test]
async fn a_restart_another_replica_made_within_the_min_interval_defers_this_one() {
    let web = pod("checkout-1", Some(replica_set_owner()), true, true);
    let r = rotation(&[web], settings(200, Duration::from_secs(600), 2)).await;
    let mut deployment = r.api.get("deployments", "shop", "checkout").unwrap();
    deployment["spec"]["template"]["metadata"]["annotations"]["kvinject.io/restarted-at"] =
        json!(k8s_openapi::jiff::Timestamp::now().to_string());
    r.api.put(deployment);
    r.api
        .put(pod_status("checkout-1", &mounted("d2", "a1", "c1")));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(requests(&r.api, "PATCH", "deployments").is_empty());
    assert_eq!(r.deferred("min_interval"), 1.0);
}

#[tokio::test]
async fn file_only_objects_pods_not_opted_in_jobs_and_bare_pods_restart_nothing() {
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "name": "report", "uid": "job-uid", "controller": true});
    let pods = [
        pod("checkout-1", Some(replica_set_owner()), true, true),
        pod("not-opted", Some(replica_set_owner()), false, true),
        pod("report-x", Some(job), true, true),
        pod("bare", None, true, true),
    ];
    let r = rotation(&pods, settings(100, Duration::from_secs(600), 2)).await;
    r.api.put(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "report", "namespace": "shop", "uid": "job-uid"}, "spec": {}}));
    // A file-only object rotated: the file rotates in place.
    r.api
        .put(pod_status("checkout-1", &mounted("d1", "a1", "c2")));
    let rotated = mounted("d2", "a1", "c1");
    for name in ["not-opted", "report-x", "bare"] {
        r.api.put(pod_status(name, &rotated));
    }
    wait_for(
        || events(&r.api, "RotationNotRestarted").len() == 2,
        "the Events on the Job and the bare pod",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(requests(&r.api, "PATCH", "deployments").is_empty());
    assert!(r.api.requests().iter().all(|r| r.method != "PATCH"));
    let told: Vec<(String, String)> = events(&r.api, "RotationNotRestarted")
        .iter()
        .map(|e| {
            (
                e["involvedObject"]["kind"].as_str().unwrap().to_owned(),
                e["involvedObject"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(told.contains(&("Job".into(), "report".into())), "{told:?}");
    assert!(told.contains(&("Pod".into(), "bare".into())), "{told:?}");
    for (reason, count) in [
        ("file_only", 1.0),
        ("not_opted_in", 1.0),
        ("not_restartable", 2.0),
    ] {
        assert_eq!(
            metric(
                &r.metrics,
                &format!("kvinject_rotation_restarts_skipped_total{{reason=\"{reason}\"}}")
            ),
            count,
            "{reason}"
        );
    }
}

#[tokio::test]
async fn at_most_max_concurrent_workloads_roll_at_once() {
    let set_owner = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "db-uid", "controller": true});
    let pods = [
        pod("checkout-1", Some(replica_set_owner()), true, true),
        pod("db-0", Some(set_owner), true, true),
    ];
    let r = rotation(&pods, settings(100, Duration::from_secs(600), 1)).await;
    r.api.put(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "shop", "uid": "db-uid", "generation": 1},
        "spec": {"replicas": 1, "template": {"metadata": {"annotations": {"kvinject.io/restart-on-rotation": "true"}}}},
        "status": {"observedGeneration": 1, "updatedReplicas": 1, "currentRevision": "r1", "updateRevision": "r1"}}));
    let rotated = mounted("d2", "a1", "c1");
    r.api.put(pod_status("checkout-1", &rotated));
    wait_for(
        || restarted_at(&r.api, "deployments", "checkout").is_some(),
        "the Deployment's restart",
    )
    .await;
    r.api.put(pod_status("db-0", &rotated));
    // The Deployment's rollout is going (its new generation not observed): the StatefulSet waits.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(restarted_at(&r.api, "statefulsets", "db").is_none());
    assert_eq!(r.deferred("max_concurrent"), 1.0);
    // The controller finishes the rollout.
    let mut deployment = r.api.get("deployments", "shop", "checkout").unwrap();
    deployment["status"]["observedGeneration"] = deployment["metadata"]["generation"].clone();
    r.api.put(deployment);
    wait_for(
        || restarted_at(&r.api, "statefulsets", "db").is_some(),
        "the StatefulSet's restart",
    )
    .await;
}

#[tokio::test]
async fn a_change_outlives_a_lease_hand_over_and_a_new_holder_does_not_restart_again() {
    let pods = [
        pod("checkout-1", Some(replica_set_owner()), true, true),
        pod("checkout-2", Some(replica_set_owner()), true, true),
    ];
    let (a_leads, a_leading) = watch::channel(false);
    let r = rotation_with(&pods, settings(200, Duration::from_secs(600), 2), a_leading).await;
    let (b_leads, b_leading) = watch::channel(false);
    r.replica(
        settings(200, Duration::from_secs(600), 2),
        b_leading,
        SharedMetrics::default(),
    )
    .await;
    r.api.clear_requests();
    // Rotated while no replica holds the Lease (a hand-over): both gather the change.
    r.api
        .put(pod_status("checkout-1", &mounted("d2", "a1", "c1")));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(requests(&r.api, "PATCH", "deployments").is_empty());
    b_leads.send_replace(true);
    wait_for(
        || restarted_at(&r.api, "deployments", "checkout").is_some(),
        "the new holder's restart",
    )
    .await;
    // The Lease moves again; the other pod reports the same version late. The next holder had
    // gathered the first report too: the workload says it was restarted for that version.
    b_leads.send_replace(false);
    a_leads.send_replace(true);
    r.api
        .put(pod_status("checkout-2", &mounted("d2", "a1", "c1")));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(requests(&r.api, "PATCH", "deployments").len(), 1);
    assert_eq!(r.deferred("min_interval"), 0.0);
    let rotated = r.api.get("deployments", "shop", "checkout").unwrap()["metadata"]["annotations"]
        ["kvinject.io/rotated"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(rotated.len(), 12, "one 12-digit digest: {rotated}");
}

#[tokio::test]
async fn a_pod_recreated_under_its_name_is_a_first_sighting_not_a_rotation() {
    let set_owner = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "db-uid", "controller": true});
    let r = rotation(
        &[pod("db-0", Some(set_owner), true, true)],
        settings(100, Duration::from_secs(600), 2),
    )
    .await;
    r.api.put(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "shop", "uid": "db-uid", "generation": 1},
        "spec": {"replicas": 1, "template": {"metadata": {"annotations": {"kvinject.io/restart-on-rotation": "true"}}}}}));
    // The driver updates the status of the same name in place, for the new pod.
    let mut status = pod_status("db-0", &mounted("d2", "a1", "c1"));
    status["metadata"]["ownerReferences"][0]["uid"] = json!("db-0-second-uid");
    r.api.put(status);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(r.api.requests().iter().all(|r| r.method != "PATCH"));
}

#[tokio::test]
async fn a_workload_a_restart_would_not_roll_or_that_did_not_ask_is_told_or_left() {
    let set_owner = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "db-uid", "controller": true});
    let pods = [
        pod("checkout-1", Some(replica_set_owner()), true, true),
        pod("db-0", Some(set_owner), true, true),
    ];
    let r = rotation(&pods, settings(100, Duration::from_secs(600), 2)).await;
    r.api.put(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "shop", "uid": "db-uid", "generation": 1},
        "spec": {"replicas": 1, "updateStrategy": {"type": "OnDelete"},
            "template": {"metadata": {"annotations": {"kvinject.io/restart-on-rotation": "true"}}}}}));
    // The pod claims the opt-in; its Deployment's template does not.
    let mut deployment = r.api.get("deployments", "shop", "checkout").unwrap();
    deployment["spec"]["template"]["metadata"]["annotations"] = json!({});
    r.api.put(deployment);
    let rotated = mounted("d2", "a1", "c1");
    r.api.put(pod_status("checkout-1", &rotated));
    r.api.put(pod_status("db-0", &rotated));
    wait_for(
        || !events(&r.api, "RotationNotRestarted").is_empty(),
        "the OnDelete StatefulSet's Event",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(r.api.requests().iter().all(|r| r.method != "PATCH"));
    let told = events(&r.api, "RotationNotRestarted");
    assert_eq!(told.len(), 1);
    assert_eq!(told[0]["involvedObject"]["name"], "db");
    assert!(told[0]["message"].as_str().unwrap().contains("OnDelete"));
    assert_eq!(
        metric(
            &r.metrics,
            "kvinject_rotation_restarts_skipped_total{reason=\"not_opted_in\"}"
        ),
        1.0
    );
}

async fn uninjected_check(
    api: &ApiServer,
    evict: Option<Duration>,
) -> (UninjectedPods, SharedMetrics) {
    let cluster = start(api).await;
    let metrics = SharedMetrics::default();
    let events = EventWriter::new(cluster, "kvinject-0", metrics.clone());
    let settings = UninjectedSettings {
        never_injected: vec![
            "kube-system".into(),
            "kube-node-lease".into(),
            "kvinject".into(),
        ],
        eviction: evict.map(|interval| Eviction {
            interval,
            client: api.client_without_retries(),
        }),
    };
    (UninjectedPods::new(events, settings), metrics)
}

#[tokio::test]
async fn pods_without_injection_are_counted_and_told_once_each() {
    let api = ApiServer::start().await;
    seed(&api);
    api.put(pod("missed-1", Some(replica_set_owner()), false, false));
    api.put(pod("missed-2", None, false, false));
    api.put(pod("injected", Some(replica_set_owner()), false, true));
    let mut opted_out = pod("opted-out", None, false, false);
    opted_out["metadata"]["annotations"]["kvinject.io/inject"] = json!("false");
    api.put(opted_out);
    let mut nothing = pod("asks-nothing", None, false, false);
    nothing["metadata"]["annotations"] = json!({});
    api.put(nothing);
    let mut elsewhere = pod("not-opted-in", None, false, false);
    elsewhere["metadata"]["namespace"] = json!("legacy");
    api.put(elsewhere);
    let (mut check, metrics) = uninjected_check(&api, None).await;
    let first = check.pass().await;
    assert_eq!(first.by_namespace, [("shop".to_owned(), 2)].into());
    assert_eq!(first.told, 2);
    assert_eq!(first.evicted, None);
    let told = events(&api, "NotInjected");
    let names: Vec<&str> = told
        .iter()
        .map(|e| e["involvedObject"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(
        names.contains(&"missed-1") && names.contains(&"missed-2"),
        "{names:?}"
    );
    assert!(told.iter().all(|e| e["type"] == "Warning"));
    let message = told
        .iter()
        .find(|e| e["involvedObject"]["name"] == "missed-1")
        .unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("restart ReplicaSet/checkout-7d9f8c6b5"),
        "{message}"
    );
    assert_eq!(
        metric(&metrics, "kvinject_uninjected_pods{namespace=\"shop\"}"),
        2.0
    );
    // Told once: the next pass writes nothing; and a second replica writing the same Event gets
    // a conflict, not a duplicate.
    let second = check.pass().await;
    assert_eq!(second.told, 0);
    let (mut other_replica, _) = uninjected_check(&api, None).await;
    assert_eq!(
        other_replica.pass().await.told,
        2,
        "its writes conflict, counted as told"
    );
    assert_eq!(events(&api, "NotInjected").len(), 2);
    assert!(
        requests(&api, "POST", "eviction").is_empty(),
        "no eviction unless asked"
    );
    // The pod gone, the gauge follows.
    api.remove("pods", "shop", "missed-1");
    api.remove("pods", "shop", "missed-2");
    wait_for(|| check_is_empty(&api), "the pods' removal").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(check.pass().await.by_namespace.is_empty());
    assert!(!metrics.render().contains("kvinject_uninjected_pods{"));
}

fn check_is_empty(api: &ApiServer) -> bool {
    api.objects("pods").iter().all(|p| {
        !p["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("missed")
    })
}

#[tokio::test]
async fn evictions_are_rate_limited_respect_budgets_and_spare_bare_pods() {
    let api = ApiServer::start().await;
    seed(&api);
    api.put(pod("a-kept", Some(replica_set_owner()), false, false));
    api.put(pod("b-missed", Some(replica_set_owner()), false, false));
    api.put(pod("c-missed", Some(replica_set_owner()), false, false));
    api.put(pod("d-bare", None, false, false));
    api.keep_by_budget("shop", "a-kept");
    let (mut check, metrics) = uninjected_check(&api, Some(Duration::from_millis(600))).await;
    // The budget refuses the first; the interval holds the next.
    assert_eq!(check.pass().await.evicted, None);
    assert_eq!(check.pass().await.evicted, None);
    assert_eq!(requests(&api, "POST", "eviction").len(), 1);
    assert_eq!(
        metric(
            &metrics,
            "kvinject_uninjected_evictions_total{result=\"blocked\"}"
        ),
        1.0
    );
    tokio::time::sleep(Duration::from_millis(650)).await;
    let evicted = check.pass().await.evicted;
    assert_eq!(evicted, Some(("shop".to_owned(), "b-missed".to_owned())));
    assert_eq!(
        check.pass().await.evicted,
        None,
        "one eviction per interval"
    );
    tokio::time::sleep(Duration::from_millis(650)).await;
    assert_eq!(
        check.pass().await.evicted,
        Some(("shop".to_owned(), "c-missed".to_owned()))
    );
    tokio::time::sleep(Duration::from_millis(650)).await;
    assert_eq!(
        check.pass().await.evicted,
        None,
        "a bare pod is never evicted"
    );
    let evictions: Vec<String> = requests(&api, "POST", "eviction")
        .iter()
        .map(|r| r.path.clone())
        .collect();
    let body: Value = serde_json::from_str(&requests(&api, "POST", "eviction")[1].body).unwrap();
    assert_eq!(
        body["deleteOptions"]["preconditions"]["uid"], "b-missed-uid",
        "only the pod the cache saw"
    );
    assert_eq!(
        evictions,
        [
            "/api/v1/namespaces/shop/pods/a-kept/eviction",
            "/api/v1/namespaces/shop/pods/b-missed/eviction",
            "/api/v1/namespaces/shop/pods/c-missed/eviction",
        ]
    );
    assert_eq!(
        metric(
            &metrics,
            "kvinject_uninjected_evictions_total{result=\"evicted\"}"
        ),
        2.0
    );
    assert_eq!(events(&api, "EvictedNotInjected").len(), 2);
    assert!(api.get("pods", "shop", "a-kept").is_some());
    assert!(api.get("pods", "shop", "d-bare").is_some());
}

fn reviewer(cluster: &Cluster, metrics: &SharedMetrics) -> Reviewer {
    let events = EventWriter::new(cluster.clone(), "kvinject-0", metrics.clone());
    let (queue, writer) = DenialEvents::start(events);
    tokio::spawn(writer);
    Reviewer::live(
        cluster.clone(),
        Settings::new(None, None, "kvinject"),
        Limits::default(),
        Duration::from_secs(150),
    )
    .with_metrics(metrics.clone())
    .with_denial_events(Some(queue))
}

#[tokio::test]
async fn a_denied_replica_set_pod_gives_one_event_on_its_deployment() {
    let api = ApiServer::start().await;
    seed(&api);
    let cluster = start(&api).await;
    let metrics = SharedMetrics::default();
    let reviewer = reviewer(&cluster, &metrics);
    let denied = fixture("deny-env-conflict");
    for _ in 0..3 {
        let response = admit(&reviewer, "/mutate", &denied).await;
        assert_eq!(response["allowed"], false);
    }
    wait_for(|| !events(&api, "InjectionDenied").is_empty(), "the Event").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let told = events(&api, "InjectionDenied");
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["involvedObject"]["kind"], "Deployment");
    assert_eq!(told[0]["involvedObject"]["name"], "checkout");
    assert_eq!(told[0]["involvedObject"]["uid"], "deployment-uid");
    assert_eq!(told[0]["type"], "Warning");
    assert_eq!(told[0]["source"]["component"], "kvinject");
    let message = told[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("a pod of this workload was not admitted: kvinject: annotation kvinject.io/env.LOG_LEVEL"),
        "{message}"
    );
    assert_eq!(
        metric(
            &metrics,
            "kvinject_events_total{reason=\"InjectionDenied\",result=\"written\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn dry_runs_and_forged_owners_give_no_event() {
    let api = ApiServer::start().await;
    seed(&api);
    let cluster = start(&api).await;
    let metrics = SharedMetrics::default();
    let reviewer = reviewer(&cluster, &metrics);
    let mut dry = fixture("deny-env-conflict");
    dry["request"]["dryRun"] = json!(true);
    assert_eq!(admit(&reviewer, "/mutate", &dry).await["allowed"], false);
    // An ownerReference naming the ReplicaSet with another uid: another object than the real one.
    let mut forged = fixture("deny-env-conflict");
    forged["request"]["object"]["metadata"]["ownerReferences"][0]["uid"] = json!("forged-uid");
    assert_eq!(admit(&reviewer, "/mutate", &forged).await["allowed"], false);
    // A Deployment named directly by a pod (never so made by a controller) with a wrong uid.
    let mut direct = fixture("deny-env-conflict");
    direct["request"]["object"]["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1",
        "kind": "Deployment", "name": "checkout", "uid": "guessed", "controller": true}]);
    assert_eq!(admit(&reviewer, "/mutate", &direct).await["allowed"], false);
    wait_for(
        || {
            requests(&api, "GET", "replicasets").len() + requests(&api, "GET", "deployments").len()
                >= 2
        },
        "the owner reads",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        api.objects("events").is_empty(),
        "{:?}",
        api.objects("events")
    );
    assert!(
        requests(&api, "GET", "replicasets").len() == 1,
        "the dry run read nothing"
    );
}

/// The flags reach the features: `kvinject serve` with each feature off reads and writes nothing
/// for them; with each on, a rotation restarts, a pod without injection is told and evicted, and
/// a denial is told to its Deployment.
#[tokio::test]
async fn serve_runs_each_feature_only_when_its_flag_is_on() {
    let scenario = |api: &ApiServer| {
        seed(api);
        api.put(pod("checkout-1", Some(replica_set_owner()), true, true));
        api.put(pod_status("checkout-1", &V1));
        api.put(pod("missed-1", Some(replica_set_owner()), false, false));
    };
    let rotated = mounted("d2", "a1", "c1");
    let off = ApiServer::start().await;
    scenario(&off);
    // The interval would make the un-injected check run every 200 ms, were it on.
    let served = serve_against(&off, &["--eviction-interval", "200ms"]).await;
    wait_for(
        || {
            off.get("leases", "kvinject", "kvinject-collector")
                .is_some()
        },
        "the Lease",
    )
    .await;
    let answer = served.mutate(&fixture("deny-env-conflict")).await;
    assert_eq!(answer["response"]["allowed"], false);
    off.put(pod_status("checkout-1", &rotated));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let touched: Vec<String> = off
        .requests()
        .iter()
        .filter(|r| {
            [
                "events",
                "replicasets",
                "deployments",
                "secretproviderclasspodstatuses",
                "eviction",
            ]
            .iter()
            .any(|p| r.path.contains(p))
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(touched.is_empty(), "{touched:?}");
    drop(served);

    let on = ApiServer::start().await;
    scenario(&on);
    let served = serve_against(
        &on,
        &[
            "--rotation-restarts",
            "--rotation-debounce",
            "200ms",
            "--uninjected-pods",
            "--evict-uninjected",
            "--eviction-interval",
            "200ms",
            "--denial-events",
        ],
    )
    .await;
    wait_for(
        || on.get("leases", "kvinject", "kvinject-collector").is_some(),
        "the Lease",
    )
    .await;
    let answer = served.mutate(&fixture("deny-env-conflict")).await;
    assert_eq!(answer["response"]["allowed"], false);
    wait_for(
        || !events(&on, "InjectionDenied").is_empty(),
        "the denial Event",
    )
    .await;
    wait_for(
        || !events(&on, "NotInjected").is_empty(),
        "the NotInjected Event",
    )
    .await;
    wait_for(
        || on.get("pods", "shop", "missed-1").is_none(),
        "the eviction",
    )
    .await;
    // The status watch is up once the rotation follows it; then the version changes.
    wait_for(
        || {
            on.requests().iter().any(|r| {
                r.path.ends_with("/secretproviderclasspodstatuses") && r.param("watch").is_some()
            })
        },
        "the status watch",
    )
    .await;
    on.put(pod_status("checkout-1", &rotated));
    wait_for(
        || restarted_at(&on, "deployments", "checkout").is_some(),
        "the restart",
    )
    .await;
    wait_for(
        || events(&on, "SecretsRotated").len() == 1,
        "the restart's Event",
    )
    .await;
}

#[tokio::test]
async fn no_eviction_for_jobs_dangling_owners_or_a_controller_whose_pods_come_back_uninjected() {
    let api = ApiServer::start().await;
    seed(&api);
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "name": "report", "uid": "job-uid", "controller": true});
    api.put(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "report", "namespace": "shop", "uid": "job-uid"}, "spec": {}}));
    api.put(pod("a-job-pod", Some(job), false, false));
    let dangling = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "gone", "uid": "gone-uid", "controller": true});
    api.put(pod("b-dangling", Some(dangling), false, false));
    api.put(pod("c-missed", Some(replica_set_owner()), false, false));
    let (mut check, _) = uninjected_check(&api, Some(Duration::from_millis(1))).await;
    let mut evicted = Vec::new();
    for _ in 0..4 {
        evicted.extend(check.pass().await.evicted);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(evicted, [("shop".to_owned(), "c-missed".to_owned())]);
    // Its ReplicaSet recreates it, without injection again: the webhook is not called.
    api.put(pod(
        "c-missed-again",
        Some(replica_set_owner()),
        false,
        false,
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        assert_eq!(check.pass().await.evicted, None);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let paths: Vec<String> = requests(&api, "POST", "eviction")
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(paths, ["/api/v1/namespaces/shop/pods/c-missed/eviction"]);
}
