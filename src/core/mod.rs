//! The pure core: every rule of the contract, as functions of their inputs.
//!
//! No I/O, no clock, no async: the pod arrives as JSON, the cluster as [`facts::ClusterFacts`],
//! the server's flags as [`plan::Settings`]; the answer is data (patch operations, the
//! SecretProviderClass to write, warnings) or a [`denial::Denial`]. Only std, serde, serde_json,
//! json-patch, sha2 and thiserror are used here, so every rule is testable in microseconds.

pub mod annotations;
pub mod denial;
pub mod facts;
pub mod generate;
pub mod held;
pub mod identity;
pub mod json;
pub mod node;
pub mod patch;
pub mod plan;
pub mod pod;
pub mod pruned;
pub mod reader;
pub mod reference;
pub mod request;
pub mod spc;
