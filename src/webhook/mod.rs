//! The webhook: AdmissionReview bytes in over HTTPS, the review pipeline, AdmissionReview bytes
//! out.
//!
//! [`listener`] accepts TLS connections ([`tls`], [`deadlines`]); [`http`] routes and maps HTTP
//! errors; [`admission`] decodes and encodes AdmissionReview v1 and calls the core; [`review`]
//! runs the pipeline around it (look-ups, verification, the SPC write), with [`memo`]'s
//! remembered plans; [`metrics`] counts.

pub mod admission;
pub mod deadlines;
pub mod http;
pub mod listener;
pub mod memo;
pub mod metrics;
pub mod review;
pub mod tls;
