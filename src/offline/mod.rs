//! `kvinject inject`: the core over manifests instead of AdmissionReviews.
//!
//! [`manifest`] reads multi-document YAML or JSON into values and writes them back with the
//! YAML 1.1-safe emitter of [`yaml`]; [`inject`] finds every pod and pod template among them
//! and runs the same core the webhook runs.

pub mod bounded;
pub mod inject;
pub mod manifest;
pub mod yaml;
