//! [`Denial`]: the one way the core refuses a pod. Its message is what `kubectl apply` prints.

use std::fmt;

/// A refusal: the message starts with `kvinject:`, names what is at fault and says the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    message: String,
    missing_fact: bool,
}

impl Denial {
    /// A denial whose message is `kvinject: <what>`.
    pub fn new(what: impl fmt::Display) -> Self {
        Self {
            message: format!("kvinject: {what}"),
            missing_fact: false,
        }
    }

    /// A denial for an object kvinject could not find (a ServiceAccount, a binding, an SPC):
    /// one that may exist but not be known yet, worth one direct look-up before it stands.
    pub fn missing(what: impl fmt::Display) -> Self {
        Self {
            missing_fact: true,
            ..Self::new(what)
        }
    }

    /// Whether this denial is for an object kvinject could not find.
    pub fn is_missing_fact(&self) -> bool {
        self.missing_fact
    }

    /// A denial about one annotation: `kvinject: annotation <key>: <what>`.
    pub fn annotation(key: &str, what: impl fmt::Display) -> Self {
        Self::new(format!("annotation {key}: {what}"))
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
