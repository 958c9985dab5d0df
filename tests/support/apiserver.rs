//! An in-process Kubernetes API server double: the real REST paths and verbs kvinject uses, over
//! plain HTTP on loopback. List and watch (resourceVersion, bookmarks, 410 for a compacted
//! version, metadata-only lists, pages of `limit` with `continue` tokens), get, create, replace
//! with optimistic concurrency, server-side apply (`application/apply-patch+yaml`, fieldManager,
//! force, dryRun), delete with preconditions. Every request is recorded so tests can assert
//! exactly what kvinject sent.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

/// One request as kvinject sent it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub accept: String,
    pub body: String,
}

impl Recorded {
    pub fn param(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| v.replace("%2F", "/").replace("%3D", "="))
        })
    }
}

#[derive(Clone)]
struct Resource {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
}

const RESOURCES: [Resource; 17] = [
    Resource {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
    },
    Resource {
        group: "admissionregistration.k8s.io",
        version: "v1",
        plural: "mutatingwebhookconfigurations",
        kind: "MutatingWebhookConfiguration",
        namespaced: false,
    },
    Resource {
        group: "admissionregistration.k8s.io",
        version: "v1",
        plural: "validatingwebhookconfigurations",
        kind: "ValidatingWebhookConfiguration",
        namespaced: false,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
    },
    Resource {
        group: "secrets-store.csi.x-k8s.io",
        version: "v1",
        plural: "secretproviderclasses",
        kind: "SecretProviderClass",
        namespaced: true,
    },
    Resource {
        group: "aadpodidentity.k8s.io",
        version: "v1",
        plural: "azureidentitybindings",
        kind: "AzureIdentityBinding",
        namespaced: true,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        kind: "ReplicaSet",
        namespaced: true,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        kind: "StatefulSet",
        namespaced: true,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        kind: "DaemonSet",
        namespaced: true,
    },
    Resource {
        group: "batch",
        version: "v1",
        plural: "jobs",
        kind: "Job",
        namespaced: true,
    },
    Resource {
        group: "batch",
        version: "v1",
        plural: "cronjobs",
        kind: "CronJob",
        namespaced: true,
    },
    Resource {
        group: "secrets-store.csi.x-k8s.io",
        version: "v1",
        plural: "secretproviderclasspodstatuses",
        kind: "SecretProviderClassPodStatus",
        namespaced: true,
    },
];

impl Resource {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

type Key = (String, String, String); // plural, namespace, name

#[derive(Clone)]
struct Event {
    rv: u64,
    plural: String,
    kind: &'static str,
    object: Value,
}

struct Inner {
    objects: BTreeMap<Key, Value>,
    owners: BTreeMap<Key, String>,
    rv: u64,
    compacted: u64,
    history: Vec<Event>,
    requests: Vec<Recorded>,
    failures: Vec<(String, String, u16, String)>,
    delays: Vec<(String, String, Duration)>,
    bindings_api: bool,
    /// Pods (namespace, name) a PodDisruptionBudget keeps: their eviction is refused (429).
    disruption_budgets: Vec<(String, String)>,
}

/// The double; clones share state.
#[derive(Clone)]
pub struct ApiServer {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<Event>,
    held: Arc<watch::Sender<Vec<String>>>,
    disconnect: Arc<watch::Sender<u64>>,
    pub url: String,
}

impl ApiServer {
    /// Starts the double on a loopback port.
    pub async fn start() -> Self {
        let (events, _) = broadcast::channel(1024);
        let (held, _) = watch::channel(Vec::new());
        let (disconnect, _) = watch::channel(0);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = Self {
            inner: Arc::new(Mutex::new(Inner {
                objects: BTreeMap::new(),
                owners: BTreeMap::new(),
                rv: 100,
                compacted: 0,
                history: Vec::new(),
                requests: Vec::new(),
                failures: Vec::new(),
                delays: Vec::new(),
                bindings_api: true,
                disruption_budgets: Vec::new(),
            })),
            events,
            held: Arc::new(held),
            disconnect: Arc::new(disconnect),
            url,
        };
        let app = Router::new().fallback(dispatch).with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        server
    }

    /// A kube client for the double.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// A kube client for the double that does not retry 429, 503 and 504 by itself.
    pub fn client_without_retries(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().unwrap());
        config.default_retry = false;
        kube::Client::try_from(config).unwrap()
    }

    /// Whether the AzureIdentityBinding API is served (AAD Pod Identity installed).
    pub fn set_bindings_api(&self, served: bool) {
        self.inner.lock().unwrap().bindings_api = served;
    }

    /// A PodDisruptionBudget keeps the pod: its eviction is refused with 429, as the API server
    /// refuses one that would break a budget.
    pub fn keep_by_budget(&self, namespace: &str, name: &str) {
        self.inner
            .lock()
            .unwrap()
            .disruption_budgets
            .push((namespace.into(), name.into()));
    }

    /// Stored objects of `plural`, in key order.
    pub fn objects(&self, plural: &str) -> Vec<Value> {
        self.inner
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|((p, _, _), _)| p == plural)
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Lists of `plural` wait until [`ApiServer::release`].
    pub fn hold(&self, plural: &str) {
        self.held.send_modify(|held| held.push(plural.to_owned()));
    }

    pub fn release(&self, plural: &str) {
        self.held.send_modify(|held| held.retain(|p| p != plural));
    }

    /// Stores an object as another client would (manager `kubectl`), and tells watchers.
    pub fn put(&self, object: Value) {
        self.store(object, "kubectl", true);
    }

    /// Stores an object without telling watchers: a write the caches have not seen yet.
    pub fn put_unseen(&self, object: Value) {
        self.store(object, "kubectl", false);
    }

    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.inner
            .lock()
            .unwrap()
            .objects
            .get(&(plural.into(), namespace.into(), name.into()))
            .cloned()
    }

    pub fn remove(&self, plural: &str, namespace: &str, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(mut object) =
            inner
                .objects
                .remove(&(plural.into(), namespace.into(), name.into()))
        {
            // As the API server does, the deletion is a new resourceVersion.
            inner.rv += 1;
            object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
            self.emit(&mut inner, plural, "DELETED", object);
        }
    }

    /// Compacts history and ends every open watch: a watch resumed from before now gets 410 Gone.
    pub fn compact(&self) {
        {
            let mut inner = self.inner.lock().unwrap();
            inner.compacted = inner.rv + 1;
            inner.history.clear();
        }
        self.disconnect.send_modify(|generation| *generation += 1);
    }

    /// The next `method` request on `plural` fails with `code` and `message`.
    pub fn fail_next(&self, method: &str, plural: &str, code: u16, message: &str) {
        self.inner.lock().unwrap().failures.push((
            method.into(),
            plural.into(),
            code,
            message.into(),
        ));
    }

    /// The next `method` request on `plural` is answered only after `delay` (a slow API server).
    pub fn delay_next(&self, method: &str, plural: &str, delay: Duration) {
        self.inner
            .lock()
            .unwrap()
            .delays
            .push((method.into(), plural.into(), delay));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Requests other than list/watch (the caches' own traffic).
    pub fn writes_and_gets(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| {
                !(r.method == "GET" && (r.param("watch").is_some() || is_collection(&r.path)))
            })
            .collect()
    }

    pub fn clear_requests(&self) {
        self.inner.lock().unwrap().requests.clear();
    }

    fn store(&self, mut object: Value, manager: &str, announce: bool) {
        let resource = resource_for_kind(object["kind"].as_str().unwrap()).unwrap();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let key = (resource.plural.to_owned(), namespace, name);
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        let existed = inner.objects.contains_key(&key);
        stamp(&mut object, rv, inner.objects.get(&key));
        inner.objects.insert(key.clone(), object.clone());
        inner.owners.insert(key, manager.to_owned());
        if announce {
            self.emit(
                &mut inner,
                resource.plural,
                if existed { "MODIFIED" } else { "ADDED" },
                object,
            );
        }
    }

    fn emit(&self, inner: &mut Inner, plural: &str, kind: &'static str, object: Value) {
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(inner.rv);
        let event = Event {
            rv,
            plural: plural.to_owned(),
            kind,
            object,
        };
        inner.history.push(event.clone());
        let _ = self.events.send(event);
    }
}

fn stamp(object: &mut Value, rv: u64, previous: Option<&Value>) {
    let metadata = object["metadata"].as_object_mut().unwrap();
    metadata.insert("resourceVersion".into(), json!(rv.to_string()));
    // The stored uid; else one the test chose; else a new one.
    let uid = previous
        .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_owned))
        .or_else(|| {
            metadata
                .get("uid")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("uid-{rv}"));
    metadata.insert("uid".into(), json!(uid));
    metadata
        .entry("creationTimestamp")
        .or_insert(json!("2026-11-28T10:00:00Z"));
}

fn resource_for_kind(kind: &str) -> Option<Resource> {
    RESOURCES.iter().find(|r| r.kind == kind).cloned()
}

fn is_collection(path: &str) -> bool {
    parse_path(path).is_some_and(|(_, _, name)| name.is_none())
}

/// (resource, namespace, name) from a REST path.
fn parse_path(path: &str) -> Option<(Resource, Option<String>, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match parts.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    let (group, version) = match parts.as_slice() {
        ["api", "v1", ..] => ("", "v1"),
        ["apis", group, version, ..] => (*group, *version),
        _ => return None,
    };
    let find = |plural: &str| {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    };
    match rest {
        ["namespaces", ns, plural] => Some((find(plural)?, Some((*ns).to_owned()), None)),
        ["namespaces", ns, plural, name] => Some((
            find(plural)?,
            Some((*ns).to_owned()),
            Some((*name).to_owned()),
        )),
        [plural] => Some((find(plural)?, None, None)),
        [plural, name] if find(plural).is_some_and(|r| !r.namespaced) => {
            Some((find(plural)?, None, Some((*name).to_owned())))
        }
        _ => None,
    }
}

/// (namespace, pod) of a pod's eviction subresource path.
fn eviction_of(path: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", name, "eviction"] => {
            Some(((*ns).to_owned(), (*name).to_owned()))
        }
        _ => None,
    }
}

/// The Eviction API: the pod is deleted unless a disruption budget keeps it (429).
fn evict(server: &ApiServer, namespace: &str, name: &str, body: &[u8]) -> Response {
    let key = ("pods".to_owned(), namespace.to_owned(), name.to_owned());
    let eviction: Value = serde_json::from_slice(body).unwrap_or(json!({}));
    let kept = {
        let inner = server.inner.lock().unwrap();
        let Some(pod) = inner.objects.get(&key) else {
            return status(404, "NotFound", &format!("pods \"{name}\" not found"));
        };
        let uid = &eviction["deleteOptions"]["preconditions"]["uid"];
        if !uid.is_null() && *uid != pod["metadata"]["uid"] {
            return status(409, "Conflict", "Precondition failed: UID in precondition");
        }
        inner
            .disruption_budgets
            .iter()
            .any(|(ns, n)| ns == namespace && n == name)
    };
    if kept {
        return status(
            429,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
        );
    }
    server.remove("pods", namespace, name);
    ok(
        StatusCode::CREATED,
        &json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 201}),
    )
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message});
    (
        StatusCode::from_u16(code).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn query_map(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.replace("%2F", "/")
                    .replace("%3D", "=")
                    .replace("%2C", ","),
            )
        })
        .collect()
}

fn matches_selector(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| match term.split_once('=') {
        Some((k, v)) => object["metadata"]["labels"][k] == v,
        None => object["metadata"]["labels"].get(term).is_some(),
    })
}

fn metadata_only(object: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": object["metadata"]})
}

async fn dispatch(State(server): State<ApiServer>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let header_text = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let content_type = header_text(header::CONTENT_TYPE);
    let accept = header_text(header::ACCEPT);
    server.inner.lock().unwrap().requests.push(Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        content_type: content_type.clone(),
        accept: accept.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if path == "/apis/aadpodidentity.k8s.io/v1" {
        return if server.inner.lock().unwrap().bindings_api {
            ok(
                StatusCode::OK,
                &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "aadpodidentity.k8s.io/v1",
                "resources": [{"name": "azureidentitybindings", "singularName": "azureidentitybinding", "namespaced": true,
                    "kind": "AzureIdentityBinding", "verbs": ["get", "list", "watch"]}]}),
            )
        } else {
            status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        };
    }
    if let (&Method::POST, Some((namespace, name))) = (&parts.method, eviction_of(&path)) {
        return evict(&server, &namespace, &name, &body);
    }
    let Some((resource, namespace, name)) = parse_path(&path) else {
        return status(404, "NotFound", &format!("no route {path}"));
    };
    if resource.plural == "azureidentitybindings" && !server.inner.lock().unwrap().bindings_api {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    }
    let delay = {
        let mut inner = server.inner.lock().unwrap();
        let i = inner
            .delays
            .iter()
            .position(|(m, p, _)| *m == parts.method.as_str() && p == resource.plural);
        i.map(|i| inner.delays.remove(i).2)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    {
        let mut inner = server.inner.lock().unwrap();
        if let Some(i) = inner
            .failures
            .iter()
            .position(|(m, p, ..)| *m == parts.method.as_str() && p == resource.plural)
        {
            let (_, _, code, message) = inner.failures.remove(i);
            return status(code, "Injected", &message);
        }
    }
    let params = query_map(&query);
    let metadata_list = accept.contains("PartialObjectMetadata");
    match (&parts.method, name) {
        (&Method::GET, None) => {
            let mut held = server.held.subscribe();
            let _ = held
                .wait_for(|held| !held.iter().any(|p| p == resource.plural))
                .await;
            if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
                watch_stream(server, resource, namespace, params, metadata_list)
            } else {
                list(
                    &server,
                    &resource,
                    namespace.as_deref(),
                    &params,
                    metadata_list,
                )
            }
        }
        (&Method::GET, Some(name)) => {
            let key = (
                resource.plural.to_owned(),
                namespace.unwrap_or_default(),
                name.clone(),
            );
            match server.inner.lock().unwrap().objects.get(&key) {
                Some(object) => ok(StatusCode::OK, object),
                None => status(
                    404,
                    "NotFound",
                    &format!("{} \"{name}\" not found", resource.plural),
                ),
            }
        }
        (&Method::POST, None) => {
            let mut object: Value = serde_json::from_slice(&body).unwrap();
            object["apiVersion"] = json!(resource.api_version());
            object["kind"] = json!(resource.kind);
            if let Some(ns) = &namespace {
                object["metadata"]["namespace"] = json!(ns);
            }
            let name = object["metadata"]["name"].as_str().unwrap().to_owned();
            let key = (
                resource.plural.to_owned(),
                namespace.unwrap_or_default(),
                name.clone(),
            );
            if server.inner.lock().unwrap().objects.contains_key(&key) {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("{} \"{name}\" already exists", resource.plural),
                );
            }
            server.store(object, "kvinject", true);
            ok(
                StatusCode::CREATED,
                &server.inner.lock().unwrap().objects[&key],
            )
        }
        (&Method::PUT, Some(name)) => {
            let mut object: Value = serde_json::from_slice(&body).unwrap();
            let key = (
                resource.plural.to_owned(),
                namespace.clone().unwrap_or_default(),
                name.clone(),
            );
            let current = server.inner.lock().unwrap().objects.get(&key).cloned();
            let Some(current) = current else {
                return status(404, "NotFound", "not found");
            };
            if object["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                return status(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again",
                );
            }
            object["apiVersion"] = json!(resource.api_version());
            object["kind"] = json!(resource.kind);
            server.store(object, "kvinject", true);
            ok(StatusCode::OK, &server.inner.lock().unwrap().objects[&key])
        }
        (&Method::PATCH, Some(name)) => apply(
            &server,
            &resource,
            namespace.unwrap_or_default(),
            name,
            &params,
            &content_type,
            &body,
        ),
        (&Method::DELETE, Some(name)) => {
            let key = (
                resource.plural.to_owned(),
                namespace.clone().unwrap_or_default(),
                name.clone(),
            );
            let options: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
            let current = server.inner.lock().unwrap().objects.get(&key).cloned();
            let Some(current) = current else {
                return status(404, "NotFound", "not found");
            };
            for field in ["resourceVersion", "uid"] {
                let wanted = &options["preconditions"][field];
                if !wanted.is_null() && *wanted != current["metadata"][field] {
                    return status(409, "Conflict", &format!("Precondition failed: {field}"));
                }
            }
            server.remove(resource.plural, &key.1, &key.2);
            ok(StatusCode::OK, &current)
        }
        _ => status(405, "MethodNotAllowed", "method not allowed"),
    }
}

fn list(
    server: &ApiServer,
    resource: &Resource,
    namespace: Option<&str>,
    params: &BTreeMap<String, String>,
    metadata: bool,
) -> Response {
    let inner = server.inner.lock().unwrap();
    // Paged as the API server pages: at most `limit` items, then a `continue` token while more
    // remain. Every page reports the first page's resourceVersion, so a watch from it replays
    // whatever changed while the pages were read.
    // As the API server: a token from before a compaction is expired (410), a malformed one a
    // bad request (400).
    let (rv, after) = match params.get("continue").map(|t| Continue::decode(t)) {
        None => (inner.rv, None),
        Some(None) => return status(400, "BadRequest", "invalid continue token"),
        Some(Some(token)) if token.rv < inner.compacted => {
            return status(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result.",
            );
        }
        Some(Some(token)) => (token.rv, Some((token.namespace, token.name))),
    };
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let mut matching = inner
        .objects
        .iter()
        .filter(|((plural, ns, _), _)| {
            plural == resource.plural && namespace.is_none_or(|n| n == ns)
        })
        .filter(|((_, ns, name), _)| {
            after
                .as_ref()
                .is_none_or(|(a_ns, a_name)| (ns, name) > (a_ns, a_name))
        })
        .filter(|(_, o)| matches_selector(o, params.get("labelSelector")));
    let mut items = Vec::new();
    let mut last = None;
    for ((_, ns, name), o) in matching.by_ref().take(limit) {
        items.push(if metadata {
            metadata_only(o)
        } else {
            o.clone()
        });
        last = Some((ns.clone(), name.clone()));
    }
    let more = matching.next().is_some();
    let mut list_metadata = json!({"resourceVersion": rv.to_string()});
    if let (true, Some((namespace, name))) = (more, last) {
        list_metadata["continue"] = json!(
            Continue {
                rv,
                namespace,
                name
            }
            .encode()
        );
    }
    let (api_version, kind) = if metadata {
        (
            "meta.k8s.io/v1".to_owned(),
            "PartialObjectMetadataList".to_owned(),
        )
    } else {
        (resource.api_version(), format!("{}List", resource.kind))
    };
    ok(
        StatusCode::OK,
        &json!({"apiVersion": api_version, "kind": kind, "metadata": list_metadata, "items": items}),
    )
}

/// A list's continue token: the first page's resourceVersion and the last key given, hex-encoded
/// so the query needs no escaping.
struct Continue {
    rv: u64,
    namespace: String,
    name: String,
}

impl Continue {
    fn encode(&self) -> String {
        let text = format!("{}/{}/{}", self.rv, self.namespace, self.name);
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    fn decode(token: &str) -> Option<Self> {
        let bytes = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let text = String::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(3, '/');
        Some(Self {
            rv: parts.next()?.parse().ok()?,
            namespace: parts.next()?.to_owned(),
            name: parts.next()?.to_owned(),
        })
    }
}

fn watch_stream(
    server: ApiServer,
    resource: Resource,
    namespace: Option<String>,
    params: BTreeMap<String, String>,
    metadata: bool,
) -> Response {
    let from: u64 = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = Duration::from_secs(
        params
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(290)
            .min(30),
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let mut live = server.events.subscribe();
    let mut disconnect = server.disconnect.subscribe();
    let (backlog, compacted, current) = {
        let inner = server.inner.lock().unwrap();
        (
            inner
                .history
                .iter()
                .filter(|e| e.rv > from)
                .cloned()
                .collect::<Vec<_>>(),
            inner.compacted,
            inner.rv,
        )
    };
    let selector = params.get("labelSelector").cloned();
    let wanted = move |event: &Event| {
        event.plural == resource.plural
            && namespace
                .as_deref()
                .is_none_or(|ns| event.object["metadata"]["namespace"] == ns)
            && matches_selector(&event.object, selector.as_ref())
    };
    let frame = move |event: &Event| {
        let object = if metadata {
            metadata_only(&event.object)
        } else {
            event.object.clone()
        };
        Bytes::from(format!(
            "{}\n",
            json!({"type": event.kind, "object": object})
        ))
    };
    let bookmark_kind = if metadata {
        (
            "meta.k8s.io/v1".to_owned(),
            "PartialObjectMetadata".to_owned(),
        )
    } else {
        (resource.api_version(), resource.kind.to_owned())
    };
    tokio::spawn(async move {
        if from != 0 && from < compacted {
            let gone = json!({"type": "ERROR", "object": {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 410, "reason": "Expired", "message": format!("too old resource version: {from} ({compacted})")}});
            let _ = tx.send(Bytes::from(format!("{gone}\n"))).await;
            return;
        }
        let mut last = from.max(current);
        for event in backlog.iter().filter(|e| wanted(e)) {
            last = last.max(event.rv);
            if tx.send(frame(event)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                biased;
                _ = disconnect.changed() => return,
                event = live.recv() => match event {
                    Ok(event) if event.rv > from && wanted(&event) => {
                        last = last.max(event.rv);
                        if tx.send(frame(&event)).await.is_err() { return; }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                _ = ticker.tick(), if bookmarks => {
                    let bookmark = json!({"type": "BOOKMARK", "object": {"apiVersion": bookmark_kind.0, "kind": bookmark_kind.1, "metadata": {"resourceVersion": last.to_string()}}});
                    if tx.send(Bytes::from(format!("{bookmark}\n"))).await.is_err() { return; }
                }
                () = &mut deadline => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Server-side apply, simplified to what kvinject relies on: create when absent; conflict when
/// another manager owns the object and `force` is not set; otherwise the applied fields win.
fn apply(
    server: &ApiServer,
    resource: &Resource,
    namespace: String,
    name: String,
    params: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Response {
    if content_type == "application/strategic-merge-patch+json" {
        return strategic_merge(server, resource, namespace, name, body);
    }
    if content_type != "application/apply-patch+yaml" {
        return status(
            415,
            "UnsupportedMediaType",
            &format!("only server-side apply is served, not {content_type}"),
        );
    }
    let Some(manager) = params.get("fieldManager") else {
        return status(422, "Invalid", "fieldManager is required for apply patch");
    };
    let mut object: Value = serde_json::from_slice(body).unwrap();
    let key = (resource.plural.to_owned(), namespace, name);
    let (current, owner) = {
        let inner = server.inner.lock().unwrap();
        (
            inner.objects.get(&key).cloned(),
            inner.owners.get(&key).cloned(),
        )
    };
    let force = params.get("force").is_some_and(|f| f == "true");
    if let (Some(current), Some(owner)) = (&current, &owner)
        && owner != manager
        && !force
        && current["spec"] != object["spec"]
    {
        return status(
            409,
            "Conflict",
            &format!("Apply failed with 1 conflict: conflict with \"{owner}\": .spec"),
        );
    }
    if let (Some(current), Some(owner)) = (&current, &owner)
        && owner != manager
    {
        // Server-side apply leaves the fields another manager set and this one does not name.
        let mut merged = current.clone();
        merge(&mut merged, &object);
        object = merged;
    }
    if let Some(current) = &current {
        object["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    }
    if params.get("dryRun").is_some() {
        return ok(StatusCode::OK, &object);
    }
    server.store(object, manager, true);
    ok(StatusCode::OK, &server.inner.lock().unwrap().objects[&key])
}

/// A strategic merge patch, for what kvinject sends: `webhooks` merged by `name`, objects merged
/// recursively, everything else replaced.
fn strategic_merge(
    server: &ApiServer,
    resource: &Resource,
    namespace: String,
    name: String,
    body: &[u8],
) -> Response {
    let patch: Value = serde_json::from_slice(body).unwrap();
    let key = (resource.plural.to_owned(), namespace, name);
    let Some(mut object) = server.inner.lock().unwrap().objects.get(&key).cloned() else {
        return status(404, "NotFound", "not found");
    };
    // As the API server: a uid in the patch that is not the object's is a change of an
    // immutable field.
    let uid = &patch["metadata"]["uid"];
    if !uid.is_null() && *uid != object["metadata"]["uid"] {
        return status(
            422,
            "Invalid",
            "metadata.uid: Invalid value: field is immutable",
        );
    }
    let spec_before = object["spec"].clone();
    merge(&mut object, &patch);
    // A new spec is a new generation, as for every object with a status.
    if object["spec"] != spec_before {
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
        object["metadata"]["generation"] = json!(generation + 1);
    }
    server.store(object, "kubectl-patch", true);
    ok(StatusCode::OK, &server.inner.lock().unwrap().objects[&key])
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match (key.as_str(), target.get_mut(key), value) {
                    ("webhooks", Some(Value::Array(items)), Value::Array(changes)) => {
                        for change in changes {
                            match items.iter_mut().find(|i| i["name"] == change["name"]) {
                                Some(item) => merge(item, change),
                                None => items.push(change.clone()),
                            }
                        }
                    }
                    (_, Some(existing), _) if existing.is_object() && value.is_object() => {
                        merge(existing, value)
                    }
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}
