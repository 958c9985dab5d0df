//! The command line: `kvinject inject`, `kvinject explain`, `kvinject serve`, `kvinject certs`.
//!
//! Parses flags ([`args`]), reads and writes files, starts listeners ([`serve`]); every
//! decision is the library's. [`CliError`] is the one error type of this boundary.

use std::io::Write;
use std::process::ExitCode;

use crate::certs::self_managed::SelfManagedError;
use crate::certs::{self, CertError};
use crate::offline::manifest::ManifestError;
use crate::webhook::tls::TlsError;

pub mod args;
pub mod explain;
pub mod inject;
pub mod serve;
pub mod telemetry;

pub use args::{Cli, Command, LogFormat, parse_duration};
pub use inject::report_verification;
pub use telemetry::{WriteHeldLogs, init_telemetry};

use args::{CertsArgs, CompletionsArgs};

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
        Command::Explain(args) => explain::run_explain(args),
        Command::Serve(args) => {
            let args = *args;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(CliError::runtime)?;
            runtime.block_on(serve::run_serve(args))
        }
        Command::Certs(args) => run_certs(args),
        Command::Completions(args) => run_completions(args),
    }
}

/// The name kubectl runs kvinject by as a plugin (`kubectl kvinject …`): the binary, or a
/// symlink to it, installed under this name on the PATH.
pub const KUBECTL_PLUGIN: &str = "kubectl-kvinject";

/// The command line as clap reads it, named as the user typed it: `kubectl kvinject` when run as
/// the kubectl plugin, so usage and errors show the command to type.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let invoked = std::env::args_os().next().map(std::path::PathBuf::from);
    let as_plugin = invoked
        .as_deref()
        .and_then(std::path::Path::file_name)
        .is_some_and(|name| name == KUBECTL_PLUGIN);
    let command = Cli::command();
    if as_plugin {
        command.bin_name("kubectl kvinject")
    } else {
        command
    }
}

/// Parses the process's arguments (exits with clap's message on a usage error).
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

fn run_completions(args: CompletionsArgs) -> Result<ExitCode, CliError> {
    let CompletionsArgs { shell } = args;
    let mut command = command();
    let name = command.get_bin_name().unwrap_or("kvinject").to_owned();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut out);
    std::io::stdout()
        .lock()
        .write_all(&out)
        .map_err(|source| CliError::Io {
            what: "writing standard output".into(),
            source,
        })?;
    Ok(ExitCode::SUCCESS)
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
