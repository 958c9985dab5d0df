//! kvinject: gives pods Azure Key Vault objects through the Secrets Store CSI driver.
//!
//! A pure core (`plan` and the modules it uses) decides; adapters (`admission` + `server` for the
//! webhook, `inject` for manifests) translate. See `../shared/spec/kvinject.md` for the contract.
#![forbid(unsafe_code)]

pub mod admission;
pub mod annotations;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod collector;
pub mod deadlines;
pub mod denial;
pub mod facts;
pub mod identity;
pub mod inject;
pub mod keyvault;
pub mod lease;
pub mod manifest;
pub mod metrics;
pub mod patch;
pub mod plan;
pub mod pod;
pub mod reference;
pub mod self_managed;
pub mod server;
pub mod spc;
pub mod tls;
