//! No labelled pod runs without its secrets unnoticed.
//!
//! With `failurePolicy: Ignore`, a pod created before its namespace opted in, or one created while
//! the webhook was removed, a labelled pod starts without injection. The replica holding the
//! collector Lease looks at the pod cache on every pass: a pod labelled `kvinject.io/inject:
//! "true"`, asking for objects, not opted out, in an opted-in namespace, without the
//! `kvinject.io/injected` marker, is counted (`kvinject_uninjected_pods`, by namespace) and gets
//! one Warning Event. With eviction on, such pods are evicted through the Eviction API (so
//! PodDisruptionBudgets apply), at most one per interval, so their owners recreate them through
//! the webhook; a pod without a controller to recreate it is never evicted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use kube::Client;
use serde_json::json;
use tokio::sync::watch;

use crate::cluster::caches::CachedPod;
use crate::cluster::events::{EventWriter, Involved, Reason};
use crate::cluster::workloads::WorkloadKind;
use crate::lifecycle::ticks::Ticks;

/// The check's settings (`serve --uninjected-pods`, `--evict-uninjected`).
#[derive(Clone)]
pub struct UninjectedSettings {
    /// Namespaces whose pods are never injected (`kube-system`, `kube-node-lease`, kvinject's).
    pub never_injected: Vec<String>,
    /// Evict, and how; `None`: only count and tell.
    pub eviction: Option<Eviction>,
}

/// How pods are evicted.
#[derive(Clone)]
pub struct Eviction {
    /// At most one eviction per this interval.
    pub interval: Duration,
    /// A client that does not retry `429 Too Many Requests` by itself: that is how the Eviction
    /// API says a PodDisruptionBudget does not allow it now, and the next pod is tried instead.
    pub client: Client,
}

/// How long a pod whose eviction a PodDisruptionBudget refused is left alone.
const BLOCKED_BACKOFF: Duration = Duration::from_secs(60);
/// Most Events written in one pass: a namespace opted in over hundreds of old pods is told over
/// a few passes, not in one burst.
const EVENTS_PER_PASS: usize = 50;

/// How long a pod whose Event could not be written is left before the next try.
const TELL_BACKOFF: Duration = Duration::from_secs(300);
/// Controllers whose replacement pod came back without injection too, after which no pod is
/// evicted any more: the webhook is not being called (kvinject's logs and the API server's
/// tell why), and evicting would only cycle pods.
const TRIPS_TO_STOP: usize = 3;

/// The check's state between passes.
pub struct UninjectedPods {
    events: EventWriter,
    settings: UninjectedSettings,
    /// Pods told about (by uid).
    told: HashSet<Box<str>>,
    /// Pods whose Event could not be written, until when they are left alone.
    untold: HashMap<Box<str>, Instant>,
    /// Pods whose eviction was refused, until when they are left alone.
    blocked: HashMap<Box<str>, Instant>,
    next_eviction: Instant,
    /// Controllers (by uid) a pod was evicted from, and the uninjected pods each had then.
    evicted_from: HashMap<String, HashSet<Box<str>>>,
    /// Controllers whose replacement pod was not injected either: never evicted from again.
    tripped: HashSet<String>,
}

/// What one pass found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Un-injected pods by namespace.
    pub by_namespace: BTreeMap<String, usize>,
    /// Events written.
    pub told: usize,
    /// The pod evicted, as (namespace, name).
    pub evicted: Option<(String, String)>,
}

impl UninjectedPods {
    /// A check writing through `events`.
    pub fn new(events: EventWriter, settings: UninjectedSettings) -> Self {
        Self {
            events,
            settings,
            told: HashSet::new(),
            untold: HashMap::new(),
            blocked: HashMap::new(),
            next_eviction: Instant::now(),
            evicted_from: HashMap::new(),
            tripped: HashSet::new(),
        }
    }

    /// Looks at every cached pod once: counts, tells, and evicts when due.
    pub async fn pass(&mut self) -> Pass {
        let cluster = self.events.cluster().clone();
        if !cluster.pods_and_namespaces_synced() {
            return Pass::default();
        }
        let never: Vec<&str> = self
            .settings
            .never_injected
            .iter()
            .map(String::as_str)
            .collect();
        let mut pods = cluster.uninjected_pods(&never);
        pods.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut pass = Pass::default();
        for (namespace, ..) in &pods {
            *pass.by_namespace.entry(namespace.clone()).or_default() += 1;
        }
        self.events.metrics().uninjected(&pass.by_namespace);
        let now = Instant::now();
        let current: HashSet<&str> = pods.iter().map(|(_, _, pod)| &*pod.uid).collect();
        self.told.retain(|uid| current.contains(&**uid));
        self.untold
            .retain(|uid, until| current.contains(&**uid) && *until > now);
        self.blocked
            .retain(|uid, until| current.contains(&**uid) && *until > now);
        for (namespace, name, pod) in &pods {
            if pass.told >= EVENTS_PER_PASS {
                break;
            }
            if self.told.contains(&pod.uid) || self.untold.contains_key(&pod.uid) {
                continue;
            }
            if self.tell(namespace, name, pod).await {
                self.told.insert(pod.uid.clone());
                pass.told += 1;
            } else {
                self.untold.insert(pod.uid.clone(), now + TELL_BACKOFF);
            }
        }
        self.trip_controllers_that_came_back_uninjected(&pods);
        if let Some(interval) = self.settings.eviction.as_ref().map(|e| e.interval)
            && now >= self.next_eviction
            && self.tripped.len() < TRIPS_TO_STOP
        {
            let candidate = pods.iter().find(|(_, _, pod)| {
                pod.controller
                    .as_ref()
                    .is_some_and(|c| c.kind != WorkloadKind::Job && !self.tripped.contains(&c.uid))
                    && !self.blocked.contains_key(&pod.uid)
            });
            if let Some((namespace, name, pod)) = candidate {
                self.next_eviction = now + interval;
                if self.evict(namespace, name, pod, &pods).await {
                    pass.evicted = Some((namespace.clone(), name.clone()));
                }
            }
        }
        pass
    }

    /// A controller a pod was evicted from that has another un-injected pod, one it did not
    /// have then, recreated it without injection: the webhook is not called for its pods.
    fn trip_controllers_that_came_back_uninjected(&mut self, pods: &[(String, String, CachedPod)]) {
        for (_, name, pod) in pods {
            let Some(controller) = &pod.controller else {
                continue;
            };
            let came_back = self
                .evicted_from
                .get(&controller.uid)
                .is_some_and(|then| !then.contains(&pod.uid));
            if came_back && self.tripped.insert(controller.uid.clone()) {
                tracing::warn!(controller = %controller, pod = %name,
                    "a pod evicted for running without injection came back without it: the webhook \
                     is not called for these pods; no more evictions from this controller");
                if self.tripped.len() == TRIPS_TO_STOP {
                    tracing::error!(
                        "pods of {TRIPS_TO_STOP} controllers came back without injection after \
                        eviction: evictions stopped until kvinject restarts; check that the API server \
                        reaches the webhook"
                    );
                }
            }
        }
    }

    async fn tell(&self, namespace: &str, name: &str, pod: &CachedPod) -> bool {
        let fix = match (&pod.controller, &self.settings.eviction) {
            (Some(_), Some(_)) => {
                "kvinject evicts it so that its owner recreates it through the webhook".to_owned()
            }
            (Some(owner), None) => format!(
                "restart {owner} (kubectl rollout restart) so that its pods are created through the webhook"
            ),
            (None, _) => {
                "it has no controller to recreate it: delete and create it again".to_owned()
            }
        };
        let message = format!(
            "pod is labelled kvinject.io/inject=true in an opted-in namespace but was not injected \
             (no kvinject.io/injected annotation), so it runs without its Key Vault objects; it was \
             created while the webhook was not called for it (failurePolicy Ignore, the webhook \
             removed or unreachable, or the namespace opted in later): {fix}"
        );
        self.events
            .write(
                &Involved::pod(namespace, name, &pod.uid),
                Reason::NotInjected,
                &message,
                "not-injected",
            )
            .await
            .is_ok()
    }

    async fn evict(
        &mut self,
        namespace: &str,
        name: &str,
        pod: &CachedPod,
        pods: &[(String, String, CachedPod)],
    ) -> bool {
        let Some(eviction) = &self.settings.eviction else {
            return false;
        };
        let Some(controller) = pod.controller.as_deref() else {
            return false;
        };
        // A controller that does not exist (or is another object) recreates nothing.
        if self
            .events
            .cluster()
            .read_workload(controller)
            .await
            .is_err()
        {
            self.blocked
                .insert(pod.uid.clone(), Instant::now() + BLOCKED_BACKOFF);
            return false;
        }
        let metrics = self.events.metrics().clone();
        match evict_exactly(&eviction.client, namespace, name, &pod.uid).await {
            Ok(_) => {
                let then = pods
                    .iter()
                    .filter(|(_, _, other)| {
                        other
                            .controller
                            .as_ref()
                            .is_some_and(|c| c.uid == controller.uid)
                    })
                    .map(|(_, _, other)| other.uid.clone())
                    .collect();
                self.evicted_from.insert(controller.uid.clone(), then);
                metrics.uninjected_eviction("evicted");
                tracing::info!(namespace, pod = name, "evicted a pod that was not injected");
                let message = "evicted by kvinject: it ran without the Key Vault objects it asks for; \
                               its owner recreates it through the webhook";
                let _ = self
                    .events
                    .write(
                        &Involved::pod(namespace, name, &pod.uid),
                        Reason::EvictedNotInjected,
                        message,
                        "evicted",
                    )
                    .await;
                true
            }
            // A PodDisruptionBudget does not allow it now.
            Err(kube::Error::Api(status)) if status.code == 429 => {
                metrics.uninjected_eviction("blocked");
                self.blocked
                    .insert(pod.uid.clone(), Instant::now() + BLOCKED_BACKOFF);
                false
            }
            // Gone, or another pod of that name now.
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => false,
            Err(error) => {
                metrics.uninjected_eviction("failed");
                tracing::warn!(namespace, pod = name, %error, "could not evict a pod that was not injected");
                self.blocked
                    .insert(pod.uid.clone(), Instant::now() + BLOCKED_BACKOFF);
                false
            }
        }
    }

    /// While not holding the Lease: nothing is counted here (the holder counts).
    fn stand_by(&mut self) {
        self.events.metrics().uninjected(&BTreeMap::new());
        self.told.clear();
    }
}

/// Evicts the pod `name` only if it is still the one of `uid` (`policy/v1` Eviction with a uid
/// precondition, so one recreated under the name since the cache saw it is left alone). kube's
/// own `Api::evict` sends its delete options under a key the API server does not read.
async fn evict_exactly(
    client: &Client,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<(), kube::Error> {
    let body = json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": namespace},
        "deleteOptions": {"preconditions": {"uid": uid}},
    });
    let request = axum::http::Request::post(format!(
        "/api/v1/namespaces/{namespace}/pods/{name}/eviction"
    ))
    .header(axum::http::header::CONTENT_TYPE, "application/json")
    .body(body.to_string().into_bytes())
    .map_err(kube::Error::HttpError)?;
    client.request_text(request).await.map(drop)
}

/// Runs the check every `interval` while this replica holds the Lease (`leading`), until
/// `shutdown` resolves.
pub async fn run(
    mut check: UninjectedPods,
    interval: Duration,
    leading: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) {
    let mut ticks = Ticks::new(interval, shutdown);
    while ticks.next().await {
        if *leading.borrow() {
            check.pass().await;
        } else {
            check.stand_by();
        }
    }
}
