//! What the long-running parts of `serve` share: whether the process is ready ([`readiness`]),
//! and the loop that runs a task every interval until shutdown ([`ticks`]).

pub mod readiness;
pub mod ticks;
