//! Writing the SecretProviderClass an admitted pod needs, exactly as generated: created when the
//! cache shows it absent, replaced whole when it drifted, re-marked (`kvinject.io/last-used`)
//! when the mark is stale; and the rules about kvinject's own SPCs that the collector shares.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;

use crate::cluster::{Cluster, spc_resource};
use crate::core::annotations::{self, LAST_USED, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::core::facts::{SpcFacts, spc_facts_of};
use crate::core::spc::{GeneratedSpc, spec_digest};

/// Whether an object carries kvinject's `app.kubernetes.io/managed-by` label.
pub fn is_managed_by_kvinject(object: &impl ResourceExt) -> bool {
    annotations::is_managed_by_kvinject(object.labels().get(MANAGED_BY_LABEL).map(String::as_str))
}

/// A SecretProviderClass as the cache keeps it: what the checks read, what writes and deletions
/// are conditioned on, when an admission last used it, and a digest of its spec (drift is any
/// difference in it).
#[derive(Debug, Clone, PartialEq)]
pub struct CachedSpc {
    /// What the core reads (identity, vault, synced keys, whose it is).
    pub facts: SpcFacts,
    /// `kvinject.io/last-used`, when it reads as a time.
    pub last_used: Option<Timestamp>,
    /// The version the cache saw.
    pub resource_version: Option<String>,
    /// The object's uid.
    pub uid: Option<String>,
    /// [`spec_digest`] of its spec.
    pub spec_digest: [u8; 32],
}

impl CachedSpc {
    /// Reads an SPC as served.
    pub fn of(spc: &DynamicObject) -> Self {
        let label = spc.labels().get(MANAGED_BY_LABEL).map(String::as_str);
        let spec = spc.data.get("spec").unwrap_or(&serde_json::Value::Null);
        Self {
            facts: spc_facts_of(spec, label),
            last_used: spc
                .annotations()
                .get(LAST_USED)
                .and_then(|t| t.parse().ok()),
            resource_version: spc.resource_version(),
            uid: spc.uid(),
            spec_digest: spec_digest(spec),
        }
    }

    /// Whether an admission marked it used within `period` before `now`.
    pub fn used_within(&self, now: Timestamp, period: Duration) -> bool {
        self.last_used
            .is_some_and(|t| now.duration_since(t).unsigned_abs() < period)
    }
}

/// Generated SPCs whose spec digest is remembered, at most; when full, the memory starts afresh.
const REMEMBERED_DIGESTS: usize = 4096;

impl Cluster {
    /// [`spec_digest`] of a generated SPC's spec. A generated SPC's name is a hash of its spec, so
    /// the digest is remembered by name and computed once per SPC, not once per admission.
    fn generated_digest(&self, spc: &GeneratedSpc) -> [u8; 32] {
        let remembered = self.generated_digests.lock().ok();
        if let Some(digest) = remembered.as_ref().and_then(|m| m.get(&spc.name)) {
            return *digest;
        }
        drop(remembered);
        let digest = spec_digest(&spc.manifest()["spec"]);
        if let Ok(mut remembered) = self.generated_digests.lock() {
            if remembered.len() >= REMEMBERED_DIGESTS {
                remembered.clear();
            }
            remembered.insert(spc.name.clone(), digest);
        }
        digest
    }

    /// Makes sure the generated SPC exists exactly as generated, writing only when the cache
    /// shows it absent, different, or not marked used for `refresh`:
    ///
    /// - absent: created by server-side apply;
    /// - different in any field of its spec (a hand edit, or fields another manager added, which
    ///   an apply would leave in place): replaced whole, conditioned on the resourceVersion read,
    ///   so after one admission the SPC is what kvinject generates;
    /// - only its `last-used` mark stale: re-applied (forced: kvinject owns its SPCs).
    ///
    /// An SPC kvinject does not own is never taken over: the core denies those before this is
    /// called, and a replacement is conditioned on the version the cache showed as kvinject's.
    /// Returns whether it wrote.
    pub async fn ensure_spc(
        &self,
        spc: &GeneratedSpc,
        namespace: &str,
        refresh: Duration,
    ) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let digest = self.generated_digest(spc);
        // The steady state reads the cache and writes nothing: no copy of the entry or manifest.
        let cached = self.spcs.look(namespace, &spc.name, |cached| {
            let drifted = cached.spec_digest != digest;
            let current = cached.facts.managed_by_kvinject && cached.used_within(now, refresh);
            (drifted, current, cached.resource_version.clone())
        });
        if let Some((false, true, _)) = cached {
            return Ok(false);
        }
        let mut marked = spc.manifest();
        marked["metadata"]["annotations"] = serde_json::json!({ LAST_USED: now.to_string() });
        let api =
            Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, &spc_resource());
        let Some((drifted, _, resource_version)) = cached else {
            let params = PatchParams::apply(MANAGED_BY_VALUE);
            api.patch(&spc.name, &params, &Patch::Apply(&marked))
                .await?;
            return Ok(true);
        };
        if drifted {
            replace_spc(&api, marked, resource_version).await?;
        } else {
            let mut params = PatchParams::apply(MANAGED_BY_VALUE);
            params.force = true;
            api.patch(&spc.name, &params, &Patch::Apply(&marked))
                .await?;
        }
        Ok(true)
    }
}

/// Replaces the SPC with `manifest` if it is still at `resource_version`; when it changed since,
/// once more at its current version, provided it is still kvinject's.
async fn replace_spc(
    api: &Api<DynamicObject>,
    manifest: serde_json::Value,
    resource_version: Option<String>,
) -> Result<(), kube::Error> {
    let mut object: DynamicObject =
        serde_json::from_value(manifest).map_err(kube::Error::SerdeError)?;
    let name = object.name_any();
    object.metadata.resource_version = resource_version;
    match api.replace(&name, &PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let conflict = kube::Error::Api(status);
            match api.get_opt(&name).await? {
                Some(current) if is_managed_by_kvinject(&current) => {
                    object.metadata.resource_version = current.resource_version();
                    api.replace(&name, &PostParams::default(), &object).await?;
                    Ok(())
                }
                _ => Err(conflict),
            }
        }
        Err(other) => Err(other),
    }
}
