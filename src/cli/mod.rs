//! The command line: `kvinject inject`, `kvinject serve`, `kvinject certs`.
//!
//! Parses flags ([`args`]), reads and writes files, starts listeners ([`serve`]); every
//! decision is the library's. [`CliError`] is the one error type of this boundary.

use std::process::ExitCode;

use crate::certs::self_managed::SelfManagedError;
use crate::certs::{self, CertError};
use crate::offline::manifest::ManifestError;
use crate::webhook::tls::TlsError;

pub mod args;
pub mod inject;
pub mod serve;
pub mod telemetry;

pub use args::{Cli, Command, LogFormat, parse_duration};
pub use inject::report_verification;
pub use telemetry::init_telemetry;

use args::CertsArgs;

/// Why a command failed (denials are not errors: they are an exit code).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Manifests that cannot be read.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Certificates that cannot be made.
    #[error(transparent)]
    Certs(#[from] CertError),
    /// A serving certificate that cannot be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Self-managed certificates that cannot be set up.
    #[error("self-managed certificates: {0}")]
    SelfManaged(#[from] SelfManagedError),
    /// No way to reach the API server.
    #[error(
        "cannot reach the cluster: {0}; run inside a cluster, pass --kubeconfig, or use --facts FILE for offline facts"
    )]
    Kube(String),
    /// Flags that do not fit together.
    #[error("{0}")]
    Usage(String),
    /// A listener or runtime that cannot start.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl CliError {
    /// The async runtime could not start.
    fn runtime(source: std::io::Error) -> Self {
        Self::Io {
            what: "starting the runtime".into(),
            source,
        }
    }
}

/// Runs the command.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let Cli {
        log_format: _,
        command,
    } = cli;
    match command {
        Command::Inject(args) => inject::run_inject(args),
        Command::Serve(args) => {
            let args = *args;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(CliError::runtime)?;
            runtime.block_on(serve::run_serve(args))
        }
        Command::Certs(args) => run_certs(args),
    }
}

fn run_certs(args: CertsArgs) -> Result<ExitCode, CliError> {
    let CertsArgs {
        out,
        service,
        namespace,
        ca_days,
        cert_days,
    } = args;
    let generated = certs::generate(&service, &namespace, ca_days, cert_days)?;
    certs::write(&out, &generated)?;
    eprintln!(
        "wrote {0}/ca.crt, {0}/tls.crt, {0}/tls.key for {1}",
        out.display(),
        certs::subject_alt_names(&service, &namespace).join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
