//! Prometheus metrics, served as text on the health port's `/metrics`.
//!
//! Label values come from small fixed sets (routes, outcomes, reasons, known kinds), never from
//! request content such as pod names, so cardinality stays bounded whatever clients send.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::core::denial::DenialReason;
use crate::keyvault::Checked;
use crate::webhook::memo::Recall;

/// Kinds kvinject is registered for; anything else is counted as `other`.
const KNOWN_KINDS: [&str; 7] = [
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
];

/// Labels of an admission: fixed strings, so counting one allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// Webhook path name.
    pub route: &'static str,
    /// Object kind (bounded to the known kinds).
    pub kind: &'static str,
    /// patched, allowed, denied or invalid.
    pub outcome: &'static str,
}

/// Labels of a denial.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    /// Webhook path name.
    pub route: &'static str,
    /// The denial's reason class.
    pub reason: &'static str,
}

/// Labels of an admission's duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Webhook path name.
    pub route: &'static str,
}

/// One label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Label {
    /// Its value.
    pub value: String,
}

/// A cache's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// Cache name.
    pub cache: String,
}

/// Every metric kvinject exports.
pub struct Metrics {
    registry: Registry,
    admissions: Family<AdmissionLabels, Counter>,
    denials: Family<DenialLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    rejected: Family<Vec<(String, String)>, Counter>,
    panics: Counter,
    spc_applies: Family<Vec<(String, String)>, Counter>,
    spc_deletions: Counter,
    cache_synced: Family<CacheLabels, Gauge>,
    cache_objects: Family<CacheLabels, Gauge>,
    verifications: Family<Vec<(String, String)>, Counter>,
    in_flight: Gauge,
    ready: Gauge,
    certificate_expiry: Gauge,
    rotation_restarts: Family<Vec<(String, String)>, Counter>,
    rotation_skipped: Family<Vec<(String, String)>, Counter>,
    rotation_deferred: Family<Vec<(String, String)>, Counter>,
    uninjected_pods: Family<Vec<(String, String)>, Gauge>,
    uninjected_evictions: Family<Vec<(String, String)>, Counter>,
    events: Family<Vec<(String, String)>, Counter>,
    /// `plan_cache_lookups` by result, in [`Recall::ALL`] order: created once, counted without
    /// a label lookup on every admission.
    plan_memo: [Counter; 3],
}

/// Why a rotation restarted nothing: the pod did not ask, the object is only a file, the owner
/// is not restartable or is gone, or the request failed.
pub const ROTATION_SKIPPED: [&str; 5] = [
    "not_opted_in",
    "file_only",
    "not_restartable",
    "owner_not_found",
    "failed",
];
/// Why a restart waits: the workload's minimum interval, or the cluster-wide concurrency limit.
pub const ROTATION_DEFERRED: [&str; 2] = ["min_interval", "max_concurrent"];
/// Results of an eviction of a pod without injection (`blocked`: a PodDisruptionBudget).
pub const EVICTION_RESULTS: [&str; 3] = ["evicted", "blocked", "failed"];

/// An admission being answered, counted in `kvinject_admissions_in_flight` until dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kvinject");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission requests answered, by route, kind and outcome",
            admissions.clone(),
        );
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "denials",
            "Admission denials, by route and reason",
            denials.clone(),
        );
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
            ])
        });
        registry.register(
            "admission_duration_seconds",
            "Time from the request's arrival to its answer, by route",
            duration.clone(),
        );
        let rejected = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "http_rejected",
            "Requests refused before the core, by HTTP status",
            rejected.clone(),
        );
        let panics = Counter::default();
        registry.register(
            "handler_panics",
            "Request handlers that panicked (answered 500)",
            panics.clone(),
        );
        let spc_applies = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "spc_applies",
            "SecretProviderClass server-side applies, by result",
            spc_applies.clone(),
        );
        let spc_deletions = Counter::default();
        registry.register(
            "spc_gc_deletions",
            "Generated SecretProviderClasses deleted by the collector",
            spc_deletions.clone(),
        );
        let cache_synced = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "cache_synced",
            "1 when the watch cache has synced",
            cache_synced.clone(),
        );
        let cache_objects = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "cache_objects",
            "Objects in the watch cache",
            cache_objects.clone(),
        );
        let verifications = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "keyvault_verifications",
            "Key Vault object verifications, by result",
            verifications.clone(),
        );
        // Series whose labels are known up front start at zero, so a rate or an alert over
        // them has data before the first event (Prometheus's advice on missing series).
        for result in ["ok", "error"] {
            let _ = spc_applies.get_or_create(&vec![("result".into(), result.into())]);
        }
        for result in Checked::LABELS {
            let _ = verifications.get_or_create(&vec![("result".into(), result.into())]);
        }
        let in_flight = Gauge::default();
        registry.register(
            "admissions_in_flight",
            "Admission requests being answered (their body read, their answer not yet sent)",
            in_flight.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when /readyz answers 200: the HTTPS listener up, every cache synced, the certificate valid",
            ready.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "serving_certificate_expiry_timestamp_seconds",
            "End of validity of the serving certificate (Unix time); 0 before one is loaded",
            certificate_expiry.clone(),
        );
        let rotation_restarts = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "rotation_restarts",
            "Workloads restarted because objects their env vars read were rotated, by kind",
            rotation_restarts.clone(),
        );
        let rotation_skipped = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "rotation_restarts_skipped",
            "Rotated objects that restarted nothing, by reason",
            rotation_skipped.clone(),
        );
        let rotation_deferred = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "rotation_restarts_deferred",
            "Restarts left for later, by reason",
            rotation_deferred.clone(),
        );
        let uninjected_pods = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "uninjected_pods",
            "Labelled pods of opted-in namespaces running without injection, by namespace (exported by the Lease holder)",
            uninjected_pods.clone(),
        );
        let uninjected_evictions = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "uninjected_evictions",
            "Evictions of pods running without injection, by result",
            uninjected_evictions.clone(),
        );
        let events = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "events",
            "Kubernetes Events written, by reason and result",
            events.clone(),
        );
        let plan_memo_family = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "plan_cache_lookups",
            "Pod CREATEs looked up among the remembered plans, by result (hit, miss, stale: a fact it was planned on changed)",
            plan_memo_family.clone(),
        );
        let plan_memo = Recall::ALL.map(|recall| {
            (plan_memo_family)
                .get_or_create(&vec![("result".into(), recall.as_str().into())])
                .clone()
        });
        for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
            let _ = rotation_restarts.get_or_create(&vec![("kind".into(), kind.into())]);
        }
        for reason in ROTATION_SKIPPED {
            let _ = rotation_skipped.get_or_create(&vec![("reason".into(), reason.into())]);
        }
        for reason in ROTATION_DEFERRED {
            let _ = rotation_deferred.get_or_create(&vec![("reason".into(), reason.into())]);
        }
        for result in EVICTION_RESULTS {
            let _ = uninjected_evictions.get_or_create(&vec![("result".into(), result.into())]);
        }
        for reason in crate::cluster::events::Reason::ALL {
            for result in ["written", "failed"] {
                let _ = events.get_or_create(&vec![
                    ("reason".into(), reason.as_str().into()),
                    ("result".into(), result.into()),
                ]);
            }
        }
        Self {
            registry,
            rotation_restarts,
            rotation_skipped,
            rotation_deferred,
            uninjected_pods,
            uninjected_evictions,
            events,
            plan_memo,
            in_flight,
            ready,
            certificate_expiry,
            admissions,
            denials,
            duration,
            rejected,
            panics,
            spc_applies,
            spc_deletions,
            cache_synced,
            cache_objects,
            verifications,
        }
    }

    /// Counts an answered admission.
    pub fn admission(&self, route: &'static str, kind: &str, outcome: &'static str, seconds: f64) {
        let kind = KNOWN_KINDS
            .iter()
            .find(|known| **known == kind)
            .copied()
            .unwrap_or("other");
        self.admissions
            .get_or_create(&AdmissionLabels {
                route,
                kind,
                outcome,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }

    /// Counts a look-up among the remembered plans.
    pub fn plan_memo(&self, recall: Recall) {
        self.plan_memo[recall as usize].inc();
    }

    /// Counts a denial.
    pub fn denial(&self, route: &'static str, reason: DenialReason) {
        self.denials
            .get_or_create(&DenialLabels {
                route,
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts a request refused at the HTTP level.
    pub fn rejected(&self, status: u16) {
        self.rejected
            .get_or_create(&vec![("status".into(), status.to_string())])
            .inc();
    }

    /// Counts a handler panic.
    pub fn panic(&self) {
        self.panics.inc();
    }

    /// Counts an SPC apply.
    pub fn spc_apply(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.spc_applies
            .get_or_create(&vec![("result".into(), result.into())])
            .inc();
    }

    /// Counts SPC deletions.
    pub fn spc_deleted(&self, count: u64) {
        self.spc_deletions.inc_by(count);
    }

    /// Counts a Key Vault verification result (`ok`, `missing`, `disabled`, ..., `unverified`).
    pub fn verification(&self, result: &str) {
        self.verifications
            .get_or_create(&vec![("result".into(), result.to_owned())])
            .inc();
    }

    /// Records a cache's state (read at scrape time).
    pub fn cache(&self, cache: &str, synced: bool, objects: usize) {
        let labels = CacheLabels {
            cache: cache.to_owned(),
        };
        self.cache_synced
            .get_or_create(&labels)
            .set(i64::from(synced));
        self.cache_objects
            .get_or_create(&labels)
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
    }

    /// Counts an admission in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Records readiness and the serving certificate's end of validity (read at scrape time).
    pub fn health(&self, ready: bool, certificate_expiry: Option<i64>) {
        self.ready.set(i64::from(ready));
        self.certificate_expiry.set(certificate_expiry.unwrap_or(0));
    }

    /// Counts a restart for rotated objects.
    pub fn rotation_restart(&self, kind: &str) {
        self.rotation_restarts
            .get_or_create(&vec![("kind".into(), kind.to_owned())])
            .inc();
    }

    /// Counts a rotated object that restarted nothing ([`ROTATION_SKIPPED`]).
    pub fn rotation_skipped(&self, reason: &str) {
        self.rotation_skipped
            .get_or_create(&vec![("reason".into(), reason.to_owned())])
            .inc();
    }

    /// Counts a restart left for later ([`ROTATION_DEFERRED`]).
    pub fn rotation_deferred(&self, reason: &str) {
        self.rotation_deferred
            .get_or_create(&vec![("reason".into(), reason.to_owned())])
            .inc();
    }

    /// Sets the pods without injection by namespace; namespaces not named are dropped.
    pub fn uninjected(&self, by_namespace: &std::collections::BTreeMap<String, usize>) {
        self.uninjected_pods.clear();
        for (namespace, count) in by_namespace {
            self.uninjected_pods
                .get_or_create(&vec![("namespace".into(), namespace.clone())])
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
    }

    /// Counts an eviction of a pod without injection ([`EVICTION_RESULTS`]).
    pub fn uninjected_eviction(&self, result: &str) {
        self.uninjected_evictions
            .get_or_create(&vec![("result".into(), result.to_owned())])
            .inc();
    }

    /// Counts an Event written (or not).
    pub fn event(&self, reason: &str, written: bool) {
        let result = if written { "written" } else { "failed" };
        self.events
            .get_or_create(&vec![
                ("reason".into(), reason.to_owned()),
                ("result".into(), result.into()),
            ])
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Shared metrics handle.
pub type SharedMetrics = Arc<Metrics>;
