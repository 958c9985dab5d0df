//! [`Denial`]: the one way the core refuses a pod. Its message is what `kubectl apply` prints.

use std::fmt;

/// A refusal: the message starts with `kvinject:`, names what is at fault and says the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    message: String,
}

impl Denial {
    /// A denial whose message is `kvinject: <what>`.
    pub fn new(what: impl fmt::Display) -> Self {
        Self {
            message: format!("kvinject: {what}"),
        }
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
