//! The watch caches: Namespaces, ServiceAccounts and pods through metadata-only watches,
//! AzureIdentityBindings (when served) and SecretProviderClasses; each reports to readiness when
//! synced. Every `ClusterFacts` answer of a live server comes from here.
//!
//! Each cache keeps only what kvinject reads, cut as an event arrives and before anything is
//! stored, as small typed entries ([`KeyedCache`]): a Namespace's facts, a ServiceAccount's
//! client ID, a pod's marker, an SPC as [`CachedSpc`] (with a digest of its spec for the drift
//! comparison), a binding as its `IdentityBindingFacts`. As the API server
//! returns them (with `managedFields` and `last-applied-configuration`) objects average about
//! 6 KB; cached, a few hundred bytes (an SPC about 1 KB). Initial lists are paged
//! ([`LIST_PAGE_SIZE`]), so a sync holds one page as sent at a time, not a whole list.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::Api;
use kube::core::{DynamicObject, PartialObjectMeta};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::cluster::keyed::{CacheWriter, KeyedCache};
use crate::cluster::spc_store::CachedSpc;
use crate::cluster::workloads::{Workload, controller_among};
use crate::cluster::{Cluster, binding_resource, spc_resource};
use crate::core::annotations::{
    AAD_POD_IDENTITY_GROUP, ENV_PREFIX, FILE_PREFIX, INJECT, INJECTED, MIRROR_POD,
    RESTART_ON_ROTATION, SECRET_PROVIDER_CLASS, TLS_SECRET_PREFIX, WORKLOAD_IDENTITY_CLIENT_ID,
    marker_spcs,
};
use crate::core::facts::{
    ClusterFacts, IdentityBindingFacts, NamespaceFacts, SecretSync, ServiceAccountFacts, SpcFacts,
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
        let namespaces =
            watch_entries::<Namespace, _>(&client, "namespaces", namespace_entry, &readiness);
        let service_accounts = watch_entries::<ServiceAccount, _>(
            &client,
            "serviceaccounts",
            service_account_entry,
            &readiness,
        );
        // Every pod, not only labelled ones: a pod keeps using its SPC however its labels change
        // after admission.
        let pods = watch_entries::<Pod, _>(&client, "pods", pod_entry, &readiness);
        let spcs = follow(
            watcher(
                Api::<DynamicObject>::all_with(client.clone(), &spc_resource()),
                watcher_config(),
            ),
            "secretproviderclasses",
            |spc: &DynamicObject| Some(CachedSpc::of(spc)),
            Some(&readiness),
        );
        let bindings = Arc::new(OnceLock::new());
        if bindings_available {
            let store = watch_bindings(Some(&readiness), client.clone());
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
            generated_digests: Arc::default(),
        }
    }

    /// (cache name, objects in it), for metrics.
    pub fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        let mut sizes = vec![
            ("namespaces", self.namespaces.len()),
            ("serviceaccounts", self.service_accounts.len()),
            ("pods", self.pods.len()),
            ("secretproviderclasses", self.spcs.len()),
        ];
        if let Some(bindings) = self.bindings.get() {
            sizes.push(("azureidentitybindings", bindings.len()));
        }
        sizes
    }

    /// Generated SPCs in the cache (labelled `app.kubernetes.io/managed-by: kvinject`), as
    /// (namespace, name, what is cached).
    pub fn generated_spcs(&self) -> Vec<(String, String, CachedSpc)> {
        let mut generated = Vec::new();
        self.spcs.for_each(|namespace, name, spc| {
            if spc.facts.managed_by_kvinject {
                generated.push((namespace.to_owned(), name.to_owned(), spc.clone()));
            }
        });
        generated
    }

    /// How many generated SPCs the cache holds in `namespace`, and how many of `names` it does
    /// not hold yet (`None` when it holds them all: writing them again stores nothing new). Only
    /// a new SPC pays for the count, so the steady state stays one look-up per SPC.
    pub fn generated_spcs_besides(
        &self,
        namespace: &str,
        names: &[&str],
    ) -> Option<(usize, usize)> {
        let new = names
            .iter()
            .filter(|name| !self.spcs.contains(namespace, name))
            .count();
        if new == 0 {
            return None;
        }
        let held = self
            .spcs
            .count_in(namespace, |spc| spc.facts.managed_by_kvinject);
        Some((held, new))
    }

    /// The pod `name` of `namespace`, when it carries an injection marker or should.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<CachedPod> {
        self.pods.get(namespace, name)
    }

    /// Every cached pod that should carry an injection marker and does not, in a namespace the
    /// cache shows opted in, as (namespace, name, pod); `never` names the namespaces whose pods
    /// are never injected.
    pub fn uninjected_pods(&self, never: &[&str]) -> Vec<(String, String, CachedPod)> {
        let mut found = Vec::new();
        self.pods.for_each(|namespace, name, pod| {
            if pod.wants_injection && pod.marker.is_none() && !never.contains(&namespace) {
                found.push((namespace.to_owned(), name.to_owned(), pod.clone()));
            }
        });
        found.retain(|(namespace, ..)| {
            self.namespaces
                .get("", namespace)
                .is_some_and(|ns| ns.injection_enabled)
        });
        found
    }

    /// Whether the pod and Namespace caches have synced.
    pub fn pods_and_namespaces_synced(&self) -> bool {
        self.pods.is_synced() && self.namespaces.is_synced()
    }

    /// Whether the pod cache has synced: before, [`Cluster::referenced_spcs`] knows no pod.
    pub fn markers_synced(&self) -> bool {
        self.pods.is_synced()
    }

    /// (namespace, SPC name) of every pod's `kvinject.io/injected` marker.
    pub fn referenced_spcs(&self) -> BTreeSet<(String, String)> {
        let mut referenced = BTreeSet::new();
        self.pods.for_each(|namespace, _, pod| {
            for spc in pod.marker.as_deref().into_iter().flat_map(marker_spcs) {
                referenced.insert((namespace.to_owned(), spc.to_owned()));
            }
        });
        referenced
    }
}

/// Objects a page of an initial list: the API server's answers are read one page at a time, so
/// this bounds what a sync holds as sent (about 6 KB an object with `managedFields`). client-go's
/// reflectors ask for 500; a smaller page costs more requests but far less transient memory,
/// which the allocator keeps as resident.
pub const LIST_PAGE_SIZE: u32 = 100;

fn watcher_config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE_SIZE)
}

/// A Namespace as cached: what the core reads of it.
fn namespace_entry(namespace: &PartialObjectMeta<Namespace>) -> Option<NamespaceFacts> {
    let label = |key: &str| namespace.labels().get(key).map(String::as_str);
    let annotation = |key: &str| namespace.annotations().get(key).map(String::as_str);
    Some(NamespaceFacts::read(label, annotation))
}

/// A ServiceAccount as cached: its workload identity client ID.
fn service_account_entry(
    account: &PartialObjectMeta<ServiceAccount>,
) -> Option<ServiceAccountFacts> {
    Some(ServiceAccountFacts {
        client_id: account
            .annotations()
            .get(WORKLOAD_IDENTITY_CLIENT_ID)
            .cloned(),
    })
}

/// A pod as cached: what the collector, the rotation restarts and the un-injected pods check
/// read of it. Kept only when it carries a marker or should have one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPod {
    /// Its `kvinject.io/injected` marker: the SPCs it uses.
    pub marker: Option<Box<str>>,
    /// Its uid.
    pub uid: Box<str>,
    /// Its controller, when of a kind kvinject follows.
    pub controller: Option<Box<Workload>>,
    /// Annotated `kvinject.io/restart-on-rotation: "true"`.
    pub restart_on_rotation: bool,
    /// Labelled `kvinject.io/inject: "true"`, not opted out, asking for objects, not a mirror
    /// pod and not being deleted: a pod the webhook would have injected, were its namespace
    /// opted in.
    pub wants_injection: bool,
}

fn pod_entry(pod: &PartialObjectMeta<Pod>) -> Option<CachedPod> {
    let annotations = pod.annotations();
    let annotation = |key: &str| annotations.get(key).map(String::as_str);
    let asks = annotations.keys().any(|key| {
        key == SECRET_PROVIDER_CLASS
            || [ENV_PREFIX, FILE_PREFIX, TLS_SECRET_PREFIX]
                .iter()
                .any(|prefix| key.starts_with(prefix))
    });
    let wants_injection = pod.labels().get(INJECT).map(String::as_str) == Some("true")
        && annotation(INJECT) != Some("false")
        && annotation(MIRROR_POD).is_none()
        && pod.metadata.deletion_timestamp.is_none()
        && asks;
    let marker = annotation(INJECTED).map(Box::from);
    if marker.is_none() && !wants_injection {
        return None;
    }
    let namespace = pod.namespace().unwrap_or_default();
    let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
    let controller = controller_among(&namespace, owners).map(Box::new);
    Some(CachedPod {
        marker,
        uid: pod.uid().unwrap_or_default().into(),
        controller,
        restart_on_rotation: annotation(RESTART_ON_ROTATION) == Some("true"),
        wants_injection,
    })
}

/// Watches `K` metadata-only into a cache of the entries `entry` makes.
fn watch_entries<K, V>(
    client: &Client,
    part: &'static str,
    entry: fn(&PartialObjectMeta<K>) -> Option<V>,
    readiness: &Arc<Readiness>,
) -> Arc<KeyedCache<V>>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    V: Clone + Send + Sync + 'static,
{
    // Api<PartialObjectMeta<_>> asks for metadata only: the API server sends no spec or status.
    let api = Api::<PartialObjectMeta<K>>::all(client.clone());
    follow(watcher(api, watcher_config()), part, entry, Some(readiness))
}

/// Follows a watcher's events into a cache of the entries `entry` makes; `readiness` learns
/// when its first list has been applied.
fn follow<K, V, S>(
    events: S,
    part: &'static str,
    entry: fn(&K) -> Option<V>,
    readiness: Option<&Arc<Readiness>>,
) -> Arc<KeyedCache<V>>
where
    K: Resource + Send + 'static,
    V: Clone + Send + Sync + 'static,
    S: futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let cache = Arc::new(KeyedCache::new());
    let mut writer = CacheWriter::new(entry);
    let stream = events.default_backoff().map_ok({
        let cache = cache.clone();
        move |event| writer.apply(&cache, event)
    });
    if let Some(readiness) = readiness {
        readiness.expect(part);
    }
    let ready = readiness.cloned();
    tokio::spawn({
        let cache = cache.clone();
        async move {
            cache.synced().await;
            tracing::info!(cache = part, "cache synced");
            if let Some(ready) = ready {
                ready.set_ready(part);
            }
        }
    });
    tokio::spawn(drive(stream, part));
    cache
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
    bindings: Arc<OnceLock<Arc<KeyedCache<IdentityBindingFacts>>>>,
    every: Duration,
) {
    let mut ticks = Ticks::new(every, std::future::pending::<()>());
    while ticks.next().await {
        if bindings_served(&client).await {
            tracing::info!("AzureIdentityBinding API now served: watching bindings");
            let store = watch_bindings(None, client);
            let _ = bindings.set(store);
            return;
        }
    }
}

/// Watches AzureIdentityBindings into a cache of their facts (a binding without a name or
/// selector is not kept).
fn watch_bindings(
    readiness: Option<&Arc<Readiness>>,
    client: Client,
) -> Arc<KeyedCache<IdentityBindingFacts>> {
    let api = Api::<DynamicObject>::all_with(client, &binding_resource());
    follow(
        watcher(api, watcher_config()),
        "azureidentitybindings",
        binding_entry,
        readiness,
    )
}

/// An AzureIdentityBinding as cached: its facts, read once as its event arrives.
fn binding_entry(binding: &DynamicObject) -> Option<IdentityBindingFacts> {
    IdentityBindingFacts::from_manifest(&serde_json::to_value(binding).ok()?, "")
}

/// Runs a watch to its end (it ends only with the process), logging its errors.
async fn drive<T, S>(stream: S, part: &'static str)
where
    S: futures_util::Stream<Item = Result<T, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if let Err(error) = event {
            tracing::warn!(cache = part, %error, "watch error; retrying with backoff");
        }
    }
}

impl ClusterFacts for Cluster {
    fn namespace(&self, name: &str) -> Option<NamespaceFacts> {
        self.namespaces.get("", name)
    }

    fn service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccountFacts> {
        self.service_accounts.get(namespace, name)
    }

    fn identity_bindings(
        &self,
        namespace: Option<&str>,
        selector: &str,
    ) -> Vec<IdentityBindingFacts> {
        let Some(bindings) = self.bindings.get() else {
            return Vec::new();
        };
        let mut found = Vec::new();
        bindings.for_each(|binding_namespace, _, binding| {
            if namespace.is_none_or(|ns| ns == binding_namespace) && binding.selector == selector {
                found.push(binding.clone());
            }
        });
        found
    }

    fn identity_bindings_available(&self) -> bool {
        self.bindings.get().is_some()
    }

    fn secret_provider_class(&self, namespace: &str, name: &str) -> Option<SpcFacts> {
        self.spcs.look(namespace, name, |spc| spc.facts.clone())
    }

    fn secret_syncs(&self, namespace: &str, secret: &str) -> Vec<SecretSync> {
        let mut syncs = Vec::new();
        self.spcs.for_each_in(namespace, |name, spc| {
            syncs.extend(spc.facts.sync_of(name, secret));
        });
        if syncs.iter().any(|sync| sync.managed_by_kvinject) {
            // A generated SPC no pod mounts syncs nothing; it only waits for the collector.
            let mut referenced = BTreeSet::new();
            self.pods.for_each_in(namespace, |_, pod| {
                let spcs = pod.marker.as_deref().into_iter().flat_map(marker_spcs);
                referenced.extend(spcs.map(str::to_owned));
            });
            syncs.retain(|sync| !sync.managed_by_kvinject || referenced.contains(&sync.spc));
        }
        syncs
    }

    fn namespace_is(&self, name: &str, answer: Option<&NamespaceFacts>) -> bool {
        self.namespaces.entry_is("", name, answer, |facts| facts)
    }

    fn service_account_is(
        &self,
        namespace: &str,
        name: &str,
        answer: Option<&ServiceAccountFacts>,
    ) -> bool {
        self.service_accounts
            .entry_is(namespace, name, answer, |facts| facts)
    }

    fn secret_provider_class_is(
        &self,
        namespace: &str,
        name: &str,
        answer: Option<&SpcFacts>,
    ) -> bool {
        self.spcs
            .entry_is(namespace, name, answer, |spc| &spc.facts)
    }
}

#[cfg(test)]
mod tests {
    use kube::core::DynamicObject;
    use serde_json::json;

    use super::binding_entry;
    use crate::cluster::spc_store::CachedSpc;
    use crate::core::facts::{IdentityBindingFacts, spc_facts};
    use crate::core::spc::spec_digest;

    fn served(object: serde_json::Value) -> DynamicObject {
        let mut object = object;
        let metadata = object["metadata"].as_object_mut().unwrap();
        metadata.insert("resourceVersion".into(), json!("42"));
        metadata.insert("uid".into(), json!("u-1"));
        metadata.insert(
            "managedFields".into(),
            json!([{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {}}}]),
        );
        serde_json::from_value(object).unwrap()
    }

    #[test]
    fn an_spc_is_cached_as_its_facts_mark_versions_and_spec_digest() {
        let spec = json!({"provider": "azure", "parameters": {"keyvaultName": " kv ", "clientID": "c",
            "objects": "array:\n  - |\n    objectName: db\n"},
            "secretObjects": [{"secretName": "s", "type": "Opaque", "data": [{"objectName": "db", "key": "db"}]}]});
        let spc = served(json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass", "metadata": {"name": "kvinject-1", "namespace": "shop",
                "labels": {"app.kubernetes.io/managed-by": "kvinject", "team": "a"},
                "annotations": {"kvinject.io/last-used": "2026-12-01T00:00:00Z",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": spec, "status": {"byPod": [{"id": "p", "namespace": "shop"}]}}));
        let manifest = serde_json::to_value(&spc).unwrap();
        assert_eq!(
            CachedSpc::of(&spc),
            CachedSpc {
                facts: spc_facts(&manifest),
                last_used: Some("2026-12-01T00:00:00Z".parse().unwrap()),
                resource_version: Some("42".into()),
                uid: Some("u-1".into()),
                spec_digest: spec_digest(&spec),
            }
        );
        assert!(CachedSpc::of(&spc).facts.managed_by_kvinject);
        assert_eq!(CachedSpc::of(&spc).facts.vault.as_deref(), Some("kv"));
    }

    #[test]
    fn a_binding_is_cached_as_its_selector_and_identity_policy() {
        let binding = served(json!({"apiVersion": "aadpodidentity.k8s.io/v1",
            "kind": "AzureIdentityBinding", "metadata": {"name": "b", "namespace": "shop",
                "labels": {"team": "a"},
                "annotations": {"kvinject.io/allowed-service-accounts": "shop/api", "other": "x"}},
            "spec": {"azureIdentity": "payments-identity", "selector": "payments"}}));
        assert_eq!(
            binding_entry(&binding),
            Some(IdentityBindingFacts {
                namespace: "shop".into(),
                name: "b".into(),
                selector: "payments".into(),
                allowed_service_accounts: Some(vec!["shop/api".into()]),
            })
        );
        // A spec of another type (no CRD schema stops one) gives no selector, and no panic.
        let odd = served(json!({"apiVersion": "aadpodidentity.k8s.io/v1",
            "kind": "AzureIdentityBinding", "metadata": {"name": "odd", "namespace": "shop"},
            "spec": "selector"}));
        assert_eq!(binding_entry(&odd), None);
    }
}
