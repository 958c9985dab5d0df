//! Garbage collection of generated SecretProviderClasses that no pod uses any more.
//!
//! One replica collects at a time (a Lease); admission never depends on it. An SPC is deleted
//! only when it carries kvinject's label, no pod's `kvinject.io/injected` marker names it, that
//! has been so for the whole grace period as seen by this collector, and no admission marked it
//! used (`kvinject.io/last-used`) within the grace period. Nothing is collected before the pod
//! cache has synced: an empty cache would show every SPC unused. The delete is conditioned on the
//! resourceVersion and uid seen, so an admission that touches the SPC meanwhile wins.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::core::DynamicObject;
use tokio::sync::watch;

use crate::cluster::lease::LeaseLock;
use crate::cluster::spc_store::CachedSpc;
use crate::cluster::{Cluster, spc_resource};
use crate::lifecycle::ticks::Ticks;

/// The collector's state between passes.
pub struct Collector {
    cluster: Cluster,
    grace: Duration,
    unreferenced_since: BTreeMap<(String, String), Instant>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// SPCs deleted, as (namespace, name).
    pub deleted: Vec<(String, String)>,
    /// SPCs unreferenced but still within the grace period.
    pub waiting: usize,
}

impl Collector {
    /// A collector over `cluster`'s caches.
    pub fn new(cluster: Cluster, grace: Duration) -> Self {
        Self {
            cluster,
            grace,
            unreferenced_since: BTreeMap::new(),
        }
    }

    /// Looks at every generated SPC once and deletes the expired ones.
    pub async fn pass(&mut self) -> Pass {
        if !self.cluster.markers_synced() {
            tracing::debug!("pod cache not synced yet; nothing collected");
            return Pass::default();
        }
        let now = Instant::now();
        let wall = Timestamp::now();
        let referenced = self.cluster.referenced_spcs();
        let mut pass = Pass::default();
        let mut seen = BTreeMap::new();
        for (namespace, name, spc) in self.cluster.generated_spcs() {
            let key = (namespace, name);
            if referenced.contains(&key) {
                continue;
            }
            let since = *self.unreferenced_since.get(&key).unwrap_or(&now);
            seen.insert(key.clone(), since);
            if now.duration_since(since) < self.grace || spc.used_within(wall, self.grace) {
                pass.waiting += 1;
                continue;
            }
            match self.delete(&key, &spc).await {
                Ok(()) => {
                    tracing::info!(namespace = %key.0, name = %key.1, "deleted unused SecretProviderClass");
                    seen.remove(&key);
                    pass.deleted.push(key);
                }
                Err(error) => {
                    tracing::warn!(namespace = %key.0, name = %key.1, %error, "could not delete SecretProviderClass")
                }
            }
        }
        self.unreferenced_since = seen;
        pass
    }

    async fn delete(
        &self,
        (namespace, name): &(String, String),
        spc: &CachedSpc,
    ) -> Result<(), kube::Error> {
        let api = Api::<DynamicObject>::namespaced_with(
            self.cluster.client().clone(),
            namespace,
            &spc_resource(),
        );
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: spc.resource_version.clone(),
                uid: spc.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => Ok(()),
            // Already gone, or changed since the cache saw it: either way, not ours to delete now.
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// Runs the collector while this replica holds `lease`, until `shutdown` resolves. Passes run
/// every `interval`; the Lease is renewed at least three times per its duration; `on_deleted`
/// hears how many SPCs each pass deleted; `leading` tells the other Lease holder's tasks
/// (rotation restarts, un-injected pods) whether this replica holds it.
pub async fn run(
    mut collector: Collector,
    lease: LeaseLock,
    interval: Duration,
    on_deleted: impl Fn(usize) + Send,
    leading_to: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) {
    let tick = interval
        .min(lease.duration() / 3)
        .max(Duration::from_millis(100));
    let mut ticks = Ticks::new(tick, shutdown);
    let mut last_pass: Option<Instant> = None;
    let mut leading = false;
    while ticks.next().await {
        let held = match lease.acquire_or_renew().await {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(%error, "lease request failed");
                false
            }
        };
        if held != leading {
            tracing::info!(leading = held, "collector lease");
            leading = held;
            leading_to.send_replace(held);
            // A new leader starts its grace clocks afresh.
            collector.unreferenced_since.clear();
        }
        if held && last_pass.is_none_or(|t| t.elapsed() >= interval) {
            let pass = collector.pass().await;
            on_deleted(pass.deleted.len());
            last_pass = Some(Instant::now());
        }
    }
    leading_to.send_replace(false);
}
