//! The admission adapter: AdmissionReview v1 bytes in, AdmissionReview v1 bytes out.
//!
//! Translates only: decoding, routing not-our-business requests, calling the core, and encoding
//! the answer exactly as the API server reads it. No I/O here; the HTTP layer lives in `server`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use json_patch::Patch;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::response::Status;
use serde_json::Value;

use crate::facts::ClusterFacts;
use crate::plan::{self, Decision, Settings, SkipReason};

use crate::spc::GeneratedSpc;

/// The only AdmissionReview version kvinject registers for.
pub const ADMISSION_V1: &str = "admission.k8s.io/v1";

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
    /// A Pod CREATE without the pod.
    #[error("AdmissionReview request for a Pod CREATE has no object")]
    MissingObject,
}

/// How an admission ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed with a patch.
    Patched,
    /// Allowed without a patch: not our business, skipped, or already injected.
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

/// An answered admission request.
#[derive(Debug)]
pub struct Reviewed {
    /// The response, ready for [`encode`].
    pub response: AdmissionReview<DynamicObject>,
    /// How it ended.
    pub outcome: Outcome,
    /// The SecretProviderClass the admitted pod needs (generate mode).
    pub generated_spc: Option<GeneratedSpc>,
    /// The pod's namespace (empty when not a pod).
    pub namespace: String,
    /// The pod's name, or its `generateName`.
    pub name: String,
    /// Whether the request was a dry run.
    pub dry_run: bool,
    /// Why the core left the pod alone, when it did.
    pub skipped: Option<SkipReason>,
}

/// Answers one AdmissionReview body.
pub fn review(
    body: &[u8],
    facts: &dyn ClusterFacts,
    settings: &Settings,
) -> Result<Reviewed, ReviewError> {
    let (request, object) = decode(body)?;
    let mut reviewed = Reviewed {
        response: AdmissionResponse::from(&request).into_review(),
        outcome: Outcome::Allowed,
        generated_spc: None,
        namespace: request.namespace.clone().unwrap_or_default(),
        name: request.name.clone(),
        dry_run: request.dry_run,
        skipped: None,
    };
    let is_pod_create = request.resource.group.is_empty()
        && request.resource.resource == "pods"
        && request.sub_resource.is_none()
        && request.operation == Operation::Create;
    if !is_pod_create {
        return Ok(reviewed);
    }
    let pod = object.ok_or(ReviewError::MissingObject)?;
    let metadata = &pod["metadata"];
    if reviewed.namespace.is_empty() {
        reviewed.namespace = metadata["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
    }
    if reviewed.name.is_empty() {
        reviewed.name = metadata["name"]
            .as_str()
            .or_else(|| metadata["generateName"].as_str())
            .unwrap_or_default()
            .to_owned();
    }
    let mut response = AdmissionResponse::from(&request);
    match plan::plan_pod(&pod, &reviewed.namespace, facts, settings) {
        Err(denial) => {
            response.allowed = false;
            response.result = Status::failure(denial.message(), "Forbidden").with_code(403);
            reviewed.outcome = Outcome::Denied;
        }
        Ok(decision) => {
            response.warnings = Some(decision.warnings().to_vec()).filter(|w| !w.is_empty());
            match decision {
                Decision::Skip { reason, .. } => reviewed.skipped = Some(reason),
                Decision::Inject(plan) => {
                    if !plan.patch.is_empty() {
                        response = response
                            .with_patch(Patch(plan.patch))
                            .expect("a patch of JSON values always serialises");
                        reviewed.outcome = Outcome::Patched;
                    }
                    reviewed.generated_spc = plan.generated_spc;
                }
            }
        }
    }
    reviewed.response = response.into_review();
    Ok(reviewed)
}

fn decode(body: &[u8]) -> Result<(AdmissionRequest<DynamicObject>, Option<Value>), ReviewError> {
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
    // The pod is kept as received; only the request envelope goes through typed structs.
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
    Ok((request, object))
}

/// Serialises a response review for the wire.
///
/// `AdmissionResponse::patch` is a `Vec<u8>` that serde writes as an array of numbers, but the
/// API server reads the Go `[]byte` field as a base64 string; this is the one place that fixes it.
pub fn encode(review: &AdmissionReview<DynamicObject>) -> Vec<u8> {
    let mut value = serde_json::to_value(review).expect("an AdmissionReview always serialises");
    if let Some(response) = value.get_mut("response").and_then(Value::as_object_mut)
        && let Some(patch) = response.get("patch").and_then(Value::as_array)
    {
        let bytes: Vec<u8> = patch
            .iter()
            .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect();
        response.insert("patch".into(), Value::String(STANDARD.encode(bytes)));
    }
    serde_json::to_vec(&value).expect("a JSON value always serialises")
}
