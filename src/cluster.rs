//! The live cluster: facts from watch caches, direct look-ups for what a cache cannot have yet,
//! and the SecretProviderClass writes admission needs.
//!
//! Admission never waits on a request for a fact it has: every [`ClusterFacts`] answer comes
//! from a reflector store. Requests are made only for a fact that is missing (once, within a
//! deadline) and for the SPC a pod needs when the cache shows it absent, edited or stale.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;

use crate::annotations::{
    AAD_POD_IDENTITY_GROUP, INJECT, LAST_USED, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
};
use crate::facts::{
    ClusterFacts, DocumentFacts, IdentityBindingFacts, Miss, NamespaceFacts, ServiceAccountFacts,
    SpcFacts, spc_facts,
};
use crate::spc::GeneratedSpc;
use crate::tls::CertStore;

/// The SecretProviderClass API.
pub fn spc_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("secrets-store.csi.x-k8s.io", "v1", "SecretProviderClass"),
        "secretproviderclasses",
    )
}

/// The AzureIdentityBinding API.
pub fn binding_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(AAD_POD_IDENTITY_GROUP, "v1", "AzureIdentityBinding"),
        "azureidentitybindings",
    )
}

/// Which caches have synced, whether the HTTPS listener serves and its certificate is valid;
/// `/readyz` reads it.
#[derive(Debug, Default)]
pub struct Readiness {
    parts: std::sync::Mutex<BTreeMap<&'static str, bool>>,
    stopping: AtomicBool,
    certs: std::sync::OnceLock<Arc<CertStore>>,
}

impl Readiness {
    /// Registers a part that is not ready yet.
    pub fn expect(&self, part: &'static str) {
        if let Ok(mut parts) = self.parts.lock() {
            parts.insert(part, false);
        }
    }

    /// Marks a part ready.
    pub fn set_ready(&self, part: &'static str) {
        if let Ok(mut parts) = self.parts.lock() {
            parts.insert(part, true);
        }
    }

    /// Also watch the serving certificate: an expired one makes kvinject unready.
    pub fn watch_certificate(&self, store: Arc<CertStore>) {
        let _ = self.certs.set(store);
    }

    /// A problem worth reporting while ready (a refused certificate replacement).
    pub fn note(&self) -> Option<String> {
        self.certs
            .get()
            .and_then(|store| store.health().ok().flatten())
    }

    /// From now on, never ready (shutting down).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// The parts that are ready.
    pub fn synced(&self) -> Vec<&'static str> {
        self.parts
            .lock()
            .map(|parts| {
                parts
                    .iter()
                    .filter(|(_, ready)| **ready)
                    .map(|(part, _)| *part)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `Ok` when ready, else what is not.
    pub fn check(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        if let Some(store) = self.certs.get() {
            store.health()?;
        }
        let parts = self
            .parts
            .lock()
            .map_err(|_| "readiness state poisoned".to_owned())?;
        let waiting: Vec<&str> = parts
            .iter()
            .filter(|(_, ready)| !**ready)
            .map(|(part, _)| *part)
            .collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!("waiting for: {}", waiting.join(", ")))
        }
    }
}

/// Watch caches over the objects kvinject reads, and a client for the rest.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    bindings: Option<Store<DynamicObject>>,
    spcs: Store<DynamicObject>,
    pods: Store<PartialObjectMeta<Pod>>,
    /// Deadline for the direct look-ups of one admission.
    lookup_timeout: Duration,
}

impl Cluster {
    /// Starts the watches and returns at once; `readiness` learns when each cache has synced.
    /// AzureIdentityBindings are watched only if the cluster serves their API.
    pub async fn start(
        client: Client,
        readiness: Arc<Readiness>,
        lookup_timeout: Duration,
    ) -> Self {
        let bindings_available = client
            .list_api_group_resources(&format!("{AAD_POD_IDENTITY_GROUP}/v1"))
            .await
            .is_ok_and(|list| {
                list.resources
                    .iter()
                    .any(|r| r.name == "azureidentitybindings")
            });
        if !bindings_available {
            tracing::info!(
                "AzureIdentityBinding API not served: AAD Pod Identity is unavailable in this cluster"
            );
        }
        let namespaces = watch_metadata::<Namespace>(
            &client,
            watcher::Config::default(),
            "namespaces",
            &readiness,
        );
        let service_accounts = watch_metadata::<ServiceAccount>(
            &client,
            watcher::Config::default(),
            "serviceaccounts",
            &readiness,
        );
        // Only labelled pods can reference a generated SPC: that bounds the cache.
        let pods = watch_metadata::<Pod>(
            &client,
            watcher::Config::default().labels(&format!("{INJECT}=true")),
            "pods",
            &readiness,
        );
        let spcs = watch_dynamic(
            client.clone(),
            spc_resource(),
            "secretproviderclasses",
            &readiness,
        );
        let bindings = bindings_available.then(|| {
            watch_dynamic(
                client.clone(),
                binding_resource(),
                "azureidentitybindings",
                &readiness,
            )
        });
        Self {
            client,
            namespaces,
            service_accounts,
            bindings,
            spcs,
            pods,
            lookup_timeout,
        }
    }

    /// (cache name, objects in it), for metrics.
    pub fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        let mut sizes = vec![
            ("namespaces", self.namespaces.state().len()),
            ("serviceaccounts", self.service_accounts.state().len()),
            ("pods", self.pods.state().len()),
            ("secretproviderclasses", self.spcs.state().len()),
        ];
        if let Some(bindings) = &self.bindings {
            sizes.push(("azureidentitybindings", bindings.state().len()));
        }
        sizes
    }

    /// The API client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Generated SPCs in the cache (labelled `app.kubernetes.io/managed-by: kvinject`).
    pub fn generated_spcs(&self) -> Vec<Arc<DynamicObject>> {
        self.spcs
            .state()
            .into_iter()
            .filter(|spc| {
                spc.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
            })
            .collect()
    }

    /// (namespace, SPC name) of every labelled pod's `kvinject.io/injected` marker.
    pub fn referenced_spcs(&self) -> std::collections::BTreeSet<(String, String)> {
        self.pods
            .state()
            .iter()
            .filter_map(|pod| {
                let spc = pod.annotations().get(crate::annotations::INJECTED)?;
                Some((pod.namespace().unwrap_or_default(), spc.clone()))
            })
            .collect()
    }

    /// Looks each miss up directly, concurrently, within the look-up deadline; what is found is
    /// returned as facts to layer over the caches.
    pub async fn fetch(&self, misses: &[Miss]) -> DocumentFacts {
        let lookups = misses.iter().map(|miss| self.fetch_one(miss));
        let found =
            tokio::time::timeout(self.lookup_timeout, futures_util::future::join_all(lookups))
                .await
                .unwrap_or_default();
        let mut facts = DocumentFacts::default();
        for (miss, documents) in misses.iter().zip(found) {
            tracing::debug!(?miss, found = documents.len(), "direct look-up");
            for document in documents {
                facts.add(&document, "");
            }
        }
        facts
    }

    async fn fetch_one(&self, miss: &Miss) -> Vec<Value> {
        let client = self.client.clone();
        let result: Result<Vec<Value>, kube::Error> = async {
            Ok(match miss {
                Miss::Namespace(name) => {
                    let found = Api::<Namespace>::all(client).get_opt(name).await?;
                    found
                        .iter()
                        .filter_map(|o| typed_value(o, "v1", "Namespace"))
                        .collect()
                }
                Miss::ServiceAccount(ns, name) => {
                    let found = Api::<ServiceAccount>::namespaced(client, ns)
                        .get_opt(name)
                        .await?;
                    found
                        .iter()
                        .filter_map(|o| typed_value(o, "v1", "ServiceAccount"))
                        .collect()
                }
                Miss::SecretProviderClass(ns, name) => {
                    let resource = spc_resource();
                    let found = Api::<DynamicObject>::namespaced_with(client, ns, &resource)
                        .get_opt(name)
                        .await?;
                    found
                        .iter()
                        .filter_map(|o| typed_value(o, &resource.api_version, &resource.kind))
                        .collect()
                }
                Miss::IdentityBinding(ns, _) if self.bindings.is_some() => {
                    let resource = binding_resource();
                    let api = Api::<DynamicObject>::namespaced_with(client, ns, &resource);
                    let found = api.list(&ListParams::default()).await?.items;
                    found
                        .iter()
                        .filter_map(|o| typed_value(o, &resource.api_version, &resource.kind))
                        .collect()
                }
                Miss::IdentityBinding(..) => Vec::new(),
            })
        }
        .await;
        result.unwrap_or_else(|error| {
            tracing::warn!(?miss, %error, "direct look-up failed");
            Vec::new()
        })
    }

    /// Makes sure the generated SPC exists as generated, writing it only when the cache shows it
    /// absent, different, or not marked used for `refresh`. An SPC kvinject does not own is never
    /// taken over: the core denies those before this is called, and the apply is forced only over
    /// one the cache shows labelled as kvinject's. Returns whether it wrote.
    pub async fn ensure_spc(
        &self,
        spc: &GeneratedSpc,
        namespace: &str,
        refresh: Duration,
    ) -> Result<bool, kube::Error> {
        let key = ObjectRef::new_with(&spc.name, spc_resource()).within(namespace);
        let cached = self.spcs.get(&key);
        let now = k8s_openapi::jiff::Timestamp::now();
        if let Some(cached) = &cached {
            let current = serde_json::to_value(cached.as_ref()).unwrap_or_default();
            let used_recently = cached
                .annotations()
                .get(LAST_USED)
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .is_some_and(|t| now.duration_since(t).unsigned_abs() < refresh);
            let ours =
                cached.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE);
            if ours && used_recently && current["spec"] == spc.manifest["spec"] {
                return Ok(false);
            }
        }
        let mut manifest = spc.manifest.clone();
        manifest["metadata"]["annotations"] = serde_json::json!({ LAST_USED: now.to_string() });
        let api =
            Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, &spc_resource());
        let mut params = PatchParams::apply(MANAGED_BY_VALUE);
        params.force = cached.is_some();
        api.patch(&spc.name, &params, &Patch::Apply(&manifest))
            .await?;
        Ok(true)
    }
}

/// An object as a manifest with its type (lists and gets may leave `apiVersion`/`kind` out).
fn typed_value(object: &impl serde::Serialize, api_version: &str, kind: &str) -> Option<Value> {
    let mut value = serde_json::to_value(object).ok()?;
    value["apiVersion"] = api_version.into();
    value["kind"] = kind.into();
    Some(value)
}

fn watch_metadata<K>(
    client: &Client,
    config: watcher::Config,
    part: &'static str,
    readiness: &Arc<Readiness>,
) -> Store<PartialObjectMeta<K>>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let writer = reflector::store::Writer::<PartialObjectMeta<K>>::default();
    let store = writer.as_reader();
    let api = Api::<PartialObjectMeta<K>>::all(client.clone());
    let stream = watcher(api, config).default_backoff().reflect(writer);
    spawn_watch(stream, store.clone(), part, readiness);
    store
}

fn watch_dynamic(
    client: Client,
    resource: ApiResource,
    part: &'static str,
    readiness: &Arc<Readiness>,
) -> Store<DynamicObject> {
    let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
    let store = writer.as_reader();
    let api = Api::<DynamicObject>::all_with(client, &resource);
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    spawn_watch(stream, store.clone(), part, readiness);
    store
}

fn spawn_watch<K, S>(stream: S, store: Store<K>, part: &'static str, readiness: &Arc<Readiness>)
where
    K: kube::runtime::reflector::Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    S: futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    readiness.expect(part);
    let ready = readiness.clone();
    tokio::spawn(async move {
        if store.wait_until_ready().await.is_ok() {
            tracing::info!(cache = part, "cache synced");
            ready.set_ready(part);
        }
    });
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                tracing::warn!(cache = part, %error, "watch error; retrying with backoff");
            }
        }
    });
}

impl ClusterFacts for Cluster {
    fn namespace(&self, name: &str) -> Option<NamespaceFacts> {
        let namespace = self.namespaces.get(&ObjectRef::new(name))?;
        let mut document = serde_json::to_value(namespace.as_ref()).ok()?;
        document["apiVersion"] = "v1".into();
        document["kind"] = "Namespace".into();
        let mut facts = DocumentFacts::default();
        facts.add(&document, "");
        facts.namespace(name)
    }

    fn service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccountFacts> {
        let account = self
            .service_accounts
            .get(&ObjectRef::new(name).within(namespace))?;
        Some(ServiceAccountFacts {
            client_id: account
                .annotations()
                .get(crate::annotations::WORKLOAD_IDENTITY_CLIENT_ID)
                .cloned(),
        })
    }

    fn identity_bindings(&self, namespace: &str, selector: &str) -> Vec<IdentityBindingFacts> {
        let Some(bindings) = &self.bindings else {
            return Vec::new();
        };
        bindings
            .state()
            .iter()
            .filter(|b| b.namespace().as_deref() == Some(namespace))
            .filter_map(|b| {
                IdentityBindingFacts::from_manifest(&serde_json::to_value(b.as_ref()).ok()?)
            })
            .filter(|b| b.selector == selector)
            .collect()
    }

    fn identity_bindings_available(&self) -> bool {
        self.bindings.is_some()
    }

    fn secret_provider_class(&self, namespace: &str, name: &str) -> Option<SpcFacts> {
        let spc = self
            .spcs
            .get(&ObjectRef::new_with(name, spc_resource()).within(namespace))?;
        Some(spc_facts(&serde_json::to_value(spc.as_ref()).ok()?))
    }
}
