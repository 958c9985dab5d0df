//! [`Denial`]: the one way the core refuses a pod. Its message is what `kubectl apply` prints.

use std::fmt;

/// A refusal: the message starts with `kvinject:`, names what is at fault and says the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    message: String,
    missing_fact: bool,
    reason: &'static str,
}

impl Denial {
    /// A denial whose message is `kvinject: <what>`.
    pub fn new(what: impl fmt::Display) -> Self {
        Self {
            message: format!("kvinject: {what}"),
            missing_fact: false,
            reason: "invalid-pod",
        }
    }

    /// A denial for an object kvinject could not find (a ServiceAccount, a binding, an SPC):
    /// one that may exist but not be known yet, worth one direct look-up before it stands.
    pub fn missing(what: impl fmt::Display) -> Self {
        Self {
            missing_fact: true,
            reason: "missing-object",
            ..Self::new(what)
        }
    }

    /// Whether this denial is for an object kvinject could not find.
    pub fn is_missing_fact(&self) -> bool {
        self.missing_fact
    }

    /// A denial about one annotation: `kvinject: annotation <key>: <what>`.
    pub fn annotation(key: &str, what: impl fmt::Display) -> Self {
        Self::new(format!("annotation {key}: {what}")).because("annotation")
    }

    /// The same denial with its reason class set (for metrics: a small fixed set of words).
    pub fn because(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }

    /// The reason class: annotation, identity, conflict, missing-object, spc-write, invalid-pod.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The same denial (kind and reason) with the message `kvinject: <what>`.
    pub fn reworded(&self, what: impl fmt::Display) -> Self {
        Self {
            message: format!("kvinject: {what}"),
            ..self.clone()
        }
    }

    /// The full message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Denial {}
