//! The `kvinject` binary: install the crypto provider, parse the command line, run.

use std::process::ExitCode;

use kvinject::cli;

/// mimalloc instead of glibc's malloc: a review allocates and frees hundreds of small blocks,
/// which glibc's allocator spends about a quarter of a review's instructions on.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<ExitCode> {
    // One crypto provider for every rustls user in the process, before any TLS object exists.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = cli::parse();
    cli::init_telemetry(cli.log_format);
    // Log lines `serve` holds are written however main ends: returning, failing or panicking.
    let _held_logs = cli::WriteHeldLogs;
    Ok(cli::run(cli)?)
}
