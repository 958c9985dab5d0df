//! kvinject against a Kubernetes API server double: caches and readiness, direct look-ups, SPC
//! writes before the answer, the collector and its Lease, workload validation and the identity
//! policy. Assertions are on the exact requests kvinject sends.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use kvinject::cluster::Cluster;
use kvinject::cluster::collector::Collector;
use kvinject::cluster::lease::LeaseLock;
use kvinject::core::plan::Settings;
use kvinject::lifecycle::readiness::Readiness;
use kvinject::webhook::listener::Limits;
use kvinject::webhook::{http, review::Reviewer};
use serde_json::{Value, json};
use support::apiserver::ApiServer;
use support::webhook::{admit, review as fixture};
use tower::ServiceExt;

const CLIENT: &str = "5e2c6f4a-9d1b-4c3e-8a7f-0b1c2d3e4f50";

fn seed(api: &ApiServer) {
    api.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop",
        "labels": {"kvinject.io/injection": "enabled"},
        "annotations": {"kvinject.io/vault": "shop-prod-kv", "kvinject.io/tenant-id": "72f988bf-86f1-41af-91ab-2d7cd011db47"}}}));
    api.put(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "checkout", "namespace": "shop",
        "annotations": {"azure.workload.identity/client-id": CLIENT}}}));
    api.put(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "shop"}}));
}

async fn start(api: &ApiServer) -> (Cluster, Arc<Readiness>) {
    let readiness = Arc::new(Readiness::default());
    let cluster = Cluster::start(api.client(), readiness.clone(), Duration::from_millis(500)).await;
    wait_for(|| readiness.check().is_ok(), "caches to sync").await;
    (cluster, readiness)
}

async fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn state(cluster: &Cluster) -> Reviewer {
    Reviewer::live(
        cluster.clone(),
        Settings::new(None, None, "kvinject"),
        Limits::default(),
        Duration::from_secs(150),
    )
}

fn spc_name_of(response: &Value) -> String {
    response["patch"].as_array().unwrap().last().unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn readiness_waits_for_every_cache_and_says_which() {
    let api = ApiServer::start().await;
    seed(&api);
    api.hold("secretproviderclasses");
    let readiness = Arc::new(Readiness::default());
    let _cluster =
        Cluster::start(api.client(), readiness.clone(), Duration::from_millis(500)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = http::health_router(readiness.clone(), Default::default(), None);
    let response = health
        .clone()
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let text = String::from_utf8(support::webhook::body_bytes(response.into_body()).await).unwrap();
    assert_eq!(text, "not ready: waiting for: secretproviderclasses\n");
    api.release("secretproviderclasses");
    wait_for(|| readiness.check().is_ok(), "ready").await;
    let response = health
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    readiness.stop();
    assert_eq!(readiness.check(), Err("shutting down".to_owned()));
}

#[tokio::test]
async fn caches_use_metadata_only_watches_and_see_every_pod() {
    let api = ApiServer::start().await;
    seed(&api);
    let _ = start(&api).await;
    let requests = api.requests();
    let pods = requests
        .iter()
        .find(|r| r.path == "/api/v1/pods")
        .expect("pods are listed");
    // Every pod: a pod's labels can change after admission, its use of the SPC does not.
    assert_eq!(pods.param("labelSelector"), None);
    for path in [
        "/api/v1/namespaces",
        "/api/v1/serviceaccounts",
        "/apis/secrets-store.csi.x-k8s.io/v1/secretproviderclasses",
        "/apis/aadpodidentity.k8s.io/v1/azureidentitybindings",
    ] {
        assert!(
            requests
                .iter()
                .any(|r| r.path == path && r.param("watch").as_deref() == Some("true")),
            "{path} is watched"
        );
    }
}

/// `metadata` as the API server returns it: with `managedFields`, a
/// `last-applied-configuration` annotation and labels kvinject never reads.
fn as_served(mut object: Value) -> Value {
    let applied = object.to_string();
    let metadata = object["metadata"].as_object_mut().unwrap();
    metadata.insert(
        "managedFields".into(),
        json!([{"manager": "kubectl-client-side-apply",
        "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:annotations": {".": {}}, "f:labels": {".": {}}}}}]),
    );
    metadata.insert(
        "ownerReferences".into(),
        json!([{"apiVersion": "v1", "kind": "Thing",
        "name": "owner", "uid": "u-1"}]),
    );
    let labels = metadata.entry("labels").or_insert(json!({}));
    labels["app.kubernetes.io/part-of"] = json!("storefront");
    let annotations = metadata.entry("annotations").or_insert(json!({}));
    annotations["kubectl.kubernetes.io/last-applied-configuration"] = json!(applied);
    object
}

#[tokio::test]
async fn caches_read_paged_metadata_keep_what_kvinject_reads_and_follow_changes() {
    use kvinject::core::facts::{ClusterFacts, NamespaceFacts};
    let api = ApiServer::start().await;
    api.put(as_served(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop",
        "labels": {"kvinject.io/injection": "enabled"},
        "annotations": {"kvinject.io/vault": "shop-prod-kv", "kvinject.io/allowed-vaults": "shop-prod-kv, shared-kv"}}})));
    // More ServiceAccounts than one page holds.
    let accounts = 2 * kvinject::cluster::caches::LIST_PAGE_SIZE as usize + 50;
    for i in 0..accounts {
        api.put(as_served(
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
            "name": format!("app-{i:03}"), "namespace": "shop",
            "annotations": {"azure.workload.identity/client-id": format!("client-{i}")}}}),
        ));
    }
    let pod = |name: &str, marker: Option<&str>| {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
            "spec": {"containers": [{"name": "app", "image": "shop/app:1"}]}});
        if let Some(marker) = marker {
            pod["metadata"]["annotations"] = json!({"kvinject.io/injected": marker});
        }
        as_served(pod)
    };
    api.put(pod("marked", Some("kvinject-00000000000000000001")));
    api.put(pod("plain", None));
    let (cluster, _) = start(&api).await;

    // Namespaces, ServiceAccounts and pods are listed metadata-only, in pages.
    let requests = api.requests();
    for path in [
        "/api/v1/namespaces",
        "/api/v1/serviceaccounts",
        "/api/v1/pods",
    ] {
        let list = requests
            .iter()
            .find(|r| r.path == path && r.param("watch").is_none())
            .unwrap_or_else(|| panic!("{path} is listed"));
        assert!(
            list.accept.contains("PartialObjectMetadataList"),
            "{list:?}"
        );
        assert_eq!(list.param("limit").as_deref(), Some("100"), "{list:?}");
    }
    let pages = requests
        .iter()
        .filter(|r| r.path == "/api/v1/serviceaccounts" && r.param("watch").is_none())
        .filter(|r| r.param("continue").is_some())
        .count();
    assert_eq!(pages, 2, "{accounts} ServiceAccounts in pages of 100");

    // Every answer survives the cut.
    assert_eq!(
        cluster.namespace("shop"),
        Some(NamespaceFacts {
            injection_enabled: true,
            vault: Some("shop-prod-kv".into()),
            tenant_id: None,
            allowed_vaults: Some(vec!["shop-prod-kv".into(), "shared-kv".into()]),
        })
    );
    for i in [0, accounts - 1] {
        let account = cluster.service_account("shop", &format!("app-{i:03}"));
        assert_eq!(account.unwrap().client_id, Some(format!("client-{i}")));
    }
    let sizes: std::collections::BTreeMap<_, _> = cluster.cache_sizes().into_iter().collect();
    assert_eq!(sizes["serviceaccounts"], accounts);
    assert_eq!(sizes["pods"], 1, "only pods with a marker are kept");
    let referenced = [(
        "shop".to_owned(),
        "kvinject-00000000000000000001".to_owned(),
    )];
    assert_eq!(cluster.referenced_spcs(), referenced.into());

    // Changes follow: a marker appears, another goes, a ServiceAccount goes.
    api.put(pod("plain", Some("kvinject-00000000000000000002")));
    api.put(pod("marked", None));
    api.remove("serviceaccounts", "shop", "app-000");
    wait_for(
        || cluster.service_account("shop", "app-000").is_none(),
        "the deletion",
    )
    .await;
    wait_for(
        || {
            cluster.referenced_spcs()
                == [(
                    "shop".to_owned(),
                    "kvinject-00000000000000000002".to_owned(),
                )]
                .into()
        },
        "the markers to follow the pods",
    )
    .await;
}

#[tokio::test]
async fn the_double_pages_lists_as_the_api_server_does() {
    let api = ApiServer::start().await;
    seed(&api);
    let get = |query: String| {
        let url = format!("{}/api/v1/serviceaccounts?{query}", api.url);
        async move {
            let response = reqwest::get(url).await.unwrap();
            let status = response.status().as_u16();
            let body = response.bytes().await.unwrap();
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    let (status, first) = get("limit=1".into()).await;
    assert_eq!(status, 200);
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let token = first["metadata"]["continue"].as_str().unwrap().to_owned();
    let (_, rest) = get(format!("limit=1&continue={token}")).await;
    assert_eq!(rest["items"][0]["metadata"]["name"], "default");
    assert!(rest["metadata"].get("continue").is_none(), "the last page");
    assert_eq!(get("continue=zz".into()).await.0, 400);
    api.compact();
    assert_eq!(get(format!("limit=1&continue={token}")).await.0, 410);
}

#[tokio::test]
async fn a_compacted_watch_relists_and_misses_nothing() {
    let api = ApiServer::start().await;
    seed(&api);
    let (cluster, _) = start(&api).await;
    api.clear_requests();
    api.compact();
    api.put(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "after-compaction", "namespace": "shop"}}));
    let relisted = || {
        api.requests()
            .iter()
            .any(|r| r.path == "/api/v1/serviceaccounts" && r.param("watch").is_none())
    };
    wait_for(relisted, "410 Gone to make the watcher list again").await;
    use kvinject::core::facts::ClusterFacts;
    wait_for(
        || {
            cluster
                .service_account("shop", "after-compaction")
                .is_some()
        },
        "the object written after compaction",
    )
    .await;
    let resumed = api
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/v1/serviceaccounts" && r.param("watch").is_some())
        .expect("the watch resumed");
    assert!(
        resumed.param("resourceVersion").is_some_and(|rv| rv != "0"),
        "resumed from its last version: {resumed:?}"
    );
}

#[tokio::test]
async fn the_spc_is_applied_before_the_answer_and_not_again() {
    let api = ApiServer::start().await;
    seed(&api);
    let (cluster, _) = start(&api).await;
    let state = state(&cluster);
    api.clear_requests();
    let response = admit(&state, "/mutate", &fixture("patch-workload-identity")).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(
        response.get("warnings").is_none(),
        "no warning: the SPC exists: {response}"
    );
    let name = spc_name_of(&response);
    let writes = api.writes_and_gets();
    assert_eq!(writes.len(), 1, "exactly one request: {writes:?}");
    let apply = &writes[0];
    assert_eq!(apply.method, "PATCH");
    assert_eq!(
        apply.path,
        format!("/apis/secrets-store.csi.x-k8s.io/v1/namespaces/shop/secretproviderclasses/{name}")
    );
    assert_eq!(apply.content_type, "application/apply-patch+yaml");
    assert_eq!(apply.param("fieldManager").as_deref(), Some("kvinject"));
    assert_eq!(
        apply.param("force"),
        None,
        "never forced over an SPC the cache does not show as ours"
    );
    // Kept for the oracle suite, which validates it against the upstream CRD schema.
    std::fs::write(
        format!("{}/applied-spc.json", env!("CARGO_TARGET_TMPDIR")),
        &apply.body,
    )
    .unwrap();
    let stored = api
        .get("secretproviderclasses", "shop", &name)
        .expect("SPC written");
    assert_eq!(
        stored["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "kvinject"
    );
    assert!(stored["metadata"]["annotations"]["kvinject.io/last-used"].is_string());

    // Once the cache has it, the same pod costs no request at all.
    wait_for(|| cluster_has(&cluster, &name), "the SPC in the cache").await;
    api.clear_requests();
    let again = admit(&state, "/mutate", &fixture("patch-workload-identity")).await;
    assert_eq!(again["allowed"], true);
    assert_eq!(
        api.writes_and_gets().len(),
        0,
        "{:?}",
        api.writes_and_gets()
    );
}

#[tokio::test]
async fn a_remembered_answer_is_given_only_while_its_facts_hold() {
    use kvinject::core::facts::ClusterFacts;
    let api = ApiServer::start().await;
    seed(&api);
    let (cluster, _) = start(&api).await;
    let state = state(&cluster);
    let lookups = |state: &Reviewer, result: &str| {
        let line = format!("kvinject_plan_cache_lookups_total{{result=\"{result}\"}} ");
        let metrics = state.metrics().render();
        let count = metrics.lines().find_map(|l| l.strip_prefix(line.as_str()));
        count.map(|c| c.parse::<u64>().unwrap())
    };
    let review = fixture("patch-workload-identity");
    let first = admit(&state, "/mutate", &review).await;
    // The first plan asked for its SPC and heard of none; once the cache has the SPC it wrote,
    // the next pod is planned again, and the one after is answered as remembered.
    let name = spc_name_of(&first);
    wait_for(|| cluster_has(&cluster, &name), "the SPC in the cache").await;
    let second = admit(&state, "/mutate", &review).await;
    assert_eq!(
        (lookups(&state, "miss"), lookups(&state, "stale")),
        (Some(1), Some(1))
    );
    assert_eq!(second["patch"], first["patch"]);
    let mut again_review = review.clone();
    again_review["request"]["uid"] = json!("another-uid");
    let again = admit(&state, "/mutate", &again_review).await;
    assert_eq!(again["uid"], "another-uid");
    assert_eq!(
        (&again["patch"], &again["allowed"]),
        (&first["patch"], &first["allowed"])
    );
    assert_eq!(lookups(&state, "hit"), Some(1));

    // The ServiceAccount now names another client: the SPC (named by its spec) is another one,
    // as a server that never remembered anything answers.
    let other = "0b1c2d3e-4f50-4c3e-8a7f-5e2c6f4a9d1b";
    api.put(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "checkout", "namespace": "shop",
        "annotations": {"azure.workload.identity/client-id": other}}}));
    let changed = || {
        cluster
            .service_account("shop", "checkout")
            .is_some_and(|sa| sa.client_id.as_deref() == Some(other))
    };
    wait_for(changed, "the changed ServiceAccount in the cache").await;
    let changed = admit(&state, "/mutate", &review).await;
    assert_eq!(lookups(&state, "stale"), Some(2));
    assert_ne!(spc_name_of(&changed), spc_name_of(&first), "{changed}");
    let planned = admit(&state.clone().with_plan_memo(0), "/mutate", &review).await;
    assert_eq!(changed["patch"], planned["patch"]);
}

#[tokio::test]
async fn the_caches_compare_a_held_fact_in_place_as_its_copy_would_be() {
    use kvinject::core::facts::ClusterFacts;
    let api = ApiServer::start().await;
    seed(&api);
    api.put(
        json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "hand", "namespace": "shop"},
        "spec": {"provider": "azure", "parameters": {"clientID": CLIENT}}}),
    );
    let (cluster, _) = start(&api).await;
    wait_for(|| cluster_has(&cluster, "hand"), "the SPC in the cache").await;

    let namespace = cluster.namespace("shop");
    let mut other_namespace = namespace.clone().unwrap();
    other_namespace.vault = Some("another-kv".into());
    assert!(cluster.namespace_is("shop", namespace.as_ref()));
    assert!(!cluster.namespace_is("shop", Some(&other_namespace)));
    assert!(!cluster.namespace_is("shop", None));
    assert!(cluster.namespace_is("gone", None));
    assert!(!cluster.namespace_is("gone", namespace.as_ref()));

    let account = cluster.service_account("shop", "checkout");
    let mut other_account = account.clone().unwrap();
    other_account.client_id = None;
    assert!(cluster.service_account_is("shop", "checkout", account.as_ref()));
    assert!(!cluster.service_account_is("shop", "checkout", Some(&other_account)));
    assert!(!cluster.service_account_is("shop", "checkout", None));
    assert!(cluster.service_account_is("shop", "gone", None));
    assert!(!cluster.service_account_is("shop", "gone", account.as_ref()));

    let spc = cluster.secret_provider_class("shop", "hand");
    let mut other_spc = spc.clone().unwrap();
    other_spc.vault = Some("another-kv".into());
    assert!(cluster.secret_provider_class_is("shop", "hand", spc.as_ref()));
    assert!(!cluster.secret_provider_class_is("shop", "hand", Some(&other_spc)));
    assert!(!cluster.secret_provider_class_is("shop", "hand", None));
    assert!(cluster.secret_provider_class_is("other", "hand", None));
    assert!(!cluster.secret_provider_class_is("other", "hand", spc.as_ref()));
    assert!(cluster.secret_provider_class_is("shop", "gone", None));
    assert!(!cluster.secret_provider_class_is("shop", "gone", spc.as_ref()));
}

#[tokio::test]
async fn a_pod_of_two_vaults_has_both_spcs_applied_before_the_answer() {
    let api = ApiServer::start().await;
    seed(&api);
    let (cluster, _) = start(&api).await;
    let state = state(&cluster);
    api.clear_requests();
    let response = admit(&state, "/mutate", &fixture("patch-two-vaults")).await;
    assert_eq!(response["allowed"], true, "{response}");
    let marker = spc_name_of(&response);
    let names: Vec<&str> = marker.split(',').collect();
    assert_eq!(names.len(), 2, "{marker}");
    let applies: Vec<String> = api
        .writes_and_gets()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.path)
        .collect();
    for (name, vault) in names.iter().zip(["shop-prod-kv", "platform-kv"]) {
        let path = format!(
            "/apis/secrets-store.csi.x-k8s.io/v1/namespaces/shop/secretproviderclasses/{name}"
        );
        assert!(applies.contains(&path), "{name} applied: {applies:?}");
        let stored = api.get("secretproviderclasses", "shop", name).unwrap();
        assert_eq!(stored["spec"]["parameters"]["keyvaultName"], vault);
    }
    assert_eq!(applies.len(), 2, "{applies:?}");

    // Either write failing denies the pod, naming the SPC that could not be written.
    wait_for(|| cluster_has(&cluster, names[0]), "the first SPC cached").await;
    api.remove("secretproviderclasses", "shop", names[1]);
    wait_for(|| !cluster_has(&cluster, names[1]), "the removal seen").await;
    api.fail_next(
        "PATCH",
        "secretproviderclasses",
        500,
        "etcdserver: request timed out",
    );
    let denied = admit(&state, "/mutate", &fixture("patch-two-vaults")).await;
    assert_eq!(denied["allowed"], false, "{denied}");
    let message = denied["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("could not write SecretProviderClass {}", names[1]))
            && message.contains("request timed out"),
        "{message}"
    );
}

#[tokio::test]
async fn a_tls_secret_another_spc_in_use_fills_from_another_certificate_is_refused() {
    let api = ApiServer::start().await;
    seed(&api);
    let other = "kvinject-00112233445566778899";
    api.put(json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": other, "namespace": "shop",
            "labels": {"app.kubernetes.io/managed-by": "kvinject"}},
        "spec": {"provider": "azure", "parameters": {"keyvaultName": "shop-prod-kv",
            "objects": "array:\n  - |\n    objectName: \"old-cert\"\n    objectType: \"secret\"\n    objectAlias: \"shop-tls.pem\"\n"},
            "secretObjects": [{"secretName": "shop-tls", "type": "kubernetes.io/tls", "data": [
                {"objectName": "shop-tls.pem", "key": "tls.key"}, {"objectName": "shop-tls.pem", "key": "tls.crt"}]}]}}));
    let (cluster, _) = start(&api).await;
    let state = state(&cluster);
    // No pod mounts it: it syncs nothing and only waits for the collector.
    let unused = admit(&state, "/mutate", &fixture("patch-tls-secret")).await;
    assert_eq!(unused["allowed"], true, "{unused}");

    api.put(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "old", "namespace": "shop",
        "annotations": {"kvinject.io/injected": other}}, "spec": {}}),
    );
    wait_for(
        || {
            cluster
                .referenced_spcs()
                .iter()
                .any(|(_, name)| name == other)
        },
        "the pod in the cache",
    )
    .await;
    api.clear_requests();
    let response = admit(&state, "/mutate", &fixture("patch-tls-secret")).await;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("annotation kvinject.io/tls-secret.shop-tls")
            && message.contains("synced from certificate shop-prod-kv/old-cert")
            && message.contains(other),
        "{message}"
    );
    assert!(
        api.writes_and_gets().is_empty(),
        "{:?}",
        api.writes_and_gets()
    );
}

fn cluster_has(cluster: &Cluster, name: &str) -> bool {
    use kvinject::core::facts::ClusterFacts;
    cluster.secret_provider_class("shop", name).is_some()
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let api = ApiServer::start().await;
    seed(&api);
    let (cluster, _) = start(&api).await;
    api.clear_requests();
    let response = admit(&state(&cluster), "/mutate", &fixture("patch-dry-run")).await;
    assert_eq!(response["allowed"], true);
    assert!(
        response["patch"].is_array(),
        "same answer as without dryRun"
    );
    assert!(
        api.writes_and_gets().is_empty(),
        "{:?}",
        api.writes_and_gets()
    );
}

#[tokio::test]
async fn a_failed_apply_denies_the_pod_with_the_api_server_reason() {
    let api = ApiServer::start().await;
    seed(&api);
    let (cluster, _) = start(&api).await;
    api.fail_next("PATCH", "secretproviderclasses", 403, "secretproviderclasses is forbidden: User \"system:serviceaccount:kvinject:kvinject\" cannot patch");
    let response = admit(
        &state(&cluster),
        "/mutate",
        &fixture("patch-workload-identity"),
    )
    .await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("kvinject: could not write SecretProviderClass kvinject-"),
        "{message}"
    );
    assert!(message.contains("cannot patch"), "{message}");
    assert!(
        response.get("patch").is_none() && response.get("patchType").is_none(),
        "{response}"
    );
}

#[tokio::test]
async fn fields_another_manager_added_are_gone_after_one_admission() {
    let api = ApiServer::start().await;
    seed(&api);
    let (cluster, _) = start(&api).await;
    let state = state(&cluster);
    let name = spc_name_of(&admit(&state, "/mutate", &fixture("patch-workload-identity")).await);
    let generated = api.get("secretproviderclasses", "shop", &name).unwrap();
    // Someone adds a parameter that would make the provider mount with the node's identity.
    let mut drifted = generated.clone();
    drifted["spec"]["parameters"]["useVMManagedIdentity"] = json!("true");
    api.put(drifted.clone());
    wait_for(
        || {
            cluster.generated_spcs().iter().any(|(_, _, s)| {
                s.spec_digest == kvinject::core::spc::spec_digest(&drifted["spec"])
            })
        },
        "drift seen",
    )
    .await;
    assert_eq!(
        admit(&state, "/mutate", &fixture("patch-workload-identity")).await["allowed"],
        true
    );
    let now = api.get("secretproviderclasses", "shop", &name).unwrap();
    assert_eq!(
        now["spec"], generated["spec"],
        "exactly what kvinject generates"
    );
    assert!(
        now["spec"]["parameters"]
            .get("useVMManagedIdentity")
            .is_none()
    );
}

#[tokio::test]
async fn a_review_for_a_namespace_not_opted_in_writes_nothing_and_gets_no_patch() {
    let api = ApiServer::start().await;
    seed(&api);
    api.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "quiet",
        "annotations": {"kvinject.io/vault": "shop-prod-kv", "kvinject.io/tenant-id": "72f988bf-86f1-41af-91ab-2d7cd011db47"}}}));
    api.put(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "checkout", "namespace": "quiet",
        "annotations": {"azure.workload.identity/client-id": CLIENT}}}));
    let (cluster, _) = start(&api).await;
    let state = state(&cluster);
    // A forged review: the webhook's namespaceSelector would never send this one.
    let mut forged = fixture("patch-workload-identity");
    forged["request"]["namespace"] = json!("quiet");
    forged["request"]["object"]["metadata"]["namespace"] = json!("quiet");
    api.clear_requests();
    let response = admit(&state, "/mutate", &forged).await;
    assert_eq!(response["allowed"], false);
    assert!(response.get("patch").is_none());
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "kvinject: namespace quiet is not labelled kvinject.io/injection: enabled"
        ),
        "{message}"
    );
    let requests = api.writes_and_gets();
    assert!(
        requests.iter().all(|r| r.method == "GET"),
        "nothing written: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.path.ends_with("/namespaces/quiet")),
        "one direct read before denying: {requests:?}"
    );
    assert!(api.get("secretproviderclasses", "quiet", "x").is_none());
    // A flood of them costs the API server one read per recheck period, not one per review.
    api.clear_requests();
    for _ in 0..20 {
        assert_eq!(admit(&state, "/mutate", &forged).await["allowed"], false);
    }
    assert!(api.writes_and_gets().is_empty(), "no more reads");

    // Labelled a moment ago, before the cache saw it: the direct read admits it.
    api.put_unseen(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "quiet",
        "labels": {"kvinject.io/injection": "enabled"},
        "annotations": {"kvinject.io/vault": "shop-prod-kv", "kvinject.io/tenant-id": "72f988bf-86f1-41af-91ab-2d7cd011db47"}}}));
    let rechecking = Reviewer::live(
        cluster.clone(),
        Settings::new(None, None, "kvinject"),
        Limits {
            namespace_recheck: Duration::ZERO,
            ..Limits::default()
        },
        Duration::from_secs(150),
    );
    let response = admit(&rechecking, "/mutate", &forged).await;
    assert_eq!(response["allowed"], true, "{response}");
}

#[tokio::test]
async fn a_namespace_holds_at_most_the_cap_of_generated_spcs() {
    let api = ApiServer::start().await;
    seed(&api);
    let (cluster, _) = start(&api).await;
    let capped = Reviewer::live(
        cluster.clone(),
        Settings::new(None, None, "kvinject"),
        Limits {
            max_spcs_per_namespace: 1,
            ..Limits::default()
        },
        Duration::from_secs(150),
    );
    let first = fixture("patch-workload-identity");
    let name = spc_name_of(&admit(&capped, "/mutate", &first).await);
    wait_for(|| cluster.generated_spcs().len() == 1, "first SPC cached").await;
    // The same SPC again is fine; a second, different one is over the cap.
    assert_eq!(admit(&capped, "/mutate", &first).await["allowed"], true);
    let mut other = first.clone();
    other["request"]["object"]["metadata"]["annotations"]["kvinject.io/env.OTHER"] =
        json!("other-secret");
    api.clear_requests();
    let response = admit(&capped, "/mutate", &other).await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("already holds 1 SecretProviderClasses generated by kvinject and this pod needs 1 more, over the limit of 1 (--max-spcs-per-namespace)"), "{message}");
    assert!(api.writes_and_gets().iter().all(|r| r.method == "GET"));
    assert!(api.get("secretproviderclasses", "shop", &name).is_some());
}

#[tokio::test]
async fn a_write_that_would_outlast_the_webhook_timeout_is_cut_short_and_denied_with_why() {
    let api = ApiServer::start().await;
    seed(&api);
    let (cluster, _) = start(&api).await;
    let state = state(&cluster);
    // The API server allows this webhook 2 s; the SPC write would take 4.
    api.delay_next("PATCH", "secretproviderclasses", Duration::from_secs(4));
    let response = admit(
        &state,
        "/mutate?timeout=2s",
        &fixture("patch-workload-identity"),
    )
    .await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("the time left within the webhook's timeout"),
        "{message}"
    );
}

#[tokio::test]
async fn a_hand_edited_spc_is_restored_and_a_foreign_one_never_overwritten() {
    let api = ApiServer::start().await;
    seed(&api);
    let (cluster, _) = start(&api).await;
    let state = state(&cluster);
    let name = spc_name_of(&admit(&state, "/mutate", &fixture("patch-workload-identity")).await);
    let mut edited = api.get("secretproviderclasses", "shop", &name).unwrap();
    let original_spec = edited["spec"].clone();
    edited["spec"]["parameters"]["keyvaultName"] = json!("someone-elses-kv");
    api.put(edited);
    wait_for(
        || {
            cluster
                .generated_spcs()
                .iter()
                .any(|(_, _, s)| s.facts.vault.as_deref() == Some("someone-elses-kv"))
        },
        "edit seen",
    )
    .await;
    api.clear_requests();
    assert_eq!(
        admit(&state, "/mutate", &fixture("patch-workload-identity")).await["allowed"],
        true
    );
    // Replaced whole, conditioned on the version the cache saw: not an apply, which would
    // leave other managers' fields in place.
    let replaced = api
        .writes_and_gets()
        .into_iter()
        .find(|r| r.method == "PUT")
        .expect("replaced");
    assert!(
        replaced
            .path
            .ends_with(&format!("/namespaces/shop/secretproviderclasses/{name}"))
    );
    assert_eq!(
        api.get("secretproviderclasses", "shop", &name).unwrap()["spec"],
        original_spec
    );

    // Same name, not kvinject's label: a conflict, denied, nothing written.
    let mut foreign = api.get("secretproviderclasses", "shop", &name).unwrap();
    foreign["metadata"]["labels"] = json!({});
    api.put(foreign);
    wait_for(|| cluster.generated_spcs().is_empty(), "label removal seen").await;
    api.clear_requests();
    let response = admit(&state, "/mutate", &fixture("patch-workload-identity")).await;
    assert_eq!(response["allowed"], false);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("is not labelled app.kubernetes.io/managed-by: kvinject")
    );
    assert!(api.writes_and_gets().iter().all(|r| r.method != "PATCH"));
}

#[tokio::test]
async fn a_fact_created_a_moment_ago_is_looked_up_once() {
    let api = ApiServer::start().await;
    seed(&api);
    let (cluster, _) = start(&api).await;
    let state = state(&cluster);
    // A ServiceAccount the caches have not seen yet.
    let mut review = fixture("patch-workload-identity");
    review["request"]["object"]["spec"]["serviceAccountName"] = json!("fresh");
    api.put_unseen(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "fresh", "namespace": "shop",
        "annotations": {"azure.workload.identity/client-id": CLIENT}}}));
    api.clear_requests();
    let response = admit(&state, "/mutate", &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    let gets: Vec<_> = api
        .writes_and_gets()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(
        gets[0].path,
        "/api/v1/namespaces/shop/serviceaccounts/fresh"
    );

    // Truly absent: still denied, after one look-up.
    review["request"]["object"]["spec"]["serviceAccountName"] = json!("ghost");
    api.clear_requests();
    let response = admit(&state, "/mutate", &review).await;
    assert_eq!(response["allowed"], false);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("ServiceAccount ghost does not exist")
    );
    assert_eq!(
        api.writes_and_gets()
            .iter()
            .filter(|r| r.method == "GET")
            .count(),
        1
    );
}

#[tokio::test]
async fn without_the_aad_pod_identity_api_the_denial_says_so() {
    let api = ApiServer::start().await;
    seed(&api);
    api.set_bindings_api(false);
    let (cluster, _) = start(&api).await;
    let response = admit(
        &state(&cluster),
        "/mutate",
        &fixture("patch-aad-pod-identity"),
    )
    .await;
    assert_eq!(response["allowed"], false);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("AAD Pod Identity is not installed in this cluster"),
        "{response}"
    );
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.path.ends_with("/azureidentitybindings")),
        "no watch on an API that is not served"
    );
}

#[tokio::test]
async fn aad_pod_identity_installed_after_kvinject_started_is_watched_from_then_on() {
    use kvinject::core::facts::ClusterFacts;
    let api = ApiServer::start().await;
    seed(&api);
    api.set_bindings_api(false);
    let readiness = Arc::new(Readiness::default());
    let cluster = Cluster::start_with(
        api.client(),
        readiness.clone(),
        Duration::from_millis(500),
        Duration::from_millis(100),
    )
    .await;
    wait_for(|| readiness.check().is_ok(), "caches to sync").await;
    assert!(!cluster.identity_bindings_available());
    api.set_bindings_api(true);
    api.put(
        json!({"apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
        "metadata": {"name": "late", "namespace": "ops"},
        "spec": {"azureIdentity": "id", "selector": "late"}}),
    );
    wait_for(
        || !cluster.identity_bindings(None, "late").is_empty(),
        "the binding API discovered and its cache filled",
    )
    .await;
    assert!(cluster.identity_bindings_available());
    assert!(
        readiness.check().is_ok(),
        "a late cache never makes kvinject unready"
    );
}

#[tokio::test]
async fn the_collector_deletes_only_unreferenced_expired_kvinject_spcs() {
    let api = ApiServer::start().await;
    seed(&api);
    let spc = |name: &str, labelled: bool, last_used: &str| {
        let mut spc = json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
            "metadata": {"name": name, "namespace": "shop", "annotations": {"kvinject.io/last-used": last_used}},
            "spec": {"provider": "azure", "parameters": {}}});
        if labelled {
            spc["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "kvinject"});
        }
        spc
    };
    let long_ago = "2026-01-01T00:00:00Z";
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    api.put(spc("kvinject-unused0001", true, long_ago));
    api.put(spc("kvinject-inuse00002", true, long_ago));
    api.put(spc("kvinject-usednow003", true, &now));
    api.put(spc("kvinject-foreign004", false, long_ago));
    api.put(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop",
        "labels": {"kvinject.io/inject": "true"}, "annotations": {"kvinject.io/injected": "kvinject-inuse00002,kvinject-second006"}}, "spec": {}}));
    // The second SPC of a pod of two vaults is as much in use as the first.
    api.put(spc("kvinject-second006", true, long_ago));
    // A pod whose label was removed after admission still mounts its SPC.
    api.put(spc("kvinject-relabel005", true, long_ago));
    api.put(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q", "namespace": "shop",
        "labels": {"app": "q"}, "annotations": {"kvinject.io/injected": "kvinject-relabel005"}}, "spec": {}}));
    let (cluster, _) = start(&api).await;
    let mut collector = Collector::new(cluster.clone(), Duration::from_millis(300));
    let first = collector.pass().await;
    assert!(
        first.deleted.is_empty(),
        "nothing within the grace period: {first:?}"
    );
    assert_eq!(first.waiting, 2);
    tokio::time::sleep(Duration::from_millis(350)).await;
    // An admission marks usednow003 used again just before the pass.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    api.put(spc("kvinject-usednow003", true, &now));
    wait_for(
        || {
            cluster
                .generated_spcs()
                .iter()
                .any(|(_, _, s)| s.last_used.is_some_and(|t| t.to_string() == now))
        },
        "the refreshed mark in the cache",
    )
    .await;
    api.clear_requests();
    let second = collector.pass().await;
    assert_eq!(
        second.deleted,
        vec![("shop".to_owned(), "kvinject-unused0001".to_owned())]
    );
    let deletes: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(
        deletes[0].path,
        "/apis/secrets-store.csi.x-k8s.io/v1/namespaces/shop/secretproviderclasses/kvinject-unused0001"
    );
    let options: Value = serde_json::from_str(&deletes[0].body).unwrap();
    assert!(
        options["preconditions"]["resourceVersion"].is_string(),
        "delete is conditioned: {options}"
    );
    for kept in [
        "kvinject-inuse00002",
        "kvinject-second006",
        "kvinject-usednow003",
        "kvinject-foreign004",
        "kvinject-relabel005",
    ] {
        assert!(
            api.get("secretproviderclasses", "shop", kept).is_some(),
            "{kept} kept"
        );
    }

    // A pod that stops referencing an SPC starts its clock; a new reference stops it.
    api.remove("pods", "shop", "p");
    api.remove("pods", "shop", "q");
    wait_for(|| cluster.referenced_spcs().is_empty(), "pod deletion seen").await;
    let pass = collector.pass().await;
    assert!(pass.deleted.is_empty(), "a fresh grace period: {pass:?}");
}

#[tokio::test]
async fn nothing_is_collected_before_the_pod_cache_has_synced() {
    let api = ApiServer::start().await;
    seed(&api);
    api.put(
        json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "kvinject-inuse00001", "namespace": "shop",
            "labels": {"app.kubernetes.io/managed-by": "kvinject"},
            "annotations": {"kvinject.io/last-used": "2026-01-01T00:00:00Z"}},
        "spec": {"provider": "azure", "parameters": {}}}),
    );
    api.put(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop",
        "annotations": {"kvinject.io/injected": "kvinject-inuse00001"}}, "spec": {}}),
    );
    // The pod list does not answer yet: an empty pod cache would show the SPC unused.
    api.hold("pods");
    let readiness = Arc::new(Readiness::default());
    let cluster = Cluster::start(api.client(), readiness, Duration::from_millis(500)).await;
    wait_for(|| !cluster.generated_spcs().is_empty(), "the SPC cache").await;
    let mut collector = Collector::new(cluster.clone(), Duration::ZERO);
    for _ in 0..2 {
        assert_eq!(collector.pass().await, Default::default());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!cluster.markers_synced());
    api.release("pods");
    wait_for(|| cluster.markers_synced(), "the pod cache").await;
    let pass = collector.pass().await;
    assert!(pass.deleted.is_empty(), "in use: {pass:?}");
    assert!(
        api.get("secretproviderclasses", "shop", "kvinject-inuse00001")
            .is_some()
    );
    assert!(api.requests().iter().all(|r| r.method != "DELETE"));
}

#[tokio::test]
async fn one_collector_at_a_time_and_a_hand_over_when_the_holder_stops() {
    let api = ApiServer::start().await;
    let a = LeaseLock::new(
        api.client(),
        "kvinject",
        "kvinject-collector",
        "replica-a",
        Duration::from_secs(1),
    );
    let b = LeaseLock::new(
        api.client(),
        "kvinject",
        "kvinject-collector",
        "replica-b",
        Duration::from_secs(1),
    );
    assert!(
        a.acquire_or_renew().await.unwrap(),
        "a takes the free Lease"
    );
    assert!(
        !b.acquire_or_renew().await.unwrap(),
        "b waits while a holds it"
    );
    assert!(a.acquire_or_renew().await.unwrap(), "a renews");
    let lease = api.get("leases", "kvinject", "kvinject-collector").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 1);
    // a stops renewing (its replica died); after the duration b takes over.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        b.acquire_or_renew().await.unwrap(),
        "b takes the expired Lease"
    );
    let lease = api.get("leases", "kvinject", "kvinject-collector").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert!(
        !a.acquire_or_renew().await.unwrap(),
        "a, back, does not steal it"
    );
    let writes: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert_eq!(writes[0].method, "POST");
    assert!(writes[1..].iter().all(|r| r.method == "PUT"), "{writes:?}");
    for put in &writes[1..] {
        let body: Value = serde_json::from_str(&put.body).unwrap();
        assert!(
            body["metadata"]["resourceVersion"].is_string(),
            "optimistic concurrency: {body}"
        );
    }
}

#[tokio::test]
async fn two_replicas_racing_for_the_lease_never_both_hold_it() {
    let api = ApiServer::start().await;
    let locks: Vec<_> = (0..4)
        .map(|i| {
            LeaseLock::new(
                api.client(),
                "kvinject",
                "race",
                &format!("r{i}"),
                Duration::from_secs(30),
            )
        })
        .collect();
    let results = futures_util::future::join_all(locks.iter().map(|l| l.acquire_or_renew())).await;
    let holders = results.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(holders, 1);
}

fn workload_review(
    annotations: Value,
    metadata_annotations: Value,
    labels: Value,
    operation: &str,
) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "w-1", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"}, "namespace": "shop", "name": "api",
        "operation": operation, "userInfo": {"username": "alice"},
        "object": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "namespace": "shop", "annotations": metadata_annotations},
            "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {"metadata": {"labels": labels, "annotations": annotations},
                "spec": {"serviceAccountName": "checkout", "containers": [{"name": "app", "image": "x"}]}}}}}})
}

#[tokio::test]
async fn workloads_are_validated_never_patched() {
    let api = ApiServer::start().await;
    seed(&api);
    let (cluster, _) = start(&api).await;
    let state = state(&cluster);
    let labels = json!({"app": "api", "kvinject.io/inject": "true"});
    api.clear_requests();
    for operation in ["CREATE", "UPDATE"] {
        let bad = workload_review(
            json!({"kvinject.io/env.DB": "secret/../x"}),
            json!({}),
            labels.clone(),
            operation,
        );
        let response = admit(&state, "/validate-workloads", &bad).await;
        assert_eq!(response["allowed"], false, "{operation}");
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "kvinject: Deployment.spec.template api: annotation kvinject.io/env.DB"
            ),
            "{message}"
        );
    }
    let good = workload_review(
        json!({"kvinject.io/env.DB": "db"}),
        json!({}),
        labels.clone(),
        "CREATE",
    );
    let response = admit(&state, "/validate-workloads", &good).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "validation never patches");
    assert!(
        api.writes_and_gets().is_empty(),
        "validation writes nothing: {:?}",
        api.writes_and_gets()
    );

    let misplaced = workload_review(
        json!({}),
        json!({"kvinject.io/env.DB": "db"}),
        json!({"app": "api"}),
        "CREATE",
    );
    let warnings = admit(&state, "/validate-workloads", &misplaced).await["warnings"].clone();
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("on the Deployment's own metadata have no effect"),
        "{warnings}"
    );
    let unlabelled = workload_review(
        json!({"kvinject.io/env.DB": "db"}),
        json!({}),
        json!({"app": "api"}),
        "CREATE",
    );
    let warnings = admit(&state, "/validate-workloads", &unlabelled).await["warnings"].clone();
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("not the label kvinject.io/inject: \"true\""),
        "{warnings}"
    );

    // A ServiceAccount applied after the Deployment is not an error yet: a warning.
    let mut early = good.clone();
    early["request"]["object"]["spec"]["template"]["spec"]["serviceAccountName"] = json!("later");
    let response = admit(&state, "/validate-workloads", &early).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .contains("checked again when its pods are created")
    );
}

fn legacy_pod_review(service_account: &str, operation: &str) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "p-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "shop",
        "operation": operation, "userInfo": {"username": "alice"},
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "thief", "namespace": "shop",
            "labels": {"aadpodidbinding": "payments"}},
            "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "x"}]}}}})
}

#[tokio::test]
async fn the_identity_policy_allows_listed_service_accounts_only() {
    let api = ApiServer::start().await;
    seed(&api);
    api.put(
        json!({"apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
        "metadata": {"name": "payments-binding", "namespace": "shop",
            "annotations": {"kvinject.io/allowed-service-accounts": "payments, payments-batch"}},
        "spec": {"azureIdentity": "payments-identity", "selector": "payments"}}),
    );
    let (cluster, _) = start(&api).await;
    let state = state(&cluster);
    for operation in ["CREATE", "UPDATE"] {
        let response = admit(
            &state,
            "/validate-pod-identity",
            &legacy_pod_review("checkout", operation),
        )
        .await;
        assert_eq!(response["allowed"], false, "{operation}");
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("claims AzureIdentityBinding shop/payments-binding"),
            "{message}"
        );
        assert!(
            message.contains("[payments, payments-batch]")
                && message.contains("ServiceAccount shop/checkout"),
            "{message}"
        );
    }
    let response = admit(
        &state,
        "/validate-pod-identity",
        &legacy_pod_review("payments-batch", "CREATE"),
    )
    .await;
    assert_eq!(response["allowed"], true);
    // A binding without the annotation has not opted in.
    api.put(json!({"apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
        "metadata": {"name": "open-binding", "namespace": "shop"}, "spec": {"azureIdentity": "open", "selector": "open"}}));
    wait_for(
        || {
            use kvinject::core::facts::ClusterFacts;
            !cluster.identity_bindings(Some("shop"), "open").is_empty()
        },
        "binding",
    )
    .await;
    let mut open = legacy_pod_review("checkout", "CREATE");
    open["request"]["object"]["metadata"]["labels"]["aadpodidbinding"] = json!("open");
    assert_eq!(
        admit(&state, "/validate-pod-identity", &open).await["allowed"],
        true
    );
}

#[tokio::test]
async fn serve_runs_against_the_cluster_with_a_kubeconfig() {
    let api = ApiServer::start().await;
    seed(&api);
    let mut served = support::webhook::serve_against(&api, &[]).await;
    // The collector took the Lease in kvinject's namespace under this replica's name.
    wait_for(
        || {
            api.get("leases", "kvinject", "kvinject-collector")
                .is_some()
        },
        "the collector Lease",
    )
    .await;
    assert_eq!(
        api.get("leases", "kvinject", "kvinject-collector").unwrap()["spec"]["holderIdentity"],
        "replica-x"
    );
    served.child.kill().await.unwrap();
}

#[test]
fn serve_without_facts_or_a_cluster_refuses_to_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let certs = kvinject::certs::generate("kvinject", "kvinject", 30, 7).unwrap();
    kvinject::certs::write(dir.path(), &certs).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kvinject"))
        .args([
            "serve",
            "--tls-cert-file",
            dir.path().join("tls.crt").to_str().unwrap(),
        ])
        .args([
            "--tls-key-file",
            dir.path().join("tls.key").to_str().unwrap(),
        ])
        .args(["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
        .env("KUBECONFIG", dir.path().join("absent"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach the cluster"), "{stderr}");
    assert!(stderr.contains("--facts FILE"), "{stderr}");
}

/// Every metric the chart's PrometheusRule and Grafana dashboard name is one a replica in a
/// cluster exports, read from its /metrics after a few admissions.
#[tokio::test]
async fn the_alerts_and_the_dashboard_name_only_exported_metrics() {
    let api = ApiServer::start().await;
    seed(&api);
    // A labelled pod that was not injected: the Lease holder's check counts it.
    api.put(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "missed", "namespace": "shop",
        "labels": {"kvinject.io/inject": "true"}, "annotations": {"kvinject.io/env.A": "a"}}, "spec": {}}));
    let (cluster, readiness) = start(&api).await;
    let metrics = kvinject::webhook::metrics::SharedMetrics::default();
    let events = kvinject::cluster::events::EventWriter::new(cluster.clone(), "x", metrics.clone());
    let settings = kvinject::cluster::uninjected::UninjectedSettings {
        never_injected: Vec::new(),
        eviction: None,
    };
    let mut uninjected = kvinject::cluster::uninjected::UninjectedPods::new(events, settings);
    assert_eq!(uninjected.pass().await.by_namespace.len(), 1);
    let state = state(&cluster).with_metrics(metrics.clone());
    admit(&state, "/mutate", &fixture("patch-workload-identity")).await;
    admit(&state, "/mutate", &fixture("deny-env-conflict")).await;
    let refused = http::admission_router(state.clone())
        .oneshot(
            Request::post("/mutate")
                .header("content-type", "application/json")
                .body(Body::from("not json"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let scrape = http::health_router(readiness, metrics, Some(cluster))
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(support::webhook::body_bytes(scrape.into_body()).await).unwrap();
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap())
        .collect();
    let mut named = std::collections::BTreeSet::new();
    for file in [
        "charts/kvinject/templates/prometheusrule.yaml",
        "charts/kvinject/dashboards/kvinject.json",
    ] {
        let source = std::fs::read_to_string(file).unwrap();
        for (at, _) in source.match_indices("kvinject_") {
            let name: String = source[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            assert!(
                exported.contains(name.as_str()),
                "{file} names {name}, which is not exported:\n{text}"
            );
            named.insert(name);
        }
    }
    assert!(named.len() >= 12, "{named:?}");
}
