//! The admission adapter: AdmissionReview v1 bytes in, AdmissionReview v1 bytes out.
//!
//! Translates only: decoding, routing not-our-business requests, calling the core, and encoding
//! the answer exactly as the API server reads it. No I/O here: HTTP is `http`'s, look-ups and
//! the SPC write are the pipeline's (`review`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use json_patch::Patch;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::response::Status;
use serde_json::Value;

use crate::core::denial::{Denial, DenialReason};
use crate::core::facts::ClusterFacts;
use crate::core::identity;
use crate::core::plan::{self, Decision, Settings, SkipReason};
use crate::core::pod::{PodView, template_path};
use crate::core::spc::GeneratedSpc;

/// The only AdmissionReview version kvinject registers for.
pub const ADMISSION_V1: &str = "admission.k8s.io/v1";

/// Which webhook a request came through (its URL path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/mutate`: Pod CREATE, patched.
    Mutate,
    /// `/validate-workloads`: workload CREATE/UPDATE, validated with the pod rules.
    ValidateWorkloads,
    /// `/validate-pod-identity`: Pod CREATE/UPDATE with `aadpodidbinding`, the identity policy.
    ValidatePodIdentity,
}

impl Route {
    /// Stable name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutate => "mutate",
            Self::ValidateWorkloads => "validate-workloads",
            Self::ValidatePodIdentity => "validate-pod-identity",
        }
    }
}

/// Why a request body is not an admission request kvinject can answer (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON: empty, truncated, too deeply nested or invalid UTF-8.
    #[error("body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but not an AdmissionReview.
    #[error("body is not an AdmissionReview: {0}")]
    NotAdmissionReview(String),
    /// An AdmissionReview of another version.
    #[error(
        "AdmissionReview apiVersion {0:?} is not supported; register the webhook with admissionReviewVersions: [v1]"
    )]
    UnsupportedVersion(String),
    /// No `request`.
    #[error("AdmissionReview has no request")]
    MissingRequest,
    /// An empty `request.uid`: no answer could be matched to it.
    #[error("AdmissionReview request has an empty uid")]
    MissingUid,
    /// A CREATE or UPDATE without the object.
    #[error("AdmissionReview request for a {0} has no object")]
    MissingObject(&'static str),
}

/// How an admission ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed with a patch.
    Patched,
    /// Allowed without a patch: validated, not our business, skipped, or already injected.
    Allowed,
    /// Denied.
    Denied,
}

impl Outcome {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patched => "patched",
            Self::Allowed => "allowed",
            Self::Denied => "denied",
        }
    }
}

/// A decoded request: the typed envelope, and the object exactly as received.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// `request`, with `object` left out.
    pub request: AdmissionRequest<DynamicObject>,
    /// `request.object` as received (never through typed structs).
    pub object: Option<Value>,
}

impl Decoded {
    /// The object's namespace: `request.namespace`, else the object's own (controller-made pods
    /// have it only in the request).
    pub fn namespace(&self) -> String {
        self.request
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .or_else(|| {
                self.object
                    .as_ref()
                    .and_then(|o| o["metadata"]["namespace"].as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "default".to_owned())
    }

    /// The workload that owns the object (`ReplicaSet/web-7d9f8`), else the object itself, for
    /// logs: never the object's content.
    pub fn workload(&self) -> String {
        let owner = self
            .object
            .as_ref()
            .and_then(|o| o["metadata"]["ownerReferences"].as_array())
            .and_then(|owners| {
                owners
                    .iter()
                    .find(|o| o["controller"] == true)
                    .or(owners.first())
            })
            .and_then(|o| Some(format!("{}/{}", o["kind"].as_str()?, o["name"].as_str()?)));
        owner.unwrap_or_else(|| format!("{}/{}", self.request.kind.kind, self.name()))
    }

    /// The object's name, else its `generateName`.
    pub fn name(&self) -> String {
        if !self.request.name.is_empty() {
            return self.request.name.clone();
        }
        let metadata = self.object.as_ref().map(|o| &o["metadata"]);
        metadata
            .and_then(|m| m["name"].as_str().or_else(|| m["generateName"].as_str()))
            .unwrap_or_default()
            .to_owned()
    }
}

/// An answered admission request.
#[derive(Debug)]
pub struct Answer {
    /// The response before any patch, kept to build a denial from.
    blank: AdmissionResponse,
    /// The response, ready for [`Answer::into_review`].
    pub response: AdmissionResponse,
    /// How it ended.
    pub outcome: Outcome,
    /// The SecretProviderClass the admitted pod needs (mutate, generate mode).
    pub generated_spc: Option<GeneratedSpc>,
    /// Why the core left the pod alone, when it did.
    pub skipped: Option<SkipReason>,
    /// Denied for an object kvinject could not find (worth a direct look-up).
    pub missing_fact: bool,
    /// The denial's reason class, when denied.
    pub denial_reason: Option<DenialReason>,
    /// The vault and the object references of an admitted pod in generate mode, to verify.
    pub objects: Option<plan::PodObjects>,
}

impl Answer {
    fn allow(decoded: &Decoded) -> Self {
        let blank = AdmissionResponse::from(&decoded.request);
        Self {
            response: blank.clone(),
            blank,
            outcome: Outcome::Allowed,
            generated_spc: None,
            skipped: None,
            missing_fact: false,
            denial_reason: None,
            objects: None,
        }
    }

    /// Denies the request (also one that was allowed, e.g. when the SPC it needs could not be
    /// written); warnings already given stay.
    pub fn deny(mut self, denial: &Denial) -> Self {
        let warnings = self.response.warnings.take();
        self.response = self.blank.clone().deny(denial.message());
        self.response.result = Status::failure(denial.message(), "Forbidden").with_code(403);
        self.response.warnings = warnings;
        self.outcome = Outcome::Denied;
        self.generated_spc = None;
        self.objects = None;
        self.missing_fact = denial.is_missing_fact();
        self.denial_reason = Some(denial.reason());
        self
    }

    /// Turns a denial into an allowed answer carrying the message as a warning.
    pub fn softened(mut self) -> Self {
        if self.outcome == Outcome::Denied {
            let message = std::mem::take(&mut self.response.result.message);
            let warnings = self.response.warnings.take();
            self.response = self.blank.clone();
            self.response.warnings = warnings;
            self.push_warning(format!(
                "{message} (checked again when its pods are created)"
            ));
            self.outcome = Outcome::Allowed;
            self.missing_fact = false;
            self.denial_reason = None;
        }
        self
    }

    /// The denial message, if denied.
    pub fn denial_message(&self) -> Option<&str> {
        (self.outcome == Outcome::Denied).then_some(self.response.result.message.as_str())
    }

    /// Adds a warning to the response.
    pub fn push_warning(&mut self, warning: String) {
        self.response
            .warnings
            .get_or_insert_with(Vec::new)
            .push(warning);
    }

    fn with_warnings(mut self, warnings: &[String]) -> Self {
        for warning in warnings {
            self.push_warning(warning.clone());
        }
        self
    }

    /// The response review, for [`encode`].
    pub fn into_review(self) -> AdmissionReview<DynamicObject> {
        self.response.into_review()
    }
}

/// Decodes one AdmissionReview body.
pub fn decode(body: &[u8]) -> Result<Decoded, ReviewError> {
    let mut document: Value = serde_json::from_slice(body).map_err(ReviewError::NotJson)?;
    if !document.is_object() {
        return Err(ReviewError::NotAdmissionReview("not a JSON object".into()));
    }
    if document["kind"] != "AdmissionReview" {
        return Err(ReviewError::NotAdmissionReview(format!(
            "kind is {}, not AdmissionReview",
            document["kind"]
        )));
    }
    match document["apiVersion"].as_str() {
        Some(ADMISSION_V1) => {}
        other => {
            return Err(ReviewError::UnsupportedVersion(
                other.unwrap_or_default().to_owned(),
            ));
        }
    }
    // The object is kept as received; only the request envelope goes through typed structs.
    let object = document
        .get_mut("request")
        .and_then(|request| request.get_mut("object"))
        .map(Value::take)
        .filter(|object| !object.is_null());
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(document)
        .map_err(|e| ReviewError::NotAdmissionReview(e.to_string()))?;
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| ReviewError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(ReviewError::MissingUid);
    }
    Ok(Decoded { request, object })
}

/// Answers a decoded request that came through `route`.
pub fn answer(
    route: Route,
    decoded: &Decoded,
    facts: &dyn ClusterFacts,
    settings: &Settings,
) -> Result<Answer, ReviewError> {
    match route {
        Route::Mutate => answer_pod_create(decoded, facts, settings),
        Route::ValidateWorkloads => answer_workload(decoded, facts, settings),
        Route::ValidatePodIdentity => answer_pod_identity(decoded, facts, settings),
    }
}

/// Decodes and answers one `/mutate` body: the whole webhook without the HTTP and the cluster.
pub fn review(
    body: &[u8],
    facts: &dyn ClusterFacts,
    settings: &Settings,
) -> Result<AdmissionReview<DynamicObject>, ReviewError> {
    let decoded = decode(body)?;
    Ok(answer(Route::Mutate, &decoded, facts, settings)?.into_review())
}

fn is_pods(decoded: &Decoded) -> bool {
    let request = &decoded.request;
    request.resource.group.is_empty()
        && request.resource.resource == "pods"
        && request.sub_resource.is_none()
}

fn answer_pod_create(
    decoded: &Decoded,
    facts: &dyn ClusterFacts,
    settings: &Settings,
) -> Result<Answer, ReviewError> {
    let mut answer = Answer::allow(decoded);
    if !is_pods(decoded) || decoded.request.operation != Operation::Create {
        return Ok(answer);
    }
    let pod = decoded
        .object
        .as_ref()
        .ok_or(ReviewError::MissingObject("Pod CREATE"))?;
    let decision = match plan::plan_pod(pod, &decoded.namespace(), facts, settings) {
        Err(denial) => return Ok(answer.deny(&denial)),
        Ok(decision) => decision,
    };
    answer = answer.with_warnings(decision.warnings());
    match decision {
        Decision::Skip { reason, .. } => answer.skipped = Some(reason),
        Decision::Inject(plan) => {
            if !plan.patch.is_empty() {
                answer.response = answer
                    .response
                    .with_patch(Patch(plan.patch))
                    .expect("a patch of JSON values always serialises");
                answer.outcome = Outcome::Patched;
            }
            answer.generated_spc = plan.generated_spc;
            answer.objects = plan.objects;
        }
    }
    Ok(answer)
}

fn answer_workload(
    decoded: &Decoded,
    facts: &dyn ClusterFacts,
    settings: &Settings,
) -> Result<Answer, ReviewError> {
    let answer = Answer::allow(decoded);
    let request = &decoded.request;
    let kind = &request.kind;
    let api_version = if kind.group.is_empty() {
        kind.version.clone()
    } else {
        format!("{}/{}", kind.group, kind.version)
    };
    let Some(path) = template_path(&api_version, &kind.kind).filter(|p| !p.is_empty()) else {
        return Ok(answer);
    };
    if request.sub_resource.is_some()
        || !matches!(request.operation, Operation::Create | Operation::Update)
    {
        return Ok(answer);
    }
    let workload = decoded
        .object
        .as_ref()
        .ok_or(ReviewError::MissingObject("workload"))?;
    let template_name = format!("{}.{}", kind.kind, path.join("."));
    let answer = answer.with_warnings(&plan::workload_warnings(workload, &template_name));
    let Some(template) = path.iter().try_fold(workload, |node, key| node.get(*key)) else {
        return Ok(answer);
    };
    match plan::plan_pod(template, &decoded.namespace(), facts, settings) {
        Err(denial) => {
            let denial = denial.within(format!("{template_name} {}", decoded.name()));
            Ok(answer.deny(&denial))
        }
        Ok(decision) => Ok(answer.with_warnings(decision.warnings())),
    }
}

fn answer_pod_identity(
    decoded: &Decoded,
    facts: &dyn ClusterFacts,
    settings: &Settings,
) -> Result<Answer, ReviewError> {
    let answer = Answer::allow(decoded);
    let namespace = decoded.namespace();
    if !is_pods(decoded)
        || !matches!(
            decoded.request.operation,
            Operation::Create | Operation::Update
        )
        || settings.ignored_namespaces.contains(&namespace)
    {
        return Ok(answer);
    }
    let pod = decoded
        .object
        .as_ref()
        .ok_or(ReviewError::MissingObject("Pod"))?;
    let checked = PodView::new(pod).and_then(|view| {
        identity::check_pod_identity_policy(&view, &namespace, facts, settings.binding_scope)
    });
    Ok(match checked {
        Ok(()) => answer,
        Err(denial) => answer.deny(&denial),
    })
}

/// Serialises a response review for the wire.
///
/// `AdmissionResponse::patch` is a `Vec<u8>` that serde writes as an array of numbers, but the
/// API server reads the Go `[]byte` field as a base64 string; this is the one place that fixes it.
pub fn encode(mut review: AdmissionReview<DynamicObject>) -> Vec<u8> {
    // Taken out before serialising: as a Vec<u8> it would become one JSON number per byte.
    let patch = review.response.as_mut().and_then(|r| r.patch.take());
    let mut value = serde_json::to_value(&review).expect("an AdmissionReview always serialises");
    if let (Some(patch), Some(response)) = (
        patch,
        value.get_mut("response").and_then(Value::as_object_mut),
    ) {
        response.insert("patch".into(), Value::String(STANDARD.encode(patch)));
    }
    serde_json::to_vec(&value).expect("a JSON value always serialises")
}
