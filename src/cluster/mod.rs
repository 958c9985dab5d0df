//! The live cluster: facts from watch caches, direct look-ups for what a cache cannot have yet,
//! and the SecretProviderClass writes admission needs.
//!
//! Admission never waits on a request for a fact it has: every `ClusterFacts` answer comes from
//! a watch cache ([`caches`]). Requests are made only for a fact that is missing (once,
//! within a deadline: [`lookup`]) and for the SPC a pod needs when the cache shows it absent,
//! edited or stale ([`spc_store`]). The [`collector`] deletes generated SPCs no pod uses, one
//! replica at a time ([`lease`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kube::Client;
use kube::core::{ApiResource, GroupVersionKind};

use crate::cluster::keyed::KeyedCache;
use crate::cluster::spc_store::CachedSpc;
use crate::core::annotations::AAD_POD_IDENTITY_GROUP;
use crate::core::facts::{IdentityBindingFacts, NamespaceFacts, ServiceAccountFacts};

pub mod caches;
pub mod collector;
pub mod denials;
pub mod events;
pub mod keyed;
pub mod lease;
pub mod lookup;
pub mod rotation;
pub mod spc_store;
pub mod uninjected;
pub mod workloads;

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

/// Watch caches over the objects kvinject reads, and a client for the rest.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    namespaces: Arc<KeyedCache<NamespaceFacts>>,
    service_accounts: Arc<KeyedCache<ServiceAccountFacts>>,
    /// Set once the cluster serves the AzureIdentityBinding API (at start, or when it appears).
    bindings: Arc<OnceLock<Arc<KeyedCache<IdentityBindingFacts>>>>,
    spcs: Arc<KeyedCache<CachedSpc>>,
    /// Pods that carry an injection marker or should ([`caches::CachedPod`]).
    pods: Arc<KeyedCache<caches::CachedPod>>,
    /// Deadline for the direct look-ups of one admission.
    lookup_timeout: Duration,
    /// Spec digests of generated SPCs, by name ([`spc_store`]).
    generated_digests: Arc<std::sync::Mutex<std::collections::HashMap<String, [u8; 32]>>>,
}

impl Cluster {
    /// The API client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}
