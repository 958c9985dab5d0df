//! Certificates for the webhook's HTTPS port.
//!
//! [`generate`] makes a CA and a serving certificate (the `certs` command, and the self-managed
//! mode's first pair); [`self_managed`] keeps them in a Secret, publishes `caBundle` and renews.
//! Serving a certificate, and replacing it while serving, is `webhook::tls`.

mod generate;
pub mod self_managed;

pub use generate::{
    CaPair, CertError, DEFAULT_CA_DAYS, DEFAULT_CERT_DAYS, Validity, WebhookCerts, generate, issue,
    issue_for, new_ca, subject_alt_names, write,
};
