//! The admission adapter: AdmissionReview v1 bytes in, AdmissionReview v1 bytes out.
//!
//! Translates only: decoding, routing not-our-business requests, calling the core, and encoding
//! the answer exactly as the API server reads it. No I/O here: HTTP is `http`'s, look-ups and
//! the SPC write are the pipeline's (`review`).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::core::admission::Operation;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::error::Category;

use crate::core::denial::{Denial, DenialReason};
use crate::core::facts::ClusterFacts;
use crate::core::held::Held;
use crate::core::identity;
use crate::core::json;
use crate::core::node::Node;
use crate::core::plan::{self, Decision, Settings, SkipReason};
use crate::core::pod::{PodView, template_path};
use crate::core::pruned::{self, Keep};
use crate::core::reader::{KeptKey, Reader};
use crate::core::spc::GeneratedSpc;
use crate::webhook::memo::{ObjectTexts, PlanMemo};

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
    /// An object with more values in the fields kvinject reads than it keeps.
    #[error(
        "AdmissionReview request object holds more than {} values in the fields kvinject reads \
         (metadata, volumes, containers with their env and volume mounts): kvinject does not hold \
         that much for one review",
        pruned::MAX_KEPT_VALUES
    )]
    ObjectTooLarge,
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

/// The envelope fields kvinject reads of `request` (`oldObject`, `options` and `userInfo` are
/// read past without being kept). A field added here is read by [`read_request_fast`] too.
/// Strings are borrowed from the body where it holds them unescaped: by the fast read, every one,
/// so the common read of the envelope allocates nothing; by serde's, those marked `borrow`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestHead<'a> {
    /// Echoed in the response.
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
    /// The object's kind.
    #[serde(borrow)]
    pub kind: GroupVersionKind<'a>,
    /// The resource it was sent to.
    #[serde(borrow)]
    pub resource: Resource<'a>,
    /// `status`, `binding`, ... when sent to a subresource.
    #[serde(default)]
    pub sub_resource: Option<Cow<'a, str>>,
    /// The object's name (empty for controller-made pods).
    #[serde(default, borrow)]
    pub name: Cow<'a, str>,
    /// The request's namespace.
    #[serde(default)]
    pub namespace: Option<Cow<'a, str>>,
    /// CREATE, UPDATE, ...
    pub operation: Operation,
    /// Whether the request is a dry run.
    #[serde(default)]
    pub dry_run: bool,
    /// Required as the API server always sends it; never read.
    #[serde(rename = "userInfo")]
    _user_info: IgnoredAny,
    /// The object, pruned, as `serde_json` reads it (owned); moved to [`Decoded::object`].
    #[serde(default, deserialize_with = "object")]
    object: Option<Node<'static>>,
}

impl RequestHead<'_> {
    /// The same without its uid (empty), its strings owned (the usual group, version, kind and
    /// resource names as constants, so that a copy of it allocates for its namespace and name
    /// only).
    fn lasting_without_uid(&self) -> RequestHead<'static> {
        let owned = |text: &Cow<str>| match text.as_ref() {
            "" => Cow::Borrowed(""),
            "v1" => Cow::Borrowed("v1"),
            "Pod" => Cow::Borrowed("Pod"),
            "pods" => Cow::Borrowed("pods"),
            text => Cow::Owned(text.to_owned()),
        };
        RequestHead {
            uid: Cow::Borrowed(""),
            kind: GroupVersionKind {
                group: owned(&self.kind.group),
                version: owned(&self.kind.version),
                kind: owned(&self.kind.kind),
            },
            resource: Resource {
                group: owned(&self.resource.group),
                version: owned(&self.resource.version),
                resource: owned(&self.resource.resource),
            },
            sub_resource: self.sub_resource.as_ref().map(owned),
            name: owned(&self.name),
            namespace: self.namespace.as_ref().map(owned),
            operation: self.operation.clone(),
            dry_run: self.dry_run,
            _user_info: IgnoredAny,
            object: self.object.clone(),
        }
    }
}

/// The kind of a request's object, as `request.kind` names it: kube's `GroupVersionKind` with its
/// strings borrowed, under the same name, which serde's errors give (a 400's message).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroupVersionKind<'a> {
    /// API group (`""` for the core group).
    #[serde(borrow)]
    pub group: Cow<'a, str>,
    /// Version.
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    /// The kind (`Pod`).
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
}

/// The resource a request was sent to (kube's `GroupVersionResource` also reads a private
/// `api_version` that the fast read could not set as serde sets it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Resource<'a> {
    /// API group (`""` for the core group).
    #[serde(borrow)]
    pub group: Cow<'a, str>,
    /// Version.
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    /// The plural name (`pods`).
    #[serde(borrow)]
    pub resource: Cow<'a, str>,
}

impl Resource<'_> {
    /// Whether this is the core group's `pods`.
    fn is_pods(&self) -> bool {
        self.group.is_empty() && self.resource == "pods"
    }
}

/// A decoded request: the envelope, and the fields of the object the core reads
/// ([`pruned::KEPT`]), in the order received, with their strings borrowed from the body.
#[derive(Clone)]
pub struct Decoded<'a> {
    /// `request`, without the object.
    pub request: RequestHead<'a>,
    /// `request.object`, pruned (never through typed structs): read by [`decode`], or on first
    /// use after [`decode_keyed`] (from its key).
    object: OnceLock<Option<Node<'a>>>,
    /// The object's text and the key of its kept fields, when [`decode_keyed`] wrote the key
    /// instead of reading the object.
    keyed: Option<Keyed<'a>>,
    /// What a log line names the object by: from its kept fields, or from a remembered plan.
    names: OnceLock<Arc<ObjectNames>>,
}

/// An object [`decode_keyed`] checked and wrote the key of, unread.
#[derive(Clone)]
struct Keyed<'a> {
    /// The object's text; `None` for a review recalled whole ([`Recallable`]), whose key is
    /// within its limit and reads back.
    text: Option<&'a str>,
    /// Shared with the memo's texts ([`ObjectTexts`], and
    /// [`ReviewTexts`](crate::webhook::memo::ReviewTexts)).
    key: Arc<KeptKey>,
}

/// What a log line names an object by, read from its kept fields (so a pod answered from a
/// remembered plan is named by the plan's: its kept fields are the same).
#[derive(Debug, Default)]
pub struct ObjectNames {
    /// `metadata.name`, else `metadata.generateName`.
    pub name: String,
    /// The kind and name of the controlling owner reference, else of the first.
    pub owner: Option<(String, String)>,
}

impl ObjectNames {
    /// About the bytes held, for a memo's bound.
    pub fn weight(&self) -> usize {
        size_of::<Self>() + self.name.heap() + self.owner.heap()
    }

    /// The names of `object`.
    pub fn of(object: Option<&Node>) -> Self {
        let Some(metadata) = object.map(|o| &o["metadata"]) else {
            return Self::default();
        };
        let name = metadata["name"]
            .as_str()
            .or_else(|| metadata["generateName"].as_str());
        let owner = metadata["ownerReferences"]
            .as_array()
            .and_then(|owners| {
                owners
                    .iter()
                    .find(|o| o["controller"] == true)
                    .or(owners.first())
            })
            .and_then(|o| Some((o["kind"].as_str()?.into(), o["name"].as_str()?.into())));
        Self {
            name: name.unwrap_or_default().into(),
            owner,
        }
    }
}

impl fmt::Debug for Decoded<'_> {
    /// The request and the object (read now, when only its key was written).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoded")
            .field("request", &self.request)
            .field("object", &self.object())
            .finish()
    }
}

impl<'a> Decoded<'a> {
    /// A request and its object, read.
    pub fn new(request: RequestHead<'a>, object: Option<Node<'a>>) -> Self {
        Self {
            request,
            object: OnceLock::from(object),
            keyed: None,
            names: OnceLock::new(),
        }
    }

    /// `request.object`, pruned; read now when [`decode_keyed`] only wrote its key: from the
    /// key, which holds every kept value, so the text is not walked a second time (read again
    /// only when the key passed its limit). The tests and the `admission_review` fuzz target
    /// compare both decodes.
    pub fn object(&self) -> Option<&Node<'a>> {
        self.object
            .get_or_init(|| {
                let keyed = self.keyed.as_ref()?;
                keyed
                    .key
                    .tree(pruned::KEPT)
                    .or_else(|| Reader::new(keyed.text?).read_kept(pruned::KEPT))
            })
            .as_ref()
    }

    /// Whether the request has an object (`null` is none), without reading it.
    pub fn has_object(&self) -> bool {
        self.keyed.is_some() || self.object().is_some()
    }

    /// The key of the object's kept fields, when [`decode_keyed`] wrote one.
    pub fn kept_key(&self) -> Option<&KeptKey> {
        self.keyed.as_ref().map(|keyed| &*keyed.key)
    }

    /// What logs name the object by.
    pub fn names(&self) -> &Arc<ObjectNames> {
        self.names
            .get_or_init(|| Arc::new(ObjectNames::of(self.object())))
    }

    /// Names the object by `names`, read from an object with the same kept fields, unless
    /// already named.
    pub fn name_by(&self, names: Arc<ObjectNames>) {
        let _ = self.names.set(names);
    }

    /// The object's namespace: `request.namespace`, else the object's own (controller-made pods
    /// have it only in the request).
    pub fn namespace(&self) -> &str {
        self.request
            .namespace
            .as_deref()
            .filter(|ns| !ns.is_empty())
            .or_else(|| {
                self.object()
                    .and_then(|o| o["metadata"]["namespace"].as_str())
            })
            .unwrap_or("default")
    }

    /// The workload that owns the object (`ReplicaSet/web-7d9f8`), else the object itself, for
    /// logs: never the object's content.
    pub fn workload(&self) -> String {
        let owner = self.names().owner.as_ref();
        let (kind, name) = owner.map_or((&*self.request.kind.kind, self.name()), |(k, n)| {
            (k.as_str(), n.as_str())
        });
        // Once per admission, for its log line: joined without the formatting machinery.
        [kind, "/", name].concat()
    }

    /// The object's name, else its `generateName`.
    pub fn name(&self) -> &str {
        if !self.request.name.is_empty() {
            return &self.request.name;
        }
        &self.names().name
    }
}

/// The operation as the API server spells it (`CREATE`, ...), for logs.
pub fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// An answered admission request.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The request's uid, echoed.
    uid: String,
    /// The denial message, when denied.
    message: Option<String>,
    /// The JSON Patch when patched, serialised and base64-encoded as the response carries it
    /// (once, however often a remembered answer is given).
    patch: Option<Arc<str>>,
    /// Warnings shown to the user, allowed or denied.
    warnings: Vec<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// The SecretProviderClasses the admitted pod needs (mutate, generate mode), one per vault.
    pub generated_spcs: Arc<[GeneratedSpc]>,
    /// Why the core left the pod alone, when it did.
    pub skipped: Option<SkipReason>,
    /// Denied for an object kvinject could not find (worth a direct look-up).
    pub missing_fact: bool,
    /// The denial's reason class, when denied.
    pub denial_reason: Option<DenialReason>,
    /// Each vault and its object references of an admitted pod in generate mode, to verify.
    pub objects: Arc<[plan::PodObjects]>,
}

impl Answer {
    fn allow(decoded: &Decoded) -> Self {
        Self::allowed(decoded.request.uid.as_ref().to_owned())
    }

    fn allowed(uid: String) -> Self {
        Self {
            uid,
            message: None,
            patch: None,
            warnings: Vec::new(),
            outcome: Outcome::Allowed,
            generated_spcs: Arc::default(),
            skipped: None,
            missing_fact: false,
            denial_reason: None,
            objects: Arc::default(),
        }
    }

    /// Denies the request (also one that was allowed, e.g. when the SPC it needs could not be
    /// written); warnings already given stay.
    pub fn deny(mut self, denial: &Denial) -> Self {
        self.message = Some(denial.message().to_owned());
        self.patch = None;
        self.outcome = Outcome::Denied;
        self.generated_spcs = Arc::default();
        self.objects = Arc::default();
        self.missing_fact = denial.is_missing_fact();
        self.denial_reason = Some(denial.reason());
        self
    }

    /// Turns a denial into an allowed answer carrying the message as a warning.
    pub fn softened(mut self) -> Self {
        if let Some(message) = self.message.take() {
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
        self.message.as_deref()
    }

    /// The warnings given.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Adds a warning to the response.
    pub fn push_warning(&mut self, warning: String) {
        self.warnings.push(warning);
    }

    /// The same answer to the request `uid`.
    pub fn for_uid(mut self, uid: &str) -> Self {
        uid.clone_into(&mut self.uid);
        self
    }

    /// About what the answer holds in memory, in bytes (what [`crate::webhook::memo`] counts).
    pub fn weight(&self) -> usize {
        size_of::<Self>()
            + self.uid.heap()
            + self.message.heap()
            + self.patch.heap()
            + self.warnings.heap()
            + self.objects.heap()
            + self.generated_spcs.heap()
    }

    fn with_warnings(mut self, warnings: &[String]) -> Self {
        self.warnings.extend_from_slice(warnings);
        self
    }

    /// The response AdmissionReview, as the API server reads it: `patch` is the Go `[]byte`
    /// field, a base64 string. Written as text in one buffer (base64 never needs escaping).
    pub fn encode(&self) -> Vec<u8> {
        let patch_len = self.patch.as_ref().map_or(0, |p| p.len());
        let mut out = String::with_capacity(256 + patch_len);
        out.push_str(
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#,
        );
        json::push_string(&mut out, &self.uid);
        out.push_str(r#","allowed":"#);
        out.push_str(if self.message.is_none() {
            "true"
        } else {
            "false"
        });
        if let Some(message) = &self.message {
            out.push_str(r#","status":{"status":"Failure","message":"#);
            json::push_string(&mut out, message);
            out.push_str(r#","reason":"Forbidden","code":403}"#);
        }
        if let Some(patch) = &self.patch {
            out.push_str(r#","patch":""#);
            out.push_str(patch);
            out.push_str(r#"","patchType":"JSONPatch""#);
        }
        if !self.warnings.is_empty() {
            out.push_str(r#","warnings":"#);
            json::push_array(&mut out, &self.warnings, |out, w| json::push_string(out, w));
        }
        out.push_str("}}");
        out.into_bytes()
    }
}

/// The envelope of a request review: only what kvinject reads is kept.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRequestReview<'a> {
    #[serde(default, deserialize_with = "text")]
    api_version: Node<'a>,
    #[serde(default, deserialize_with = "text")]
    kind: Node<'a>,
    #[serde(default, borrow)]
    request: Option<RequestHead<'a>>,
}

fn text<'de, 'a, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Node<'a>, D::Error> {
    Ok(pruned::read(deserializer, Keep::Text)?.into_owned())
}

fn object<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Node<'static>>, D::Error> {
    let object = pruned::read(deserializer, pruned::KEPT)?.into_owned();
    Ok((!object.is_null()).then_some(object))
}

/// Decodes one AdmissionReview body in one pass over the bytes, keeping only the envelope fields
/// kvinject reads and the object's fields the core reads: memory follows those, not the body.
/// The common body is read by [`core::reader`](crate::core::reader); anything it leaves, by
/// `serde_json` ([`decode_by_serde`]), with the same result.
pub fn decode(body: &[u8]) -> Result<Decoded<'_>, ReviewError> {
    decode_with(body, None)
}

/// [`decode`], but the object of a Pod CREATE (as the envelope says before the object, which
/// the API server sends last) that the fast read reads is checked and its kept fields written as
/// a key of at most `limit` bytes ([`KeptKey`]), without building them: they are read on first
/// use ([`Decoded::object`]). For a server that answers most pods from a remembered plan
/// ([`crate::webhook::memo`]), which needs only the key.
pub fn decode_keyed(body: &[u8], limit: usize) -> Result<Decoded<'_>, ReviewError> {
    decode_with(body, Some(Keying::Within(limit)))
}

/// [`decode_keyed`] within [`ObjectTexts::KEY_LIMIT`], through what `memo` keeps: a review
/// that is one it keeps but for its uid is taken as that one was decoded, unread
/// ([`ReviewTexts`](crate::webhook::memo::ReviewTexts)); else an object whose text it keeps is taken with the key kept for it,
/// unread ([`ObjectTexts`]). A review or an object read is kept there.
pub fn decode_recalling<'b>(body: &'b [u8], memo: &PlanMemo) -> Result<Decoded<'b>, ReviewError> {
    if let Some(decoded) = memo.reviews().find(body) {
        return Ok(decoded);
    }
    let decoded = decode_with(body, Some(Keying::Recalling(memo.objects())))?;
    if let Some((uid_at, recallable)) = Recallable::of(body, &decoded) {
        memo.reviews().remember(body, uid_at, recallable);
    }
    Ok(decoded)
}

/// A Pod CREATE decoded by the fast read, its object keyed within its limit, and its uid
/// unescaped: every other byte of its body the same, a body with another plain uid decodes the
/// same but for the uid ([`Self::decoded`]). Its strings are owned.
pub struct Recallable {
    request: RequestHead<'static>,
    key: Arc<KeptKey>,
}

impl Recallable {
    /// What `decoded` (of `body`) stands for, and where its uid lies in `body`; `None` unless
    /// it is recallable.
    fn of(body: &[u8], decoded: &Decoded) -> Option<(Range<usize>, Self)> {
        let keyed = decoded.keyed.as_ref()?;
        keyed.key.bytes()?;
        let Cow::Borrowed(uid) = &decoded.request.uid else {
            return None;
        };
        // Borrowed from the body: its place there.
        let from = (uid.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
        let uid_at = from..from + uid.len();
        let within = body.get(uid_at.clone()) == Some(uid.as_bytes());
        (within && !uid.is_empty()).then(|| {
            // Not the uid: each recall gives its own (and a long one is neither copied nor held).
            let request = decoded.request.lasting_without_uid();
            let key = keyed.key.clone();
            (uid_at, Self { request, key })
        })
    }

    /// The review this stands for, with `uid`.
    pub fn decoded<'b>(&self, uid: &'b str) -> Decoded<'b> {
        let mut request = self.request.clone();
        request.uid = Cow::Borrowed(uid);
        let keyed = Keyed {
            text: None,
            key: self.key.clone(),
        };
        Decoded {
            request,
            object: OnceLock::new(),
            keyed: Some(keyed),
            names: OnceLock::new(),
        }
    }

    /// The heap it holds: its owned strings (the uid included), the key and the key's `Arc`
    /// (shared, but counted here in full).
    pub fn heap(&self) -> usize {
        let request = &self.request;
        let texts = [
            &request.uid,
            &request.kind.group,
            &request.kind.version,
            &request.kind.kind,
            &request.resource.group,
            &request.resource.version,
            &request.resource.resource,
            &request.name,
        ];
        let optional = [&request.sub_resource, &request.namespace];
        let owned = |text: &Cow<str>| match text {
            Cow::Owned(text) => text.capacity(),
            Cow::Borrowed(_) => 0,
        };
        texts.into_iter().map(owned).sum::<usize>()
            + optional.into_iter().flatten().map(owned).sum::<usize>()
            + self.key.shared_bytes()
    }
}

/// How [`decode_with`] writes an object's key.
#[derive(Clone, Copy)]
enum Keying<'m> {
    /// Within this limit.
    Within(usize),
    /// Taken from, or kept in, these texts.
    Recalling(&'m ObjectTexts),
}

fn decode_with<'b>(body: &'b [u8], keying: Option<Keying>) -> Result<Decoded<'b>, ReviewError> {
    let body = utf8(body)?;
    match read_fast(body, keying) {
        Some((review, object)) => checked(review, Some(object)),
        None => checked(read_by_serde(body)?, None),
    }
}

/// The answer to a review whose object `decode` refused for its size ([`ReviewError::ObjectTooLarge`]),
/// by the uid its envelope names: a denial (class `limit`) rather than an HTTP error, which a
/// webhook with `failurePolicy: Ignore` would turn into an admission without kvinject's checks.
/// `None` for any other error, or when no uid can be read (the error then stands).
pub fn refusal(body: &[u8], error: &ReviewError) -> Option<Answer> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Envelope {
        api_version: String,
        kind: String,
        request: Uid,
    }
    #[derive(Deserialize)]
    struct Uid {
        uid: String,
    }
    if !matches!(error, ReviewError::ObjectTooLarge) {
        return None;
    }
    // Everything but the envelope's names and the uid is skipped unkept.
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    if envelope.api_version != ADMISSION_V1 || envelope.kind != "AdmissionReview" {
        return None;
    }
    let uid = envelope.request.uid;
    let denial = Denial::new(error).because(DenialReason::Limit);
    (!uid.is_empty()).then(|| Answer::allowed(uid).deny(&denial))
}

/// [`decode`] with `serde_json` alone: the reference the fast read is tested against.
pub fn decode_by_serde(body: &[u8]) -> Result<Decoded<'_>, ReviewError> {
    checked(read_by_serde(utf8(body)?)?, None)
}

/// JSON is UTF-8 throughout, also in the fields skipped unread (which serde_json does not check):
/// checked once here, and the reads then check no string again.
fn utf8(body: &[u8]) -> Result<&str, ReviewError> {
    std::str::from_utf8(body).map_err(|e| {
        ReviewError::NotJson(serde::de::Error::custom(format_args!("invalid UTF-8: {e}")))
    })
}

fn read_by_serde(body: &str) -> Result<WireRequestReview<'_>, ReviewError> {
    // A typed envelope would also take a JSON array as a struct: only an object is a review.
    let first = body.bytes().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| b != b'{') {
        return Err(match serde_json::from_str::<IgnoredAny>(body) {
            Err(e) => ReviewError::NotJson(e),
            Ok(_) => ReviewError::NotAdmissionReview("not a JSON object".into()),
        });
    }
    serde_json::from_str(body).map_err(|e| match e.classify() {
        Category::Data if e.to_string().starts_with(pruned::TOO_MANY_VALUES) => {
            ReviewError::ObjectTooLarge
        }
        Category::Data => ReviewError::NotAdmissionReview(e.to_string()),
        _ => ReviewError::NotJson(e),
    })
}

/// The envelope and the pruned object (borrowing from `body`) read without serde's machinery;
/// `None` for anything unusual (a field twice, no request, JSON serde_json would refuse), which
/// `read_by_serde` then reads or refuses.
fn read_fast<'a>(
    body: &'a str,
    keying: Option<Keying>,
) -> Option<(WireRequestReview<'a>, FastObject<'a>)> {
    let mut reader = Reader::new(body);
    let (mut api_version, mut kind, mut request) = (None, None, None);
    let mut first = true;
    while let Some(name) = reader.member(first)? {
        first = false;
        let slot = match name {
            "apiVersion" => &mut api_version,
            "kind" => &mut kind,
            "request" if request.is_none() => {
                request = Some(read_request_fast(&mut reader, keying)?);
                continue;
            }
            "request" => return None,
            _ => {
                reader.skip()?;
                continue;
            }
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(reader.read_kept(Keep::Text)?);
    }
    if !reader.at_end() {
        return None;
    }
    let (request, object) = request?;
    let review = WireRequestReview {
        api_version: api_version.unwrap_or_default(),
        kind: kind.unwrap_or_default(),
        request: Some(request),
    };
    Some((review, object))
}

/// `request`: the object read by the schema ([`pruned::KEPT`]) and the fields of [`RequestHead`]
/// read as serde reads them, in their ordinary form only. Anything else (a field twice, a value of
/// another JSON type, an unknown operation, a required field missing) gives up, and serde then
/// gives the answer or the error. Every other member (`oldObject`, a whole pod on UPDATE;
/// `options`; anything made up) is checked and skipped, as serde skips it; so is `userInfo`,
/// required but never read.
fn read_request_fast<'a>(
    reader: &mut Reader<'a>,
    keying: Option<Keying>,
) -> Option<(RequestHead<'a>, FastObject<'a>)> {
    let (mut uid, mut kind, mut resource, mut sub_resource) = (None, None, None, None);
    let (mut name, mut namespace, mut operation, mut dry_run) = (None, None, None, None);
    let (mut user_info, mut object) = (None, None);
    let mut first = true;
    while let Some(member) = reader.member(first)? {
        first = false;
        match member {
            "object" => {
                // A key only for a Pod CREATE, which the API server says before the object.
                let pod_create = resource.as_ref().is_some_and(Resource::is_pods)
                    && operation == Some(Operation::Create)
                    && sub_resource.is_none();
                let keying = keying.filter(|_| pod_create);
                once(&mut object, read_object(reader, keying)?)?
            }
            "uid" => once(&mut uid, string(reader)?)?,
            "kind" => {
                let [group, version, kind_] = three_strings(reader, ["group", "version", "kind"])?;
                let gvk = GroupVersionKind {
                    group,
                    version,
                    kind: kind_,
                };
                once(&mut kind, gvk)?
            }
            "resource" => {
                let [group, version, plural] =
                    three_strings(reader, ["group", "version", "resource"])?;
                let sent_to = Resource {
                    group,
                    version,
                    resource: plural,
                };
                once(&mut resource, sent_to)?
            }
            "subResource" => once(&mut sub_resource, optional_string(reader)?)?,
            "name" => once(&mut name, string(reader)?)?,
            "namespace" => once(&mut namespace, optional_string(reader)?)?,
            "operation" => {
                let read = match string(reader)?.as_ref() {
                    "CREATE" => Operation::Create,
                    "UPDATE" => Operation::Update,
                    "DELETE" => Operation::Delete,
                    "CONNECT" => Operation::Connect,
                    _ => return None,
                };
                once(&mut operation, read)?
            }
            "dryRun" => {
                let Node::Bool(read) = reader.read_kept(Keep::Text)? else {
                    return None;
                };
                once(&mut dry_run, read)?
            }
            "userInfo" => once(&mut user_info, reader.skip()?)?,
            _ => reader.skip()?,
        }
    }
    user_info?;
    let request = RequestHead {
        uid: uid?,
        kind: kind?,
        resource: resource?,
        sub_resource: sub_resource.flatten(),
        name: name.unwrap_or_default(),
        namespace: namespace.flatten(),
        operation: operation?,
        dry_run: dry_run.unwrap_or_default(),
        _user_info: IgnoredAny,
        object: None,
    };
    Some((request, object.unwrap_or(FastObject::Read(None))))
}

/// `request.object` as the fast read leaves it.
enum FastObject<'a> {
    /// Read (`None` for `null` or no object).
    Read(Option<Node<'a>>),
    /// Checked, its key written.
    Keyed(Keyed<'a>),
}

/// `request.object`: an object's key written (or recalled) when `keying` asks for one, else
/// read.
fn read_object<'a>(reader: &mut Reader<'a>, keying: Option<Keying>) -> Option<FastObject<'a>> {
    if let Some(keying) = keying
        && reader.peek()? == b'{'
    {
        let (limit, objects) = match keying {
            Keying::Within(limit) => (limit, None),
            Keying::Recalling(objects) => (ObjectTexts::KEY_LIMIT, Some(objects)),
        };
        if let Some((length, key)) = objects.and_then(|objects| objects.find(reader.rest())) {
            let text = Some(reader.take(length)?);
            return Some(FastObject::Keyed(Keyed { text, key }));
        }
        let mut key = KeptKey::new(limit);
        let text = reader.read_key(pruned::KEPT, &mut key)?;
        let key = Arc::new(key);
        if let Some(objects) = objects {
            objects.remember(text, &key);
        }
        let text = Some(text);
        return Some(FastObject::Keyed(Keyed { text, key }));
    }
    let object = reader.read_kept(pruned::KEPT)?;
    Some(FastObject::Read(Some(object).filter(|o| !o.is_null())))
}

/// Fills `slot`, which must be empty (serde refuses a field given twice).
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.is_none().then(|| *slot = Some(value))
}

/// A string value.
fn string<'a>(reader: &mut Reader<'a>) -> Option<Cow<'a, str>> {
    match reader.read_kept(Keep::Text)? {
        Node::String(text) => Some(text),
        _ => None,
    }
}

/// A string value, or `null` (`None`), for an optional field.
fn optional_string<'a>(reader: &mut Reader<'a>) -> Option<Option<Cow<'a, str>>> {
    match reader.read_kept(Keep::Text)? {
        Node::String(text) => Some(Some(text)),
        Node::Null => Some(None),
        _ => None,
    }
}

/// An object with these three string members, each once, other members skipped (a
/// `GroupVersionKind` or a [`Resource`] as serde reads one from an object).
fn three_strings<'a>(reader: &mut Reader<'a>, names: [&str; 3]) -> Option<[Cow<'a, str>; 3]> {
    let mut values: [Option<Cow<'a, str>>; 3] = Default::default();
    let mut first = true;
    while let Some(member) = reader.member(first)? {
        first = false;
        match names.iter().position(|name| *name == member) {
            Some(at) => once(&mut values[at], string(reader)?)?,
            None => reader.skip()?,
        }
    }
    let [a, b, c] = values;
    Some([a?, b?, c?])
}

/// What a decoded envelope must be, whichever read it came from: the object is the fast read's
/// (`object`) or the one `serde_json` read into the envelope.
fn checked<'a>(
    review: WireRequestReview<'a>,
    object: Option<FastObject<'a>>,
) -> Result<Decoded<'a>, ReviewError> {
    if review.kind != "AdmissionReview" {
        return Err(ReviewError::NotAdmissionReview(format!(
            "kind is {}, not AdmissionReview",
            review.kind.to_value()
        )));
    }
    match review.api_version.as_str() {
        Some(ADMISSION_V1) => {}
        other => {
            return Err(ReviewError::UnsupportedVersion(
                other.unwrap_or_default().to_owned(),
            ));
        }
    }
    let mut request = review.request.ok_or(ReviewError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(ReviewError::MissingUid);
    }
    let serde_read = request.object.take();
    Ok(match object {
        Some(FastObject::Keyed(keyed)) => Decoded {
            // Read on first use.
            object: OnceLock::new(),
            keyed: Some(keyed),
            ..Decoded::new(request, None)
        },
        Some(FastObject::Read(object)) => Decoded::new(request, object),
        None => Decoded::new(request, serde_read),
    })
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
) -> Result<Answer, ReviewError> {
    let decoded = decode(body)?;
    answer(Route::Mutate, &decoded, facts, settings)
}

fn is_pods(decoded: &Decoded) -> bool {
    decoded.request.resource.is_pods() && decoded.request.sub_resource.is_none()
}

fn answer_pod_create(
    decoded: &Decoded,
    facts: &dyn ClusterFacts,
    settings: &Settings,
) -> Result<Answer, ReviewError> {
    match pod_to_plan(Route::Mutate, decoded)? {
        Some(pod) => Ok(
            plan_answer(pod, decoded.namespace(), facts, settings).for_uid(&decoded.request.uid)
        ),
        None => Ok(Answer::allow(decoded)),
    }
}

/// The pod a request asks kvinject to plan: on `/mutate`, a Pod CREATE's object. `None` for any
/// other request (allowed as it is); an error for a Pod CREATE without its object.
pub fn pod_to_plan<'d, 'a>(
    route: Route,
    decoded: &'d Decoded<'a>,
) -> Result<Option<&'d Node<'a>>, ReviewError> {
    if !plans_pod(route, decoded)? {
        return Ok(None);
    }
    let pod = decoded
        .object()
        .ok_or(ReviewError::MissingObject("Pod CREATE"))?;
    Ok(Some(pod))
}

/// Whether [`pod_to_plan`] gives a pod, without reading it.
pub fn plans_pod(route: Route, decoded: &Decoded) -> Result<bool, ReviewError> {
    if route != Route::Mutate || !is_pods(decoded) || decoded.request.operation != Operation::Create
    {
        return Ok(false);
    }
    if !decoded.has_object() {
        return Err(ReviewError::MissingObject("Pod CREATE"));
    }
    Ok(true)
}

/// [`plan_answer`] for the request's object, a pod ([`plans_pod`]), read now if only its key was
/// written.
pub fn plan_object(
    decoded: &Decoded,
    namespace: &str,
    facts: &dyn ClusterFacts,
    settings: &Settings,
) -> Answer {
    match decoded.object() {
        Some(pod) => plan_answer(pod, namespace, facts, settings),
        // Not reached: an object whose key was written was checked by the reader that reads it.
        None => Answer::allowed(String::new()).deny(
            &Denial::new(ReviewError::MissingObject("Pod CREATE"))
                .because(DenialReason::InvalidPod),
        ),
    }
}

/// The answer to `pod` created in `namespace`, with an empty uid ([`Answer::for_uid`] sets it):
/// a function of the pod, the namespace, the settings and what `facts` answers, nothing else.
pub fn plan_answer(
    pod: &Node,
    namespace: &str,
    facts: &dyn ClusterFacts,
    settings: &Settings,
) -> Answer {
    let answer = Answer::allowed(String::new());
    let decision = match plan::plan_pod(pod, namespace, facts, settings) {
        Err(denial) => return answer.deny(&denial),
        Ok(decision) => decision,
    };
    let mut answer = answer.with_warnings(decision.warnings());
    match decision {
        Decision::Skip { reason, .. } => answer.skipped = Some(reason),
        Decision::Inject(plan) => {
            if !plan.patch.is_empty() {
                answer.patch = Some(STANDARD.encode(plan.patch.into_string()).into());
                answer.outcome = Outcome::Patched;
            }
            answer.generated_spcs = plan.generated_spcs.into();
            answer.objects = plan.objects.into();
        }
    }
    answer
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
        kind.version.to_string()
    } else {
        format!("{}/{}", kind.group, kind.version)
    };
    if request.sub_resource.is_some()
        || !matches!(request.operation, Operation::Create | Operation::Update)
    {
        return Ok(answer);
    }
    let Some(path) = template_path(&api_version, &kind.kind).filter(|p| !p.is_empty()) else {
        let unhandled = decoded.object().and_then(|workload| {
            plan::unhandled_workload_warning(&api_version, &kind.kind, workload)
        });
        return Ok(answer.with_warnings(unhandled.as_slice()));
    };
    let workload = decoded
        .object()
        .ok_or(ReviewError::MissingObject("workload"))?;
    let template_name = format!("{}.{}", kind.kind, path.join("."));
    let answer = answer.with_warnings(&plan::workload_warnings(workload, &template_name));
    let Some(template) = path.iter().try_fold(workload, |node, key| node.get(key)) else {
        return Ok(answer);
    };
    match plan::plan_pod(template, decoded.namespace(), facts, settings) {
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
        || settings.ignored_namespaces.contains(namespace)
    {
        return Ok(answer);
    }
    let pod = decoded.object().ok_or(ReviewError::MissingObject("Pod"))?;
    let checked = PodView::new(pod).and_then(|view| {
        identity::check_pod_identity_policy(&view, namespace, facts, settings.binding_scope)
    });
    Ok(match checked {
        Ok(()) => answer,
        Err(denial) => answer.deny(&denial),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn answer(message: Option<&str>, patch: Option<&str>, warnings: &[&str]) -> Answer {
        Answer {
            message: message.map(str::to_owned),
            patch: patch.map(|p| STANDARD.encode(p).into()),
            warnings: warnings.iter().map(|w| (*w).to_owned()).collect(),
            ..Answer::allowed("uid \"quoted\" \u{1}".to_owned())
        }
    }

    /// The fast read gives what serde_json gives, or leaves the body to it: for envelopes with
    /// every field the API server sends, and for the ways a forged one can differ.
    #[test]
    fn the_fast_read_decodes_as_serde_json_does() {
        let review = |request: &str| {
            format!(
                r#"{{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {request}}}"#
            )
        };
        let request = |extra: &str| {
            review(&format!(
                r#"{{"uid": "u1", "kind": {{"group": "", "version": "v1", "kind": "Pod"}},
                  "resource": {{"group": "", "version": "v1", "resource": "pods"}},
                  "requestKind": {{"group": "", "version": "v1", "kind": "Pod"}},
                  "namespace": "shop", "operation": "CREATE", "userInfo": {{"username": "u", "groups": ["g"]}},
                  "object": {{"metadata": {{"generateName": "web-", "annotations": {{"kvinject.io/env.A": "a"}}}},
                             "spec": {{"containers": [{{"name": "app", "image": "x"}}]}}}},
                  "oldObject": null, "dryRun": false, "options": {{"kind": "CreateOptions"}}{extra}}}"#
            ))
        };
        // Read here, not left to serde_json: the common body, and the envelope's other ordinary
        // forms.
        let read_here = [
            request(""),
            request(r#", "subResource": "status", "name": "web""#),
            request(r#", "subResource": null, "requestSubResource": [1]"#),
            review(
                r#"{"uid": "u\"1", "kind": {"kind": "Pod", "version": "v1", "group": "", "x": 1},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments", "api_version": 1},
                "namespace": null, "operation": "UPDATE", "userInfo": null, "object": null,
                "dryRun": true}"#,
            ),
        ];
        for body in &read_here {
            assert!(read_fast(body, None).is_some(), "{body}");
        }
        let bodies = [
            request(r#", "kind": {"group": "", "version": "v1", "kind": "Pod"}"#),
            request(r#", "resource": {"group": "", "version": "v1", "resource": "pods"}"#),
            request(r#", "namespace": "other""#),
            request(r#", "dryRun": null"#),
            request(r#", "dryRun": true, "dryRun": false"#),
            request(r#", "subResource": 1"#),
            request(r#", "userInfo": {}"#),
            review(r#"{"uid": "u", "kind": ["", "v1", "Pod"], "resource": ["", "v1", "pods"],
                "operation": "CREATE", "userInfo": {}}"#),
            review(r#"{"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE", "userInfo": {}}"#),
            review(r#"{"uid": "u", "kind": {"group": "", "version": "v1"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE", "userInfo": {}}"#),
            review(r#"{"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": null},
                "operation": "CREATE", "userInfo": {}}"#),
            review(r#"{"uid": 1, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "create", "userInfo": {}}"#),
            request(r#", "uid": "again""#),
            request(r#", "object": {}"#),
            request(r#", "operation": "PATCH""#),
            request(r#", "dryRun": "yes""#),
            request(r#", "n\u0061me": "escaped""#),
            request(r#", "name": null"#),
            request(r#", "object": null, "x": [1, 2, {"y": "\ud800"}]"#),
            request(r#", "userInfo": 7"#),
            request(r#", "oldObject": {"metadata": {"name": "\ud800"}}, "oldObject": 1"#),
            request(r#", "options": [1,]"#),
            review(r#"{"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE"}"#),
            review("null"),
            review("[]"),
            review(r#"{"uid": "u"}"#),
            review(r#"{"uid": ""}"#),
            r#"{"kind": "AdmissionReview", "kind": "AdmissionReview"}"#.to_owned(),
            r#"{"kind": 7, "apiVersion": "admission.k8s.io/v1"}"#.to_owned(),
            r#"{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1", "request": {}}"#.to_owned(),
            r#"{}"#.to_owned(),
            r#"[]"#.to_owned(),
            r#"{"kind": "AdmissionReview"} {}"#.to_owned(),
            r#"{"kind": "AdmissionReview","#.to_owned(),
        ];
        for body in read_here.iter().chain(&bodies) {
            let fast = format!("{:?}", decode(body.as_bytes()));
            let serde = format!("{:?}", decode_by_serde(body.as_bytes()));
            assert_eq!(fast, serde, "{body}");
        }
    }

    /// Reading the envelope allocates no string the body holds unescaped: the fast read borrows
    /// each from the body, and unescapes only an escaped one into a string of its own; serde's
    /// read borrows those marked `borrow`.
    #[test]
    fn the_envelope_borrows_its_strings_from_the_body() {
        let body = |uid: &str| {
            format!(
                r#"{{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {{
                  "uid": "{uid}", "kind": {{"group": "", "version": "v1", "kind": "Pod"}},
                  "resource": {{"group": "", "version": "v1", "resource": "pods"}},
                  "subResource": "status", "name": "web", "namespace": "shop",
                  "operation": "CREATE", "userInfo": {{}}, "object": null}}}}"#
            )
        };
        let borrowed = |text: &Cow<str>| matches!(text, Cow::Borrowed(_));
        for (uid, escaped) in [("u1", false), (r#"u\"1"#, true)] {
            let body = body(uid);
            for keying in [None, Some(Keying::Within(4096))] {
                let (review, _) = read_fast(&body, keying).unwrap();
                for envelope in [&review.api_version, &review.kind] {
                    assert!(matches!(envelope, Node::String(text) if borrowed(text)));
                }
                let request = review.request.unwrap();
                assert_eq!(borrowed(&request.uid), !escaped, "{uid}");
                let (kind, resource) = (&request.kind, &request.resource);
                let namespace = request.namespace.as_ref().unwrap();
                let sub_resource = request.sub_resource.as_ref().unwrap();
                for text in [&kind.group, &kind.version, &kind.kind, &resource.group] {
                    assert!(borrowed(text), "{text}");
                }
                for text in [&resource.version, &resource.resource, &request.name] {
                    assert!(borrowed(text), "{text}");
                }
                assert!(borrowed(namespace) && borrowed(sub_resource));
            }
        }
        let body = body("u1");
        let request = read_by_serde(&body).unwrap().request.unwrap();
        let (kind, resource) = (&request.kind, &request.resource);
        for text in [
            &request.uid,
            &kind.group,
            &kind.version,
            &kind.kind,
            &resource.group,
        ] {
            assert!(borrowed(text), "{text}");
        }
        for text in [&resource.version, &resource.resource, &request.name] {
            assert!(borrowed(text), "{text}");
        }
    }

    /// A malformed `request.kind` is refused naming what was expected, as kube's type named it.
    #[test]
    fn a_malformed_kind_is_refused_naming_a_group_version_kind() {
        for (kind, expected) in [
            (
                r#""Pod""#,
                r#"invalid type: string "Pod", expected struct GroupVersionKind"#,
            ),
            (
                "7",
                "invalid type: integer `7`, expected struct GroupVersionKind",
            ),
            (
                r#"["", "v1"]"#,
                "invalid length 2, expected struct GroupVersionKind with 3 elements",
            ),
        ] {
            let body = format!(
                r#"{{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
                  "request": {{"uid": "u", "kind": {kind}}}}}"#
            );
            let refused = decode(body.as_bytes()).unwrap_err().to_string();
            assert!(refused.contains(expected), "{refused}");
        }
    }

    /// Array items of the object are kept whatever they hold (JSON Patch indexes), so their
    /// count is bounded: both reads refuse an object past it with the same error.
    #[test]
    fn an_object_past_max_kept_values_is_refused_by_both_reads() {
        let body = |items: usize| {
            format!(
                r#"{{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {{
                  "uid": "u", "kind": {{"group": "", "version": "v1", "kind": "Pod"}},
                  "resource": {{"group": "", "version": "v1", "resource": "pods"}},
                  "operation": "CREATE", "userInfo": {{}},
                  "object": {{"apiVersion": "v1", "kind": "Pod", "spec": {{"volumes": [{}0]}}}}}}}}"#,
                "0,".repeat(items - 1)
            )
        };
        // The object counts 16, each item 3: `limit` items count the limit exactly (`pruned`'s
        // tests).
        let limit = (pruned::MAX_KEPT_VALUES - 16) / 3;
        assert_eq!(16 + 3 * limit, pruned::MAX_KEPT_VALUES);
        assert!(read_fast(&body(limit), None).is_some());
        // Annotations count their value and two more each (their key and its index entry): with
        // one volume (16 + 3), `metadata` (7) and `annotations` (1) the rest counts 27.
        let annotated = |count: usize| {
            let annotations: Vec<String> = (0..count)
                .map(|i| format!(r#""kvinject.io/a{i}": "v""#))
                .collect();
            body(1).replacen(
                r#""kind": "Pod","#,
                &format!(
                    r#""kind": "Pod", "metadata": {{"annotations": {{{}}}}},"#,
                    annotations.join(",")
                ),
                1,
            )
        };
        let keyed = |body: &str| decode_keyed(body.as_bytes(), usize::MAX).map(drop);
        let annotations = (pruned::MAX_KEPT_VALUES - 27) / 3;
        for read in [keyed, |body: &str| decode(body.as_bytes()).map(drop)] {
            assert!(read(&annotated(annotations)).is_ok());
            let error = read(&annotated(annotations + 1)).unwrap_err();
            assert!(matches!(error, ReviewError::ObjectTooLarge), "{error}");
        }
        type Read = fn(&[u8]) -> Result<(), ReviewError>;
        let reads: [Read; 3] = [
            |body| decode(body).map(drop),
            |body| decode_by_serde(body).map(drop),
            |body| decode_keyed(body, usize::MAX).map(drop),
        ];
        for read in reads {
            assert!(read(body(limit).as_bytes()).is_ok());
            let error = read(body(limit + 1).as_bytes()).unwrap_err();
            assert!(matches!(error, ReviewError::ObjectTooLarge), "{error}");
            // Answered by its uid, denied with the reason.
            let answer = refusal(body(limit + 1).as_bytes(), &error).unwrap();
            assert_eq!(
                (answer.uid.as_str(), answer.outcome),
                ("u", Outcome::Denied)
            );
            assert_eq!(answer.denial_reason, Some(DenialReason::Limit));
            let message = answer.message.unwrap();
            assert!(
                message.contains("values in the fields kvinject reads"),
                "{message}"
            );
        }
        let not_too_large = ReviewError::MissingUid;
        assert!(refusal(body(limit).as_bytes(), &not_too_large).is_none());
        // Without a uid, or in another envelope, the error stands (400).
        let too_large = ReviewError::ObjectTooLarge;
        for other in [
            body(limit + 1).replacen(r#""uid": "u""#, r#""uid": """#, 1),
            body(limit + 1).replacen("admission.k8s.io/v1", "admission.k8s.io/v1beta1", 1),
            body(limit + 1).replacen(r#""kind": "AdmissionReview""#, r#""kind": "Other""#, 1),
        ] {
            assert!(refusal(other.as_bytes(), &too_large).is_none());
        }
    }

    #[test]
    fn only_a_pod_create_has_its_key_written_and_names_from_a_remembered_plan_leave_it_unread() {
        let review = |operation: &str, resource: &str| {
            format!(
                r#"{{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {{
                  "uid": "u", "kind": {{"group": "", "version": "v1", "kind": "Pod"}},
                  "resource": {{"group": "", "version": "v1", "resource": "{resource}"}},
                  "operation": "{operation}", "userInfo": {{}},
                  "object": {{"metadata": {{"generateName": "web-",
                    "ownerReferences": [{{"kind": "ReplicaSet", "name": "web-1", "controller": true}}]}}}}}}}}"#
            )
        };
        for (operation, resource, keyed) in [
            ("CREATE", "pods", true),
            ("UPDATE", "pods", false),
            ("CREATE", "deployments", false),
        ] {
            let body = review(operation, resource);
            let decoded = decode_keyed(body.as_bytes(), usize::MAX).unwrap();
            assert_eq!(
                decoded.kept_key().is_some(),
                keyed,
                "{operation} {resource}"
            );
            assert_eq!(decoded.object.get().is_none(), keyed, "read unless keyed");
        }
        // Named by a remembered plan, the object stays unread.
        let body = review("CREATE", "pods");
        let decoded = decode_keyed(body.as_bytes(), usize::MAX).unwrap();
        decoded.name_by(Arc::new(ObjectNames {
            name: "remembered-".into(),
            owner: Some(("ReplicaSet".into(), "remembered-1".into())),
        }));
        assert_eq!(decoded.name(), "remembered-");
        assert_eq!(decoded.workload(), "ReplicaSet/remembered-1");
        assert!(decoded.object.get().is_none());
        // Unnamed, it is read for its names.
        let decoded = decode_keyed(body.as_bytes(), usize::MAX).unwrap();
        assert_eq!(
            (decoded.name(), decoded.workload().as_str()),
            ("web-", "ReplicaSet/web-1")
        );
        assert!(decoded.object.get().is_some());
    }

    /// A keyed object is read back from its key, and from its text once the key passed its
    /// limit: either way as [`decode`] reads it, every kind of kept value included.
    #[test]
    fn a_keyed_object_is_read_from_its_key_or_past_its_limit_from_its_text() {
        let body = r#"{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {
          "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
          "resource": {"group": "", "version": "v1", "resource": "pods"},
          "operation": "CREATE", "userInfo": {},
          "object": {"metadata": {"generateName": "w\u00e9b-", "labels": {"app": "web"},
            "annotations": {"kvinject.io/env.A": "a", "kvinject.io/env.B": 5, "kvinject.io/x": true,
              "kvinject.io/y": null, "kvinject.io/z": {"nested": [1]}, "other": "skipped"},
            "managedFields": [{"manager": "m", "fieldsV1": {"f:metadata": {}}}]},
           "spec": {"containers": [{"name": "app", "env": [{"name": "A", "value": "1"}]}, {}],
             "volumes": []}}}}"#;
        let read = format!("{:?}", decode(body.as_bytes()).unwrap());
        for (limit, within) in [(usize::MAX, true), (16, false)] {
            let keyed = decode_keyed(body.as_bytes(), limit).unwrap();
            let key = keyed.kept_key().expect("a Pod CREATE is keyed");
            assert_eq!(key.bytes().is_some(), within, "limit {limit}");
            // Within its limit, the object comes from the key, not from the text again.
            assert_eq!(key.tree(pruned::KEPT).is_some(), within, "limit {limit}");
            assert_eq!(format!("{keyed:?}"), read, "limit {limit}");
        }
    }

    /// An object whose text was read before is taken with the key kept for it, unread, and
    /// decodes as it does read: the envelope around it read anew each time, whatever it says.
    #[test]
    fn an_object_recalled_by_its_text_decodes_as_read() {
        use crate::webhook::memo::PlanMemo;

        let object = r#"{"metadata": {"generateName": "web-", "labels": {"kvinject.io/inject": "true"},
            "annotations": {"kvinject.io/env.A": "a", "other": "skipped"},
            "managedFields": [{"manager": "m", "time": "2026-11-28T10:00:00Z"}]},
           "spec": {"containers": [{"name": "app", "image": "app", "env": [{"name": "A", "value": "1"}]}]}}"#;
        let body = |uid: &str, object: &str, after: &str| {
            format!(
                r#"{{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {{
                  "uid": "{uid}", "kind": {{"group": "", "version": "v1", "kind": "Pod"}},
                  "resource": {{"group": "", "version": "v1", "resource": "pods"}},
                  "namespace": "shop", "operation": "CREATE", "userInfo": {{}},
                  "object": {object}{after}"#
            )
        };
        let memo = PlanMemo::new(4).unwrap();
        let recalled =
            |body: &str| decode_recalling(body.as_bytes(), &memo).map(|d| d.kept_key().cloned());
        fn keyed(body: &str) -> Result<Decoded<'_>, ReviewError> {
            decode_keyed(body.as_bytes(), ObjectTexts::KEY_LIMIT)
        }
        fn recall<'b>(body: &'b str, memo: &PlanMemo) -> Result<Decoded<'b>, ReviewError> {
            decode_recalling(body.as_bytes(), memo)
        }
        let first = body("u1", object, "}}");
        let read = recall(&first, &memo).unwrap();
        assert_eq!(memo.objects().size().0, 1, "kept once read");
        let key = read.kept_key().unwrap();
        for (uid, after) in [
            ("u1", "}}"),
            (
                "u2",
                r#", "oldObject": null, "dryRun": true, "options": {"kind": "CreateOptions"}}}"#,
            ),
            ("u3", "\n}\n}\n"),
        ] {
            let body = body(uid, object, after);
            let again = recall(&body, &memo).unwrap();
            assert!(
                std::ptr::eq(again.kept_key().unwrap(), key),
                "recalled: {after}"
            );
            assert_eq!(format!("{again:?}"), format!("{:?}", keyed(&body).unwrap()));
            assert_eq!(again.kept_key().unwrap().bytes(), key.bytes());
            assert_eq!(again.request.uid, uid);
        }
        assert!(!recall(&first, &memo).unwrap().request.dry_run);
        // After it, whatever would be refused unrecalled is refused as it would be.
        for after in ["}", "}}x", r#", "uid": "again"}}"#, r#", "object": {}}}"#] {
            let body = body("u", object, after);
            assert_eq!(
                format!("{:?}", recall(&body, &memo).map(|d| d.request)),
                format!("{:?}", keyed(&body).map(|d| d.request)),
                "{after}"
            );
        }
        // An object alike in its first bytes and other after them is read, and kept instead.
        let other = object.replacen(r#""image": "app""#, r#""image": "app:2""#, 1);
        let body_of_other = body("u", &other, "}}");
        let read_other = recall(&body_of_other, &memo).unwrap();
        assert!(!std::ptr::eq(read_other.kept_key().unwrap(), key));
        assert_eq!(
            format!("{read_other:?}"),
            format!("{:?}", keyed(&body_of_other).unwrap())
        );
        assert_eq!(memo.objects().size().0, 1);
        // Not a Pod CREATE: never recalled, never kept.
        let update = body("u", object, "}}").replacen("CREATE", "UPDATE", 1);
        assert!(recalled(&update).unwrap().is_none());
    }

    /// A review that is the bytes of one decoded before around another plain uid is taken as
    /// that one was decoded, with its own uid, unread; any other difference, or a uid that is
    /// not plain, and it is read (and decodes as ever).
    #[test]
    fn a_review_recalled_but_for_its_uid_decodes_as_read() {
        use crate::webhook::memo::PlanMemo;

        let body = |uid: &[u8], dry_run: bool| {
            let mut body = br#"{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
              "request": {"uid": ""#
                .to_vec();
            body.extend_from_slice(uid);
            body.extend_from_slice(
                format!(
                    r#"", "kind": {{"group": "", "version": "v1", "kind": "Pod"}},
                  "resource": {{"group": "", "version": "v1", "resource": "pods"}},
                  "namespace": "shop", "operation": "CREATE", "userInfo": {{"username": "rs"}},
                  "object": {{"metadata": {{"generateName": "web-", "labels": {{"kvinject.io/inject": "true"}},
                    "annotations": {{"kvinject.io/env.A": "a"}}}},
                    "spec": {{"containers": [{{"name": "app", "image": "app"}}]}}}},
                  "dryRun": {dry_run}, "options": {{"kind": "CreateOptions"}}}}}}"#
                )
                .as_bytes(),
            );
            body
        };
        let memo = PlanMemo::new(4).unwrap();
        let whole = |decoded: &Decoded| decoded.keyed.as_ref().unwrap().text.is_none();
        let first = body(b"b8f7a1d2-ab0a-592a-afd0-6ef76d774844", false);
        let read = decode_recalling(&first, &memo).unwrap();
        assert!(!whole(&read));
        assert_eq!(memo.reviews().size().0, 1);
        let key = read.kept_key().unwrap();
        // Uids of the same length (the API server's are all 36 bytes): the length of the body
        // picks the kept one.
        let accented = format!("\u{e9}{}", "a".repeat(34));
        for uid in [
            &b"b8f7a1d2-ab0a-592a-afd0-6ef76d774844"[..],
            b"0e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b",
            accented.as_bytes(),
        ] {
            let body = body(uid, false);
            let recalled = decode_recalling(&body, &memo).unwrap();
            assert!(whole(&recalled), "{}", String::from_utf8_lossy(uid));
            assert!(std::ptr::eq(recalled.kept_key().unwrap(), key));
            assert_eq!(recalled.request.uid.as_bytes(), uid);
            let keyed = decode_keyed(&body, ObjectTexts::KEY_LIMIT).unwrap();
            assert_eq!(format!("{recalled:?}"), format!("{keyed:?}"));
            assert_eq!(
                recalled.kept_key().unwrap().bytes(),
                keyed.kept_key().unwrap().bytes()
            );
        }
        // Not plain (empty, escaped, a control character, not UTF-8, a quote that ends it
        // early: each also as long as the first, so that it is compared with it) or another
        // byte other: read, and as the keyed read reads it.
        let others = [
            body(b"", false),
            body(br#"u\"1"#, false),
            body(br#"b8f7a1d2-ab0a-592a-afd0-6ef76d7748\""#, false),
            body(b"b8f7a1d2-ab0a-592a-afd0-6ef76d77484\t", false),
            body(b"b8f7a1d2-ab0a-592a-afd0-6ef76d77484\xff", false),
            body(br#"b8f7a1d2-ab0a-592a-afd0-6e", "u": "x"#, false),
            body(b"u2", false),
            body(b"0e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b", true),
        ];
        // And bytes other before the uid (the head compared too), as long.
        let mut other_head = first.clone();
        let at = first
            .windows(15)
            .position(|w| w == b"AdmissionReview")
            .unwrap();
        other_head[at + 14] = b'x';
        // First, while the first body is the one kept for its length and last bytes.
        let others = [&[other_head][..], &others[..]].concat();
        for body in [&others[0], &others[3], &others[4], &others[5], &others[6]] {
            assert_eq!(body.len(), first.len());
        }
        for body in &others {
            let recalled = decode_recalling(body, &memo);
            assert!(recalled.as_ref().map_or(true, |d| !whole(d)));
            let keyed = decode_keyed(body, ObjectTexts::KEY_LIMIT);
            assert_eq!(format!("{recalled:?}"), format!("{keyed:?}"));
        }
        // Each body kept (the first; "u2"; the dry run, a byte shorter) is found again.
        assert_eq!(memo.reviews().size().0, 3);
        let dry_run = body(b"1e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b", true);
        let again = decode_recalling(&dry_run, &memo).unwrap();
        assert!(whole(&again) && again.request.dry_run);
        // One of the same length and last bytes is kept in place of the first.
        let elsewhere = String::from_utf8(first.clone())
            .unwrap()
            .replacen("shop", "shoq", 1);
        let elsewhere = decode_recalling(elsewhere.as_bytes(), &memo).unwrap();
        assert!(!whole(&elsewhere) && elsewhere.namespace() == "shoq");
        assert_eq!(memo.reviews().size().0, 3);
        let first_again = body(b"2e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b", false);
        assert!(!whole(&decode_recalling(&first_again, &memo).unwrap()));

        // What is kept is counted, and a uid is not kept: bodies with long uids or names stay
        // within the bound, each counted for its name.
        let memo = PlanMemo::new(1000).unwrap();
        for i in 0..40 {
            // Each of its own length: each kept.
            let uid = "u".repeat(100_000 + i);
            decode_recalling(&body(uid.as_bytes(), false), &memo).unwrap();
        }
        let (entries, bytes) = memo.reviews().size();
        assert!(entries == 40 && bytes < 40 * 8192, "{entries} {bytes}");
        let memo = PlanMemo::new(1000).unwrap();
        for i in 0..40 {
            let name = format!(r#""name": "{}", "namespace""#, "n".repeat(100_000 + i));
            let body = String::from_utf8(body(b"u", false)).unwrap();
            decode_recalling(body.replacen(r#""namespace""#, &name, 1).as_bytes(), &memo).unwrap();
        }
        // The name twice: in the body's tail, and decoded.
        let (entries, bytes) = memo.reviews().size();
        assert!(
            bytes <= crate::webhook::memo::MAX_BYTES,
            "{entries} {bytes}"
        );
        assert!(
            entries < 40 && bytes > entries * 200_000,
            "{entries} {bytes}"
        );
    }

    /// The text written by hand is byte for byte what serde_json writes for the same review.
    #[test]
    fn encode_writes_what_serde_json_writes() {
        let patch = r#"[{"op":"add","path":"/x","value":"é\n"}]"#;
        for (message, patch, warnings) in [
            (None, None, vec![]),
            (None, Some(patch), vec!["one", "two \"2\"\t"]),
            (None, Some("[]1"), vec![]),
            (Some("denied: \\ <b>"), None, vec!["warned"]),
        ] {
            let mut response = json!({
                "uid": "uid \"quoted\" \u{1}",
                "allowed": message.is_none(),
            });
            if let Some(message) = message {
                response["status"] = json!({
                    "status": "Failure", "message": message, "reason": "Forbidden", "code": 403,
                });
            }
            if let Some(patch) = patch {
                response["patch"] = json!(STANDARD.encode(patch));
                response["patchType"] = json!("JSONPatch");
            }
            if !warnings.is_empty() {
                response["warnings"] = json!(warnings);
            }
            let review = json!({
                "apiVersion": ADMISSION_V1, "kind": "AdmissionReview", "response": response,
            });
            let encoded = answer(message, patch, &warnings).encode();
            assert_eq!(
                String::from_utf8(encoded).unwrap(),
                serde_json::to_string(&review).unwrap()
            );
        }
    }
}
