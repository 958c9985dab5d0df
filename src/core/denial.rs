//! [`Denial`]: the one way kvinject refuses a pod, and [`warning`], the one way it warns. Both own
//! the `kvinject: ` prefix that starts every message `kubectl apply` prints.

use std::fmt;

/// What starts every denial and warning kvinject returns.
pub const MESSAGE_PREFIX: &str = "kvinject: ";

/// A warning message: `kvinject: <what>`.
pub fn warning(what: impl fmt::Display) -> String {
    format!("{MESSAGE_PREFIX}{what}")
}

/// Why a pod was refused: a small fixed set, the `reason` label of the denial metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DenialReason {
    /// A kvinject annotation is malformed or contradicts another.
    Annotation,
    /// The identity chain is broken or ambiguous.
    Identity,
    /// Something kvinject would add already exists in another form.
    Conflict,
    /// An object the pod needs (ServiceAccount, binding, SPC) does not exist.
    MissingObject,
    /// The SecretProviderClass the pod needs could not be written.
    SpcWrite,
    /// The pod itself is not something kvinject can wire.
    InvalidPod,
    /// Key Vault says a referenced object is unusable.
    KeyVault,
    /// The pod asks for more than a limit allows.
    Limit,
    /// The pod's namespace refuses it: not opted in, or a vault it does not allow.
    Namespace,
}

impl DenialReason {
    /// Stable kebab-case name: the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Annotation => "annotation",
            Self::Identity => "identity",
            Self::Conflict => "conflict",
            Self::MissingObject => "missing-object",
            Self::SpcWrite => "spc-write",
            Self::InvalidPod => "invalid-pod",
            Self::KeyVault => "keyvault",
            Self::Limit => "limit",
            Self::Namespace => "namespace",
        }
    }
}

/// A refusal: the message starts with `kvinject:`, names what is at fault and says the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    message: String,
    reason: DenialReason,
}

impl Denial {
    /// A denial of the pod itself, whose message is `kvinject: <what>`.
    pub fn new(what: impl fmt::Display) -> Self {
        Self {
            message: warning(what),
            reason: DenialReason::InvalidPod,
        }
    }

    /// A denial for an object kvinject could not find (a ServiceAccount, a binding, an SPC):
    /// one that may exist but not be known yet, worth one direct look-up before it stands.
    pub fn missing(what: impl fmt::Display) -> Self {
        Self::new(what).because(DenialReason::MissingObject)
    }

    /// A denial about one annotation: `kvinject: annotation <key>: <what>`.
    pub fn annotation(key: &str, what: impl fmt::Display) -> Self {
        Self::new(format!("annotation {key}: {what}")).because(DenialReason::Annotation)
    }

    /// The same denial with its reason set.
    pub fn because(mut self, reason: DenialReason) -> Self {
        self.reason = reason;
        self
    }

    /// Whether this denial is for an object kvinject could not find.
    pub fn is_missing_fact(&self) -> bool {
        self.reason == DenialReason::MissingObject
    }

    /// Why the pod was refused.
    pub fn reason(&self) -> DenialReason {
        self.reason
    }

    /// The same denial (same reason) about `context`: `kvinject: <context>: <what>`, as when a
    /// workload's pod template is at fault.
    pub fn within(&self, context: impl fmt::Display) -> Self {
        Self {
            message: warning(format!("{context}: {}", self.what())),
            reason: self.reason,
        }
    }

    /// The full message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message without its `kvinject: ` prefix.
    pub fn what(&self) -> &str {
        self.message
            .strip_prefix(MESSAGE_PREFIX)
            .unwrap_or(&self.message)
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Denial {}
