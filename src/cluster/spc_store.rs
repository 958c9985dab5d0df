//! Writing the SecretProviderClass an admitted pod needs: server-side apply when the cache
//! shows it absent, edited, or not marked used (`kvinject.io/last-used`) recently; and the
//! rules about kvinject's own SPCs that the collector shares.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::reflector::ObjectRef;

use crate::cluster::{Cluster, spc_resource};
use crate::core::annotations::{self, LAST_USED, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::core::spc::GeneratedSpc;

/// Whether an object carries kvinject's `app.kubernetes.io/managed-by` label.
pub fn is_managed_by_kvinject(object: &impl ResourceExt) -> bool {
    annotations::is_managed_by_kvinject(object.labels().get(MANAGED_BY_LABEL).map(String::as_str))
}

/// Whether an admission marked `spc` used within `period` before `now`.
pub fn used_within(spc: &DynamicObject, now: Timestamp, period: Duration) -> bool {
    spc.annotations()
        .get(LAST_USED)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_some_and(|t| now.duration_since(t).unsigned_abs() < period)
}

impl Cluster {
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
        let now = Timestamp::now();
        if let Some(cached) = &cached {
            let current = serde_json::to_value(cached.as_ref()).unwrap_or_default();
            if is_managed_by_kvinject(cached.as_ref())
                && used_within(cached, now, refresh)
                && current["spec"] == spc.manifest["spec"]
            {
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
