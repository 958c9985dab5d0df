//! kvinject: gives pods Azure Key Vault objects through the Secrets Store CSI driver.
//!
//! The module map (arrows point down; `core` imports nothing above it):
//!
//! - [`core`]: the pure rules of `docs/contract.md` — (pod JSON, facts, settings) → plan or denial.
//! - [`webhook`]: AdmissionReview in and out, the review pipeline, HTTP, TLS, metrics.
//! - [`cluster`]: watch caches, direct look-ups, SecretProviderClass writes, the collector.
//! - [`offline`]: `kvinject inject` over manifests, and the YAML they are read and written as.
//! - [`certs`]: the `certs` command's CA and serving certificate; self-managed certificates.
//! - [`keyvault`]: object verification with the Azure SDK (the only module that imports `azure_*`).
//! - [`lifecycle`]: readiness, and the "every interval until shutdown" loop the long-running parts share.
//! - [`cli`]: flags and the three commands.
//!
//! `docs/architecture.md` follows one request through these modules.
#![forbid(unsafe_code)]

pub mod certs;
pub mod cli;
pub mod cluster;
pub mod core;
pub mod keyvault;
pub mod lifecycle;
pub mod offline;
pub mod webhook;
