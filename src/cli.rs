//! The command line: `kvinject inject`, `kvinject serve`, `kvinject certs`.
//!
//! Parses flags, reads and writes files, starts listeners; every decision is the library's.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;

use crate::certs::{self, CertError};
use crate::cluster::{Cluster, Readiness};
use crate::collector::{self, Collector};
use crate::facts::DocumentFacts;
use crate::inject;
use crate::keyvault::{Verifier, VerifierSettings, VerifyMode};
use crate::lease::LeaseLock;
use crate::manifest::{self, Format, ManifestError};
use crate::metrics::SharedMetrics;
use crate::plan::Settings;
use crate::self_managed::SelfManaged;
use crate::server::{self, AppState, Limits};
use crate::tls::{self, CertStore, ServingCert, TlsError};

/// kvinject: Azure Key Vault objects for Kubernetes pods, through the Secrets Store CSI driver.
#[derive(Debug, Parser)]
#[command(name = "kvinject", version, about)]
pub struct Cli {
    /// Log format (logs go to standard error).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "KVINJECT_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rewrite manifests the way the webhook would mutate their pods; print them and the
    /// SecretProviderClasses they need.
    Inject(InjectArgs),
    /// Run the HTTPS admission webhook.
    Serve(Box<ServeArgs>),
    /// Write a CA and a serving certificate for the webhook Service.
    Certs(CertsArgs),
}

/// Flags shared by `inject` and `serve`: what the core needs besides the pod.
#[derive(Debug, Clone, Args)]
pub struct CoreArgs {
    /// Key Vault name for pods whose pod and namespace name none.
    #[arg(long, env = "KVINJECT_DEFAULT_VAULT")]
    pub default_vault: Option<String>,
    /// Azure AD tenant ID for pods whose pod and namespace name none.
    #[arg(long, env = "KVINJECT_DEFAULT_TENANT_ID")]
    pub default_tenant_id: Option<String>,
    /// kvinject's own namespace, whose pods are never mutated.
    #[arg(long, env = "KVINJECT_NAMESPACE", default_value = "kvinject")]
    pub kvinject_namespace: String,
}

impl CoreArgs {
    fn settings(self) -> Settings {
        let Self {
            default_vault,
            default_tenant_id,
            kvinject_namespace,
        } = self;
        Settings::new(default_vault, default_tenant_id, &kvinject_namespace)
    }
}

/// Flags of Key Vault object verification.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Check that referenced objects exist, are enabled and valid: off, warn or deny (default:
    /// warn for `serve` in a cluster; off for `serve --facts` and for `inject`).
    #[arg(long, env = "KVINJECT_VERIFY_OBJECTS", value_enum)]
    pub verify_objects: Option<VerifyMode>,
    /// Deadline for all the checks of one pod.
    #[arg(long, env = "KVINJECT_VERIFY_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub verify_timeout: Duration,
    /// How long a good answer is cached.
    #[arg(long, env = "KVINJECT_VERIFY_CACHE_TTL", default_value = "5m", value_parser = parse_duration)]
    pub verify_cache_ttl: Duration,
    /// How long a bad answer (or no answer) is cached.
    #[arg(long, env = "KVINJECT_VERIFY_NEGATIVE_CACHE_TTL", default_value = "1m", value_parser = parse_duration)]
    pub verify_negative_cache_ttl: Duration,
    /// Requests in flight per vault.
    #[arg(long, env = "KVINJECT_VERIFY_MAX_IN_FLIGHT", default_value_t = 8)]
    pub verify_max_in_flight: usize,
    /// DNS suffix of Key Vaults (sovereign clouds: e.g. vault.azure.cn, vault.usgovcloudapi.net).
    #[arg(
        long,
        env = "KVINJECT_VAULT_DNS_SUFFIX",
        default_value = "vault.azure.net"
    )]
    pub vault_dns_suffix: String,
}

impl VerifyArgs {
    fn settings(self) -> (Option<VerifyMode>, VerifierSettings) {
        let Self {
            verify_objects,
            verify_timeout,
            verify_cache_ttl,
            verify_negative_cache_ttl,
            verify_max_in_flight,
            vault_dns_suffix,
        } = self;
        (
            verify_objects,
            VerifierSettings {
                dns_suffix: vault_dns_suffix,
                positive_ttl: verify_cache_ttl,
                negative_ttl: verify_negative_cache_ttl,
                max_in_flight_per_vault: verify_max_in_flight,
                deadline: verify_timeout,
            },
        )
    }
}

/// `kvinject inject`.
#[derive(Debug, Args)]
pub struct InjectArgs {
    /// A file, a directory of .yaml/.yml/.json files, or `-` for standard input.
    #[arg(short = 'f', long = "filename")]
    pub filename: String,
    /// Namespace of documents that name none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Output format (default: JSON if every input is JSON, else YAML).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Format>,
    /// Core settings.
    #[command(flatten)]
    pub core: CoreArgs,
    /// Key Vault verification (with the Azure CLI's login).
    #[command(flatten)]
    pub verify: VerifyArgs,
}

/// `kvinject serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// PEM certificate chain served on the HTTPS port; re-read when it changes.
    #[arg(
        long,
        env = "KVINJECT_TLS_CERT_FILE",
        required_unless_present = "self_managed_certs"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate.
    #[arg(
        long,
        env = "KVINJECT_TLS_KEY_FILE",
        required_unless_present = "self_managed_certs"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// How often the certificate files are checked for a change.
    #[arg(long, env = "KVINJECT_CERT_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
    /// kvinject makes, stores, publishes (caBundle) and renews its own certificates.
    #[arg(long, env = "KVINJECT_SELF_MANAGED_CERTS", conflicts_with_all = ["tls_cert_file", "tls_key_file", "facts"])]
    pub self_managed_certs: bool,
    /// Self-managed: the Secret in kvinject's namespace that holds the certificates.
    #[arg(long, env = "KVINJECT_TLS_SECRET_NAME", default_value = "kvinject-tls")]
    pub tls_secret_name: String,
    /// Self-managed: the Mutating- and ValidatingWebhookConfiguration whose caBundle to keep current.
    #[arg(
        long,
        env = "KVINJECT_WEBHOOK_CONFIGURATION",
        default_value = "kvinject"
    )]
    pub webhook_configuration: String,
    /// Self-managed: the Service the API server calls (the certificate's DNS names).
    #[arg(long, env = "KVINJECT_SERVICE_NAME", default_value = "kvinject")]
    pub service_name: String,
    /// HTTPS address for `POST /mutate`.
    #[arg(long, env = "KVINJECT_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain HTTP address for `/healthz` and `/readyz`.
    #[arg(long, env = "KVINJECT_HEALTH_LISTEN", default_value = "0.0.0.0:8080")]
    pub health_listen: SocketAddr,
    /// Offline mode: manifests holding the cluster facts (Namespaces, ServiceAccounts,
    /// AzureIdentityBindings, SecretProviderClasses), read once at start; nothing is written.
    /// Without it, kvinject reads and writes the cluster it runs in (or --kubeconfig's).
    #[arg(long, env = "KVINJECT_FACTS", conflicts_with = "kubeconfig")]
    pub facts: Option<String>,
    /// Kubeconfig to reach the API server when running outside the cluster (default: in-cluster
    /// configuration, then KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// This replica's name, the holder identity of the collector Lease.
    #[arg(long, env = "POD_NAME", default_value = "kvinject")]
    pub pod_name: String,
    /// How long a generated SecretProviderClass stays unreferenced before it is deleted
    /// (e.g. 90s, 10m, 1h).
    #[arg(long, env = "KVINJECT_GC_GRACE_PERIOD", default_value = "10m", value_parser = parse_duration)]
    pub gc_grace_period: Duration,
    /// After SIGTERM, how long kvinject keeps accepting requests while answering /readyz 503,
    /// so the Service stops sending it traffic before it stops listening.
    #[arg(long, env = "KVINJECT_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// Deadline for the direct look-ups of one admission (objects too new for the caches).
    #[arg(long, env = "KVINJECT_LOOKUP_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub lookup_timeout: Duration,
    /// Core settings.
    #[command(flatten)]
    pub core: CoreArgs,
    /// Key Vault verification (with kvinject's own identity).
    #[command(flatten)]
    pub verify: VerifyArgs,
}

/// `kvinject certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into.
    #[arg(long)]
    pub out: PathBuf,
    /// The webhook's Service name.
    #[arg(long, default_value = "kvinject")]
    pub service: String,
    /// The webhook's namespace.
    #[arg(long, default_value = "kvinject")]
    pub namespace: String,
    /// CA validity in days.
    #[arg(long, default_value_t = 3650)]
    pub ca_days: i64,
    /// Serving certificate validity in days.
    #[arg(long, default_value_t = 365)]
    pub cert_days: i64,
}

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
    SelfManaged(#[from] crate::self_managed::SelfManagedError),
    /// No way to reach the API server.
    #[error(
        "cannot reach the cluster: {0}; run inside a cluster, pass --kubeconfig, or use --facts FILE for offline facts"
    )]
    Kube(String),
    /// A listener or runtime that cannot start.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Sets up logging to standard error.
pub fn init_telemetry(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Runs the command.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let Cli {
        log_format: _,
        command,
    } = cli;
    match command {
        Command::Inject(args) => run_inject(args),
        Command::Serve(args) => {
            let args = *args;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|source| CliError::Io {
                    what: "starting the runtime".into(),
                    source,
                })?;
            runtime.block_on(run_serve(args))
        }
        Command::Certs(args) => run_certs(args),
    }
}

fn run_inject(args: InjectArgs) -> Result<ExitCode, CliError> {
    let InjectArgs {
        filename,
        namespace,
        output,
        core,
        verify,
    } = args;
    let (verify_mode, verifier_settings) = verify.settings();
    let verify_mode = verify_mode.unwrap_or(VerifyMode::Off);
    let input = manifest::read(&filename)?;
    let format = output.unwrap_or(input.format);
    let mut stderr = std::io::stderr().lock();
    match inject::inject(input.documents, &namespace, &core.settings()) {
        Ok(injected) => {
            for warning in &injected.warnings {
                let _ = writeln!(stderr, "Warning: {warning}");
            }
            if verify_mode != VerifyMode::Off {
                let refusals = verify_offline(
                    &injected.objects,
                    verify_mode,
                    verifier_settings,
                    &mut stderr,
                )?;
                if refusals > 0 {
                    return Ok(ExitCode::FAILURE);
                }
            }
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(manifest::write(&injected.documents, format).as_bytes())
                .map_err(|source| CliError::Io {
                    what: "writing standard output".into(),
                    source,
                })?;
            Ok(ExitCode::SUCCESS)
        }
        Err(denied) => {
            for denial in &denied.0 {
                let _ = writeln!(stderr, "Error: {denial}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Verifies every generate-mode pod's objects with the Azure CLI's login; prints a line per
/// problem and returns how many denials there were.
fn verify_offline(
    objects: &[(String, crate::plan::PodObjects)],
    mode: VerifyMode,
    settings: VerifierSettings,
    stderr: &mut impl Write,
) -> Result<usize, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Io {
            what: "starting the runtime".into(),
            source,
        })?;
    let verifier = Verifier::new(Verifier::cli_credential(), settings);
    Ok(runtime.block_on(report_verification(&verifier, objects, mode, stderr)))
}

/// What `inject --verify-objects` prints: `Error:` for an unusable object in `deny` mode,
/// `Warning:` otherwise; returns the number of errors.
pub async fn report_verification(
    verifier: &Verifier,
    objects: &[(String, crate::plan::PodObjects)],
    mode: VerifyMode,
    out: &mut impl Write,
) -> usize {
    let mut refusals = 0;
    for (label, objects) in objects {
        for (_, report) in verifier.verify(&objects.vault, &objects.references).await {
            let Some(report) = report else { continue };
            if report.about_object && mode == VerifyMode::Deny {
                refusals += 1;
                let _ = writeln!(out, "Error: {label}: {}", report.message);
            } else {
                let _ = writeln!(out, "Warning: {label}: {}", report.message);
            }
        }
    }
    refusals
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

async fn run_serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    let ServeArgs {
        tls_cert_file,
        tls_key_file,
        cert_reload_interval,
        self_managed_certs,
        tls_secret_name,
        webhook_configuration,
        service_name,
        listen,
        health_listen,
        facts,
        kubeconfig,
        pod_name,
        gc_grace_period,
        shutdown_delay,
        lookup_timeout,
        core,
        verify,
    } = args;
    let (verify_mode, verifier_settings) = verify.settings();
    // Offline (--facts) means no Azure either, unless asked.
    let verify_mode = verify_mode.unwrap_or(if facts.is_some() {
        VerifyMode::Off
    } else {
        VerifyMode::Warn
    });
    let own_namespace = core.kvinject_namespace.clone();
    let settings = core.settings();
    let limits = Limits::default();
    let readiness = Arc::new(Readiness::default());
    readiness.expect("https");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut background = Vec::new();
    let client = match (&facts, self_managed_certs) {
        (Some(_), false) => None,
        _ => Some(kube_client(kubeconfig).await?),
    };
    let store = match (&client, tls_cert_file, tls_key_file) {
        (Some(client), _, _) if self_managed_certs => {
            let manager = SelfManaged::new(
                client.clone(),
                &own_namespace,
                &tls_secret_name,
                &webhook_configuration,
                &service_name,
                &pod_name,
            );
            let store = CertStore::new(manager.bootstrap(Duration::from_secs(60)).await?);
            background.push(tokio::spawn(manager.run(
                store.clone(),
                Duration::from_secs(60),
                stopped(),
            )));
            store
        }
        (_, Some(cert_file), Some(key_file)) => {
            let store = CertStore::new(ServingCert::from_files(&cert_file, &key_file)?);
            background.push(tokio::spawn(tls::watch_files(
                store.clone(),
                cert_file,
                key_file,
                cert_reload_interval,
                stopped(),
            )));
            store
        }
        _ => unreachable!("clap requires the certificate files unless --self-managed-certs"),
    };
    readiness.watch_certificate(store.clone());
    let tls = tls::server_config_with(store)?;
    let metrics = SharedMetrics::default();
    let mut live_cluster = None;
    let state = match facts {
        Some(facts) => {
            let manifests = manifest::read(&facts)?;
            let facts = DocumentFacts::from_documents(&manifests.documents, "default");
            AppState::new(Arc::new(facts), settings, limits)
        }
        None => {
            let client = client.expect("a client exists without --facts");
            let cluster = Cluster::start(client.clone(), readiness.clone(), lookup_timeout).await;
            let lease = LeaseLock::new(
                client,
                &own_namespace,
                "kvinject-collector",
                &pod_name,
                Duration::from_secs(15),
            );
            let collector = Collector::new(cluster.clone(), gc_grace_period);
            let interval =
                (gc_grace_period / 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
            background.push(tokio::spawn(collector::run(
                collector,
                lease,
                interval,
                metrics.clone(),
                stopped(),
            )));
            live_cluster = Some(cluster.clone());
            AppState::live(cluster, settings, limits, gc_grace_period / 4)
        }
    }
    .with_metrics(metrics.clone())
    .with_verifier(
        Arc::new(Verifier::new(
            if verify_mode == VerifyMode::Off {
                Err("verification is off".into())
            } else {
                Verifier::cluster_credential()
            },
            verifier_settings,
        )),
        verify_mode,
    );
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| CliError::Io {
                what: format!("listening on {addr}"),
                source,
            })
    };
    let health_listener = bind(health_listen).await?;
    let listener = bind(listen).await?;
    tracing::info!(
        https = %server::local_addr(&listener),
        health = %server::local_addr(&health_listener),
        "serving"
    );
    let app = server::admission_router(state);
    // The health port outlives the drain, answering /readyz 503 while connections finish.
    let (health_stop, health_stopped) = tokio::sync::oneshot::channel::<()>();
    let health = tokio::spawn(server::serve_health(
        health_listener,
        server::health_router(readiness.clone(), metrics, live_cluster),
        async {
            let _ = health_stopped.await;
        },
    ));
    let https = tokio::spawn(server::serve_tls(listener, tls, app, limits, stopped()));
    readiness.set_ready("https");
    shutdown_signal().await;
    tracing::info!(delay = ?shutdown_delay, "shutting down: not ready; still serving until the endpoints update");
    readiness.stop();
    tokio::time::sleep(shutdown_delay).await;
    tracing::info!("draining connections");
    let _ = stop_tx.send(true);
    let _ = https.await;
    let _ = health_stop.send(());
    let _ = health.await;
    for task in background {
        let _ = task.await;
    }
    Ok(ExitCode::SUCCESS)
}

async fn kube_client(kubeconfig: Option<PathBuf>) -> Result<kube::Client, CliError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(&path)
                .map_err(|e| CliError::Kube(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| CliError::Kube(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| CliError::Kube(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| CliError::Kube(e.to_string()))
}

/// Parses `90s`, `10m`, `1h`, `500ms` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 90s, 10m or 1h"))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(number)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use ms, s, m or h"
            ));
        }
    };
    Ok(Duration::from_secs(number * seconds))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
