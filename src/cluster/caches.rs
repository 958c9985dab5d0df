//! The watch caches: Namespaces, ServiceAccounts and labelled pods metadata-only,
//! AzureIdentityBindings (when served) and SecretProviderClasses in full; each reports to
//! readiness when synced. Every `ClusterFacts` answer of a live server comes from here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::Api;
use kube::core::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::cluster::spc_store::is_managed_by_kvinject;
use crate::cluster::{Cluster, binding_resource, spc_resource};
use crate::core::annotations::{AAD_POD_IDENTITY_GROUP, INJECTED, WORKLOAD_IDENTITY_CLIENT_ID};
use crate::core::facts::{
    ClusterFacts, DocumentFacts, IdentityBindingFacts, NamespaceFacts, ServiceAccountFacts,
    SpcFacts, spc_facts,
};
use crate::lifecycle::readiness::Readiness;
use crate::lifecycle::ticks::Ticks;

impl Cluster {
    /// Starts the watches and returns at once; `readiness` learns when each cache has synced.
    /// AzureIdentityBindings are watched only if the cluster serves their API; without it, the
    /// API is asked for again every minute, and watched once it appears.
    pub async fn start(
        client: Client,
        readiness: Arc<Readiness>,
        lookup_timeout: Duration,
    ) -> Self {
        Self::start_with(
            client,
            readiness,
            lookup_timeout,
            BINDINGS_DISCOVERY_INTERVAL,
        )
        .await
    }

    /// [`Cluster::start`], asking for the AzureIdentityBinding API every `discovery` while the
    /// cluster does not serve it.
    pub async fn start_with(
        client: Client,
        readiness: Arc<Readiness>,
        lookup_timeout: Duration,
        discovery: Duration,
    ) -> Self {
        let bindings_available = bindings_served(&client).await;
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
        let pods = watch_pod_markers(&client, &readiness);
        let spcs = watch_dynamic(
            client.clone(),
            spc_resource(),
            "secretproviderclasses",
            Some(&readiness),
        );
        let bindings = Arc::new(OnceLock::new());
        if bindings_available {
            let store = watch_dynamic(
                client.clone(),
                binding_resource(),
                "azureidentitybindings",
                Some(&readiness),
            );
            let _ = bindings.set(store);
        } else {
            tokio::spawn(discover_bindings_later(
                client.clone(),
                bindings.clone(),
                discovery,
            ));
        }
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
        if let Some(bindings) = self.bindings.get() {
            sizes.push(("azureidentitybindings", bindings.state().len()));
        }
        sizes
    }

    /// Generated SPCs in the cache (labelled `app.kubernetes.io/managed-by: kvinject`).
    pub fn generated_spcs(&self) -> Vec<Arc<DynamicObject>> {
        self.spcs
            .state()
            .into_iter()
            .filter(|spc| is_managed_by_kvinject(spc.as_ref()))
            .collect()
    }

    /// How many generated SPCs the cache holds in `namespace`, unless it already holds `name`
    /// there (`None`: writing that one again stores nothing new). Only a new SPC pays for the
    /// count, so the steady state stays a single look-up.
    pub fn generated_spcs_besides(&self, namespace: &str, name: &str) -> Option<usize> {
        let key = ObjectRef::new_with(name, spc_resource()).within(namespace);
        if self.spcs.get(&key).is_some() {
            return None;
        }
        let held = self
            .spcs
            .state()
            .iter()
            .filter(|spc| spc.namespace().as_deref() == Some(namespace))
            .filter(|spc| is_managed_by_kvinject(spc.as_ref()))
            .count();
        Some(held)
    }

    /// (namespace, SPC name) of every labelled pod's `kvinject.io/injected` marker.
    pub fn referenced_spcs(&self) -> BTreeSet<(String, String)> {
        self.pods
            .state()
            .iter()
            .filter_map(|pod| {
                let spc = pod.annotations().get(INJECTED)?;
                Some((pod.namespace().unwrap_or_default(), spc.clone()))
            })
            .collect()
    }
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
    spawn_watch(stream, store.clone(), part, Some(readiness));
    store
}

/// Whether the cluster serves the AzureIdentityBinding API (AAD Pod Identity installed).
async fn bindings_served(client: &Client) -> bool {
    client
        .list_api_group_resources(&format!("{AAD_POD_IDENTITY_GROUP}/v1"))
        .await
        .is_ok_and(|list| {
            list.resources
                .iter()
                .any(|r| r.name == "azureidentitybindings")
        })
}

/// How often a cluster without the AzureIdentityBinding API is asked again.
const BINDINGS_DISCOVERY_INTERVAL: Duration = Duration::from_secs(60);

/// AAD Pod Identity installed after kvinject started: its bindings are watched from then on (not
/// part of readiness, so every replica does not turn unready at once while the cache fills).
async fn discover_bindings_later(
    client: Client,
    bindings: Arc<OnceLock<Store<DynamicObject>>>,
    every: Duration,
) {
    let mut ticks = Ticks::new(every, std::future::pending::<()>());
    while ticks.next().await {
        if bindings_served(&client).await {
            tracing::info!("AzureIdentityBinding API now served: watching bindings");
            let store = watch_dynamic(client, binding_resource(), "azureidentitybindings", None);
            let _ = bindings.set(store);
            return;
        }
    }
}

/// Every pod, metadata only, each stripped as it arrives to what the collector reads: its name
/// and the `kvinject.io/injected` marker. Not only labelled pods: a pod keeps using its SPC
/// however its labels change after admission.
fn watch_pod_markers(client: &Client, readiness: &Arc<Readiness>) -> Store<PartialObjectMeta<Pod>> {
    let writer = reflector::store::Writer::<PartialObjectMeta<Pod>>::default();
    let store = writer.as_reader();
    let api = Api::<PartialObjectMeta<Pod>>::all(client.clone());
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|pod| {
            let meta = &mut pod.metadata;
            let marker = meta.annotations.as_mut().and_then(|a| a.remove(INJECTED));
            meta.annotations = marker.map(|m| BTreeMap::from([(INJECTED.to_owned(), m)]));
            meta.labels = None;
            meta.managed_fields = None;
            meta.owner_references = None;
            meta.finalizers = None;
            meta.generate_name = None;
        })
        .reflect(writer);
    spawn_watch(stream, store.clone(), "pods", Some(readiness));
    store
}

fn watch_dynamic(
    client: Client,
    resource: ApiResource,
    part: &'static str,
    readiness: Option<&Arc<Readiness>>,
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

fn spawn_watch<K, S>(
    stream: S,
    store: Store<K>,
    part: &'static str,
    readiness: Option<&Arc<Readiness>>,
) where
    K: reflector::Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    S: futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    if let Some(readiness) = readiness {
        readiness.expect(part);
    }
    let ready = readiness.cloned();
    tokio::spawn(async move {
        if store.wait_until_ready().await.is_ok() {
            tracing::info!(cache = part, "cache synced");
            if let Some(ready) = ready {
                ready.set_ready(part);
            }
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
                .get(WORKLOAD_IDENTITY_CLIENT_ID)
                .cloned(),
        })
    }

    fn identity_bindings(
        &self,
        namespace: Option<&str>,
        selector: &str,
    ) -> Vec<IdentityBindingFacts> {
        let Some(bindings) = self.bindings.get() else {
            return Vec::new();
        };
        bindings
            .state()
            .iter()
            .filter(|b| namespace.is_none_or(|ns| b.namespace().as_deref() == Some(ns)))
            .filter_map(|b| {
                let manifest = serde_json::to_value(b.as_ref()).ok()?;
                IdentityBindingFacts::from_manifest(&manifest, "")
            })
            .filter(|b| b.selector == selector)
            .collect()
    }

    fn identity_bindings_available(&self) -> bool {
        self.bindings.get().is_some()
    }

    fn secret_provider_class(&self, namespace: &str, name: &str) -> Option<SpcFacts> {
        let spc = self
            .spcs
            .get(&ObjectRef::new_with(name, spc_resource()).within(namespace))?;
        Some(spc_facts(&serde_json::to_value(spc.as_ref()).ok()?))
    }
}
