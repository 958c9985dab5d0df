//! The admission pipeline: what happens to one decoded AdmissionReview, step by step.
//!
//! decode (in `http`) → plan → soften for workloads → require an opted-in namespace → verify →
//! write the SPCs → answer. Each step
//! is one method below and reads like its line in `docs/contract.md`; the HTTP layer only
//! translates, and the rules themselves live in `core`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::cluster::denials::{DenialEvents, Denied};
use crate::cluster::workloads::controller_of;
use crate::core::annotations::{NAMESPACE_INJECTION_ENABLED, NAMESPACE_INJECTION_LABEL};
use crate::core::denial::{Denial, DenialReason, warning};
use crate::core::facts::{ClusterFacts, LayeredFacts, Miss, RecordingFacts};
use crate::core::plan::Settings;
use crate::core::spc::GeneratedSpc;
use crate::keyvault::{Verifier, VerifyMode};
use kube::core::admission::Operation;

use crate::webhook::admission::{self, Answer, Decoded, Outcome, ReviewError, Route};
use crate::webhook::listener::Limits;
use crate::webhook::memo::{self, Kept, PlanMemo};
use crate::webhook::metrics::SharedMetrics;

/// Time kept for the SPC write when Key Vault verification runs before it.
const WRITE_RESERVE: Duration = Duration::from_secs(1);

/// The time one review may take: the API server's `?timeout=` less a margin, so kvinject answers
/// (or denies with its reason) before the API server gives up on it.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    deadline: Instant,
}

impl Budget {
    /// The API server's default webhook timeout, when a request names none.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// A budget from `started` for a webhook whose timeout is `timeout`: a tenth of it, at least
    /// 250 ms, is kept for the answer to travel.
    pub fn for_timeout(started: Instant, timeout: Duration) -> Self {
        let margin = (timeout / 10).max(Duration::from_millis(250));
        Self {
            deadline: started + timeout.saturating_sub(margin),
        }
    }

    /// Time left.
    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// `work` within `time` (and within the budget); `None` when it did not finish.
    async fn run<T>(&self, time: Duration, work: impl Future<Output = T>) -> Option<T> {
        let time = time.min(self.left());
        tokio::time::timeout(time, work).await.ok()
    }
}

/// Everything the pipeline reads: where facts come from, where SPCs go, and the verifier.
#[derive(Clone)]
pub struct Reviewer {
    facts: Arc<dyn ClusterFacts + Send + Sync>,
    cluster: Option<Cluster>,
    settings: Arc<Settings>,
    limits: Limits,
    spc_refresh: Duration,
    metrics: SharedMetrics,
    verifier: Option<(Arc<Verifier>, VerifyMode)>,
    /// Namespaces a direct read just showed not opted in, and when: a flood of forged reviews
    /// naming them costs the API server one read per `namespace_recheck`, not one per review.
    refused_namespaces: Arc<Mutex<HashMap<String, Instant>>>,
    /// Where denials of controller-made pods go, to be told to their workload.
    denial_events: Option<DenialEvents>,
    /// Pods' answers remembered while their facts hold (`None`: every pod planned).
    memo: Option<Arc<PlanMemo>>,
}

/// Namespaces remembered as not opted in, at most; when full, the memory starts afresh.
const MAX_REFUSED_NAMESPACES: usize = 1024;

impl Reviewer {
    /// A pipeline over fixed `facts` (manifests): nothing is looked up or written.
    pub fn new(
        facts: Arc<dyn ClusterFacts + Send + Sync>,
        settings: Settings,
        limits: Limits,
    ) -> Self {
        Self {
            facts,
            cluster: None,
            settings: Arc::new(settings),
            limits,
            spc_refresh: Duration::ZERO,
            metrics: SharedMetrics::default(),
            verifier: None,
            refused_namespaces: Arc::default(),
            denial_events: None,
            memo: PlanMemo::new(memo::DEFAULT_ENTRIES).map(Arc::new),
        }
    }

    /// A pipeline over a live cluster: facts from its caches, missing ones looked up, generated
    /// SPCs written (and marked used at most once per `spc_refresh`).
    pub fn live(
        cluster: Cluster,
        settings: Settings,
        limits: Limits,
        spc_refresh: Duration,
    ) -> Self {
        let mut reviewer = Self::new(Arc::new(cluster.clone()), settings, limits);
        reviewer.cluster = Some(cluster);
        reviewer.spc_refresh = spc_refresh;
        reviewer
    }

    /// The same pipeline, counting into `metrics`.
    pub fn with_metrics(mut self, metrics: SharedMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The same pipeline, checking generated pods' objects against Key Vault in `mode`.
    pub fn with_verifier(mut self, verifier: Arc<Verifier>, mode: VerifyMode) -> Self {
        self.verifier = (mode != VerifyMode::Off).then_some((verifier, mode));
        self
    }

    /// The same pipeline, handing denials of controller-made pods to `events` (`None`: off).
    pub fn with_denial_events(mut self, events: Option<DenialEvents>) -> Self {
        self.denial_events = events;
        self
    }

    /// The same pipeline, remembering at most `entries` pods' answers (0: none).
    pub fn with_plan_memo(mut self, entries: usize) -> Self {
        self.memo = PlanMemo::new(entries).map(Arc::new);
        self
    }

    /// The metrics this pipeline counts into.
    pub fn metrics(&self) -> &SharedMetrics {
        &self.metrics
    }

    /// The limits the webhook serves under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Decodes a request that came through `route`: with a memo, a `/mutate` object's kept
    /// fields are written as the memo's key and read only when a pod is planned (or denied).
    pub fn decode<'b>(&self, route: Route, body: &'b [u8]) -> Result<Decoded<'b>, ReviewError> {
        match (route, &self.memo) {
            (Route::Mutate, Some(memo)) => admission::decode_recalling(body, memo),
            _ => admission::decode(body),
        }
    }

    /// Answers one decoded request that came through `route`, every step within `budget`.
    pub async fn review(
        &self,
        route: Route,
        decoded: &Decoded<'_>,
        budget: Budget,
    ) -> Result<Answer, ReviewError> {
        let answer = self.plan(route, decoded, budget).await?;
        let answer = soften_for_workloads(route, answer);
        let answer = self.require_opted_in(route, decoded, answer, budget).await;
        let answer = self.verify(answer, budget).await;
        let answer = self.write_spcs(decoded, answer, budget).await;
        self.tell_denial(route, decoded, &answer);
        Ok(answer)
    }

    /// A pod denied on `/mutate` (not a dry run, not for its namespace's opt-in) whose creator is
    /// a controller: its workload hears of it through an Event.
    fn tell_denial(&self, route: Route, decoded: &Decoded<'_>, answer: &Answer) {
        let (Some(events), Some(message)) = (&self.denial_events, answer.denial_message()) else {
            return;
        };
        let request = &decoded.request;
        if route != Route::Mutate
            || request.dry_run
            || request.kind.kind != "Pod"
            || request.operation != Operation::Create
            || answer.denial_reason == Some(DenialReason::Namespace)
        {
            return;
        }
        let namespace = decoded.namespace();
        let metadata = decoded.object().map(|object| object["metadata"].to_value());
        if let Some(controller) = metadata.and_then(|m| controller_of(namespace, &m)) {
            events.denied(Denied {
                controller,
                message: message.to_owned(),
            });
        }
    }

    /// The core over the facts; when it denies for an object the caches do not know (yet), one
    /// direct look-up round and the core again.
    async fn plan(
        &self,
        route: Route,
        decoded: &Decoded<'_>,
        budget: Budget,
    ) -> Result<Answer, ReviewError> {
        let facts = self.facts.as_ref();
        // The recorder is dropped before any await: it borrows facts that need not be Sync.
        let (answer, misses) = match (admission::plans_pod(route, decoded)?, &self.memo) {
            (true, Some(memo)) => {
                let namespace = decoded.namespace();
                let kept = match decoded.kept_key() {
                    Some(key) => Kept::Key(key),
                    None => Kept::Tree(
                        (decoded.object()).ok_or(ReviewError::MissingObject("Pod CREATE"))?,
                    ),
                };
                let mut misses = Vec::new();
                let plan = |recording: &RecordingFacts| {
                    let answer =
                        admission::plan_object(decoded, namespace, recording, &self.settings);
                    if answer.missing_fact {
                        misses = recording.misses();
                    }
                    answer
                };
                let recalled =
                    memo.answer(kept, namespace, facts, plan, || decoded.names().clone());
                if let Some(names) = recalled.names {
                    decoded.name_by(names);
                }
                self.metrics.plan_memo(recalled.recall);
                (recalled.answer.for_uid(&decoded.request.uid), misses)
            }
            _ => {
                let recording = RecordingFacts::new(facts);
                let answer = admission::answer(route, decoded, &recording, &self.settings)?;
                (answer, recording.misses())
            }
        };
        let (true, Some(cluster)) = (answer.missing_fact, &self.cluster) else {
            return Ok(answer);
        };
        // Out of time, the denial over the caches stands.
        let Some(overlay) = budget.run(budget.left(), cluster.fetch(&misses)).await else {
            return Ok(answer);
        };
        let layered = LayeredFacts {
            overlay: &overlay,
            base: facts,
        };
        admission::answer(route, decoded, &layered, &self.settings)
    }

    /// In a cluster, a pod is only patched (and its SPC only written) in a namespace labelled
    /// `kvinject.io/injection: enabled`: the webhook's namespaceSelector already says so, but a
    /// forged review can name any namespace. The cache first; one direct read when it says no.
    async fn require_opted_in(
        &self,
        route: Route,
        decoded: &Decoded<'_>,
        answer: Answer,
        budget: Budget,
    ) -> Answer {
        let Some(cluster) = &self.cluster else {
            return answer;
        };
        let mutates = answer.outcome == Outcome::Patched || !answer.generated_spcs.is_empty();
        if route != Route::Mutate || !mutates {
            return answer;
        }
        let namespace = decoded.namespace();
        let opted_in = |facts: &dyn ClusterFacts| {
            facts
                .namespace(namespace)
                .is_some_and(|ns| ns.injection_enabled)
        };
        if opted_in(self.facts.as_ref()) {
            return answer;
        }
        if !self.refused_recently(namespace) {
            let miss = [Miss::Namespace(namespace.to_owned())];
            let read = cluster.fetch(&miss);
            if budget
                .run(budget.left(), read)
                .await
                .is_some_and(|fetched| opted_in(&fetched))
            {
                return answer;
            }
            self.remember_refused(namespace);
        }
        answer.deny(
            &Denial::new(format!(
                "namespace {namespace} is not labelled {NAMESPACE_INJECTION_LABEL}: {NAMESPACE_INJECTION_ENABLED}, \
                 so kvinject injects nothing and writes nothing there: label the namespace, or run the pod in one that is"
            ))
            .because(DenialReason::Namespace),
        )
    }

    fn refused_recently(&self, namespace: &str) -> bool {
        let recheck = self.limits.namespace_recheck;
        let refused = self.refused_namespaces.lock().ok();
        refused
            .and_then(|r| r.get(namespace).copied())
            .is_some_and(|at| at.elapsed() < recheck)
    }

    fn remember_refused(&self, namespace: &str) {
        if let Ok(mut refused) = self.refused_namespaces.lock() {
            if refused.len() >= MAX_REFUSED_NAMESPACES {
                refused.clear();
            }
            refused.insert(namespace.to_owned(), Instant::now());
        }
    }

    /// Checks the objects of an admitted generate-mode pod against Key Vault: problems with an
    /// object deny in `deny` mode and warn in `warn` mode; not knowing always only warns.
    async fn verify(&self, mut answer: Answer, budget: Budget) -> Answer {
        let Some((verifier, mode)) = &self.verifier else {
            return answer;
        };
        let objects = std::mem::take(&mut answer.objects);
        if answer.outcome == Outcome::Denied || objects.iter().all(|o| o.references.is_empty()) {
            return answer;
        }
        // What is left after keeping time for the SPC write.
        let time = budget.left().saturating_sub(WRITE_RESERVE);
        let checks = futures_util::future::join_all(
            objects
                .iter()
                .map(|vault| verifier.verify(&vault.vault, &vault.references)),
        );
        let Some(reports) = budget.run(time, checks).await else {
            answer.push_warning(warning(format_args!(
                "Key Vault objects not verified: no time left within the webhook's timeout; admitted without verification"
            )));
            return answer;
        };
        let mut refusals = Vec::new();
        for (label, report) in reports.into_iter().flatten() {
            self.metrics.verification(label);
            match report {
                Some(report) if report.about_object && *mode == VerifyMode::Deny => {
                    refusals.push(report.denial)
                }
                Some(report) => answer.push_warning(report.denial.message().to_owned()),
                None => {}
            }
        }
        if refusals.is_empty() {
            return answer;
        }
        let what: Vec<&str> = refusals.iter().map(Denial::what).collect();
        answer.deny(&Denial::new(what.join("; and ")).because(DenialReason::KeyVault))
    }

    /// Makes sure the SPCs an admitted pod needs exist before the pod does: written to the
    /// cluster (never for a dry run), or in facts mode, a warning for each the facts lack.
    async fn write_spcs(
        &self,
        decoded: &Decoded<'_>,
        mut answer: Answer,
        budget: Budget,
    ) -> Answer {
        if answer.generated_spcs.is_empty() {
            return answer;
        }
        let spcs = answer.generated_spcs.clone();
        let namespace = decoded.namespace();
        match &self.cluster {
            Some(_) if decoded.request.dry_run => {}
            Some(cluster) => {
                if let Some(denial) = self.over_spc_cap(cluster, &spcs, namespace) {
                    return answer.deny(&denial);
                }
                let writes = spcs
                    .iter()
                    .map(|spc| self.apply_spc(cluster, spc, namespace, budget));
                let results = futures_util::future::join_all(writes).await;
                if let Some((spc, reason)) = spcs
                    .iter()
                    .zip(results)
                    .find_map(|(spc, result)| Some((spc, result.err()?)))
                {
                    answer = answer.deny(
                        &Denial::new(format!(
                            "could not write SecretProviderClass {} in namespace {namespace}: {reason}; the pod \
                             cannot start without it, so it is not admitted: retry, or check kvinject's RBAC",
                            spc.name
                        ))
                        .because(DenialReason::SpcWrite),
                    );
                }
            }
            None => {
                for spc in spcs.iter() {
                    if self
                        .facts
                        .secret_provider_class(namespace, &spc.name)
                        .is_none()
                    {
                        answer.push_warning(warning(format_args!(
                            "SecretProviderClass {} does not exist in namespace {namespace}; this server \
                             reads its facts from a file and does not write it: apply the output of `kvinject inject`",
                            spc.name
                        )));
                    }
                }
            }
        }
        answer
    }

    /// New SPCs that would take a namespace past `max_spcs_per_namespace` generated ones.
    fn over_spc_cap(
        &self,
        cluster: &Cluster,
        spcs: &[GeneratedSpc],
        namespace: &str,
    ) -> Option<Denial> {
        let cap = self.limits.max_spcs_per_namespace;
        let names: Vec<&str> = spcs.iter().map(|spc| spc.name.as_str()).collect();
        let (held, new) = cluster.generated_spcs_besides(namespace, &names)?;
        if held + new <= cap {
            return None;
        }
        Some(
            Denial::new(format!(
                "namespace {namespace} already holds {held} SecretProviderClasses generated by kvinject and \
                 this pod needs {new} more, over the limit of {cap} (--max-spcs-per-namespace); unused ones are \
                 collected after the grace period: retry later, or ask the cluster admins to raise the limit"
            ))
            .because(DenialReason::Limit),
        )
    }

    /// One server-side apply within the write deadline, counted; the API server's reason on
    /// failure.
    async fn apply_spc(
        &self,
        cluster: &Cluster,
        spc: &GeneratedSpc,
        namespace: &str,
        budget: Budget,
    ) -> Result<(), String> {
        let time = budget.left().min(self.limits.write_timeout);
        let written = budget
            .run(time, cluster.ensure_spc(spc, namespace, self.spc_refresh))
            .await;
        let result = match written {
            Some(Ok(applied)) => {
                if applied {
                    self.metrics.spc_apply(true);
                }
                return Ok(());
            }
            Some(Err(kube::Error::Api(status))) => status.message,
            Some(Err(other)) => other.to_string(),
            None => format!(
                "no answer from the API server within {time:?}, the time left within the webhook's timeout"
            ),
        };
        self.metrics.spc_apply(false);
        Err(result)
    }
}

/// On `/validate-workloads` a denial for a missing object becomes a warning: the ServiceAccount
/// or SPC may be applied right after the workload, and its pods are checked when created.
fn soften_for_workloads(route: Route, answer: Answer) -> Answer {
    if route == Route::ValidateWorkloads && answer.missing_fact {
        answer.softened()
    } else {
        answer
    }
}
