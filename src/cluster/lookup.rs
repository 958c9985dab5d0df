//! Direct look-ups for facts the caches do not have yet (a ServiceAccount applied a moment
//! before its pod): one round, concurrent, within the look-up deadline, only before a denial
//! for a missing object.

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ListParams};
use kube::core::DynamicObject;
use serde_json::Value;

use crate::cluster::{Cluster, binding_resource, spc_resource};
use crate::core::facts::{DocumentFacts, Miss};

impl Cluster {
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
                Miss::IdentityBinding(ns, _) if self.bindings.get().is_some() => {
                    let resource = binding_resource();
                    let api = match ns {
                        Some(ns) => Api::<DynamicObject>::namespaced_with(client, ns, &resource),
                        None => Api::<DynamicObject>::all_with(client, &resource),
                    };
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
}

/// An object as a manifest with its type (lists and gets may leave `apiVersion`/`kind` out).
fn typed_value(object: &impl serde::Serialize, api_version: &str, kind: &str) -> Option<Value> {
    let mut value = serde_json::to_value(object).ok()?;
    value["apiVersion"] = api_version.into();
    value["kind"] = kind.into();
    Some(value)
}
