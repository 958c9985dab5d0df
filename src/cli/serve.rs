//! `kvinject serve`: the webhook process, assembled in named steps.
//!
//! Read the flags into what to serve from ([`FactsSource`]) and with ([`CertificateSource`]);
//! start the certificate source, the review pipeline (with the caches, collector and Lease when
//! in a cluster), then the listeners; on SIGTERM go unready, keep serving for the shutdown
//! delay, drain, and wait for every background task.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::certs::self_managed::SelfManaged;
use crate::cli::CliError;
use crate::cli::args::{OperationsArgs, ServeArgs};
use crate::cluster::Cluster;
use crate::cluster::collector::{self, Collector};
use crate::cluster::denials::DenialEvents;
use crate::cluster::events::EventWriter;
use crate::cluster::lease::{LEASE_DURATION, LeaseLock};
use crate::cluster::rotation::{self, Restarts, RotationSettings};
use crate::cluster::uninjected::{self, Eviction, UninjectedPods, UninjectedSettings};
use crate::core::facts::DocumentFacts;
use crate::core::plan::Settings;
use crate::keyvault::{Verifier, VerifierSettings, VerifyMode};
use crate::lifecycle::readiness::Readiness;
use crate::offline::manifest;
use crate::webhook::http;
use crate::webhook::listener::{self, Limits};
use crate::webhook::metrics::SharedMetrics;
use crate::webhook::review::Reviewer;
use crate::webhook::tls::{self, CertStore, ServingCert};

/// Name of the Lease that makes one replica the SPC collector.
pub const COLLECTOR_LEASE: &str = "kvinject-collector";
/// How long a starting replica waits for self-managed certificates (its own or another's).
const SELF_MANAGED_BOOTSTRAP: Duration = Duration::from_secs(60);
/// How often self-managed certificates are checked for renewal.
const SELF_MANAGED_INTERVAL: Duration = Duration::from_secs(60);
/// Bounds of the collector's pass interval (a tenth of the grace period).
const COLLECTOR_INTERVAL_MIN: Duration = Duration::from_secs(1);
const COLLECTOR_INTERVAL_MAX: Duration = Duration::from_secs(30);
/// How often the Lease holder looks for pods without injection, at most: the eviction interval
/// when shorter, down to the minimum.
const UNINJECTED_INTERVAL: Duration = Duration::from_secs(30);
const UNINJECTED_INTERVAL_MIN: Duration = Duration::from_secs(1);

/// The collector runs a pass every tenth of the grace period, within bounds.
fn collector_interval(grace: Duration) -> Duration {
    (grace / 10).clamp(COLLECTOR_INTERVAL_MIN, COLLECTOR_INTERVAL_MAX)
}

/// An admission marks its SPC used at most once per quarter of the grace period, so an SPC in
/// use is always marked well within it.
pub fn spc_refresh(grace: Duration) -> Duration {
    grace / 4
}

/// Where the serving certificate comes from.
enum CertificateSource {
    /// PEM files (a Secret volume, cert-manager), re-read every `reload_interval`.
    Files {
        cert: PathBuf,
        key: PathBuf,
        reload_interval: Duration,
    },
    /// kvinject's own, kept in a Secret and published as caBundle.
    SelfManaged {
        secret_name: String,
        webhook_configuration: String,
        service_name: String,
    },
}

/// Where the facts come from.
enum FactsSource {
    /// Manifests read once (`--facts`): nothing is looked up or written.
    Manifests(String),
    /// The cluster's API server (in-cluster, or `--kubeconfig`).
    Cluster,
}

/// Everything `serve` needs, read from the flags.
struct ServePlan {
    certificates: CertificateSource,
    client_ca_file: Option<PathBuf>,
    facts: FactsSource,
    kubeconfig: Option<PathBuf>,
    listen: SocketAddr,
    health_listen: SocketAddr,
    own_namespace: String,
    pod_name: String,
    gc_grace_period: Duration,
    shutdown_delay: Duration,
    lookup_timeout: Duration,
    plan_cache_entries: usize,
    limits: Limits,
    settings: Settings,
    verify_mode: VerifyMode,
    verifier_settings: VerifierSettings,
    operations: OperationsArgs,
}

impl ServePlan {
    fn from_args(args: ServeArgs) -> Result<Self, CliError> {
        let ServeArgs {
            tls_cert_file,
            tls_key_file,
            client_ca_file,
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
            plan_cache_entries,
            max_spcs_per_namespace,
            core,
            verify,
            operations,
        } = args;
        let certificates = match (self_managed_certs, tls_cert_file, tls_key_file) {
            (true, _, _) => CertificateSource::SelfManaged {
                secret_name: tls_secret_name,
                webhook_configuration,
                service_name,
            },
            (false, Some(cert), Some(key)) => CertificateSource::Files {
                cert,
                key,
                reload_interval: cert_reload_interval,
            },
            (false, _, _) => {
                return Err(CliError::Usage(
                    "serve needs --tls-cert-file and --tls-key-file, or --self-managed-certs"
                        .into(),
                ));
            }
        };
        let facts = match facts {
            Some(file) => FactsSource::Manifests(file),
            None => FactsSource::Cluster,
        };
        let (verify_mode, verifier_settings) = verify.settings();
        // Offline (--facts) means no Azure either, unless asked.
        let verify_mode = verify_mode.unwrap_or(match facts {
            FactsSource::Manifests(_) => VerifyMode::Off,
            FactsSource::Cluster => VerifyMode::Warn,
        });
        Ok(Self {
            certificates,
            client_ca_file,
            facts,
            kubeconfig,
            listen,
            health_listen,
            own_namespace: core.kvinject_namespace.clone(),
            pod_name,
            gc_grace_period,
            shutdown_delay,
            lookup_timeout,
            plan_cache_entries,
            limits: Limits {
                max_spcs_per_namespace,
                ..Limits::default()
            },
            settings: core.settings(),
            verify_mode,
            verifier_settings,
            operations,
        })
    }

    /// Whether anything needs the API server: the facts, or self-managed certificates.
    fn needs_cluster(&self) -> bool {
        matches!(self.facts, FactsSource::Cluster)
            || matches!(self.certificates, CertificateSource::SelfManaged { .. })
    }
}

/// The background tasks of a running server and the signal that stops them.
struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    /// A future that resolves when shutdown begins.
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.subscribe();
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }
    }

    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Signals shutdown, then waits for `first` and every background task.
    async fn stop_after(self, first: JoinHandle<()>) {
        let _ = self.stop.send(true);
        let _ = first.await;
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Runs the webhook until SIGTERM or Ctrl-C.
pub async fn run_serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    let plan = ServePlan::from_args(args)?;
    // One log write per burst of admissions, not one per admission; `main` writes what is
    // left on exit.
    crate::cli::telemetry::hold_routine_lines();
    let readiness = Arc::new(Readiness::default());
    readiness.expect("https");
    let mut background = Background::new();
    let clients = match plan.needs_cluster() {
        true => Some(kube_clients(plan.kubeconfig.clone()).await?),
        false => None,
    };
    let main_client = clients.as_ref().map(|clients| &clients.main);
    let store = start_certificates(&plan, main_client, &mut background).await?;
    readiness.watch_certificate(store.clone());
    let tls = tls::server_config_for_clients(store, plan.client_ca_file.as_deref())?;
    let metrics = SharedMetrics::default();
    let (reviewer, cluster) =
        start_reviewer(&plan, clients, &readiness, &metrics, &mut background).await?;

    let health_listener = bind(plan.health_listen).await?;
    let listener = bind(plan.listen).await?;
    tracing::info!(
        https = %listener::local_addr(&listener),
        health = %listener::local_addr(&health_listener),
        "serving"
    );
    // The health port outlives the drain, answering /readyz 503 while connections finish.
    let (health_stop, health_stopped) = tokio::sync::oneshot::channel::<()>();
    let health = tokio::spawn(listener::serve_health(
        health_listener,
        http::health_router(readiness.clone(), metrics, cluster),
        async {
            let _ = health_stopped.await;
        },
    ));
    let limits = reviewer.limits();
    let https = tokio::spawn(listener::serve_tls(
        listener,
        tls,
        http::admission_router(reviewer),
        limits,
        background.stopped(),
    ));
    readiness.set_ready("https");

    shutdown_signal().await;
    tracing::info!(delay = ?plan.shutdown_delay, "shutting down: not ready; still serving until the endpoints update");
    readiness.stop();
    tokio::time::sleep(plan.shutdown_delay).await;
    tracing::info!("draining connections");
    background.stop_after(https).await;
    let _ = health_stop.send(());
    let _ = health.await;
    Ok(ExitCode::SUCCESS)
}

/// The certificate store the HTTPS port serves from, kept current by a background task.
async fn start_certificates(
    plan: &ServePlan,
    client: Option<&kube::Client>,
    background: &mut Background,
) -> Result<Arc<CertStore>, CliError> {
    match (&plan.certificates, client) {
        (
            CertificateSource::Files {
                cert,
                key,
                reload_interval,
            },
            _,
        ) => {
            let store = CertStore::new(ServingCert::from_files(cert, key)?);
            let watch = tls::watch_files(
                store.clone(),
                cert.clone(),
                key.clone(),
                *reload_interval,
                background.stopped(),
            );
            background.spawn(watch);
            Ok(store)
        }
        (
            CertificateSource::SelfManaged {
                secret_name,
                webhook_configuration,
                service_name,
            },
            Some(client),
        ) => {
            let manager = SelfManaged::new(
                client.clone(),
                &plan.own_namespace,
                secret_name,
                webhook_configuration,
                service_name,
                &plan.pod_name,
            );
            let store = CertStore::new(manager.bootstrap(SELF_MANAGED_BOOTSTRAP).await?);
            let renewals = manager.run(store.clone(), SELF_MANAGED_INTERVAL, background.stopped());
            background.spawn(renewals);
            Ok(store)
        }
        (CertificateSource::SelfManaged { .. }, None) => Err(CliError::Usage(
            "--self-managed-certs needs the cluster; it cannot be used with --facts".into(),
        )),
    }
}

/// The review pipeline over the facts source; in a cluster also the caches, and the collector
/// with its Lease in the background.
async fn start_reviewer(
    plan: &ServePlan,
    clients: Option<Clients>,
    readiness: &Arc<Readiness>,
    metrics: &SharedMetrics,
    background: &mut Background,
) -> Result<(Reviewer, Option<Cluster>), CliError> {
    let limits = plan.limits;
    let settings = plan.settings.clone();
    let (reviewer, cluster) = match (&plan.facts, clients) {
        (FactsSource::Manifests(file), _) => {
            let manifests = manifest::read(file)?;
            let facts = DocumentFacts::from_documents(&manifests.documents, "default");
            (Reviewer::new(Arc::new(facts), settings, limits), None)
        }
        (
            FactsSource::Cluster,
            Some(Clients {
                main: client,
                no_retry,
            }),
        ) => {
            let cluster =
                Cluster::start(client.clone(), readiness.clone(), plan.lookup_timeout).await;
            let lease = LeaseLock::new(
                client,
                &plan.own_namespace,
                COLLECTOR_LEASE,
                &plan.pod_name,
                LEASE_DURATION,
            );
            let grace = plan.gc_grace_period;
            let deletions = metrics.clone();
            let (leading_to, leading) = watch::channel(false);
            background.spawn(collector::run(
                Collector::new(cluster.clone(), grace),
                lease,
                collector_interval(grace),
                move |deleted| deletions.spc_deleted(deleted as u64),
                leading_to,
                background.stopped(),
            ));
            let events = EventWriter::new(cluster.clone(), &plan.pod_name, metrics.clone());
            let denial_events = start_operations(plan, &events, &no_retry, leading, background);
            let reviewer = Reviewer::live(cluster.clone(), settings, limits, spc_refresh(grace))
                .with_denial_events(denial_events);
            (reviewer, Some(cluster))
        }
        (FactsSource::Cluster, None) => {
            return Err(CliError::Kube("no client was made".into()));
        }
    };
    let credential = match plan.verify_mode {
        VerifyMode::Off => Err("verification is off".into()),
        _ => Verifier::cluster_credential(),
    };
    let verifier = Verifier::new(credential, plan.verifier_settings.clone());
    let reviewer = reviewer
        .with_metrics(metrics.clone())
        .with_verifier(Arc::new(verifier), plan.verify_mode)
        .with_plan_memo(plan.plan_cache_entries);
    Ok((reviewer, cluster))
}

/// Starts the features the operations flags turn on: rotation restarts and the un-injected pods
/// check (acting while this replica holds the Lease), and the denial Events' writer, whose queue
/// is returned for the review pipeline.
fn start_operations(
    plan: &ServePlan,
    events: &EventWriter,
    eviction_client: &kube::Client,
    leading: watch::Receiver<bool>,
    background: &mut Background,
) -> Option<DenialEvents> {
    let OperationsArgs {
        rotation_restarts,
        rotation_debounce,
        rotation_min_interval,
        rotation_max_concurrent,
        uninjected_pods,
        evict_uninjected,
        eviction_interval,
        denial_events,
    } = plan.operations.clone();
    if rotation_restarts {
        let settings = RotationSettings {
            debounce: rotation_debounce,
            min_interval: rotation_min_interval,
            max_concurrent: usize::from(rotation_max_concurrent),
        };
        background.spawn(rotation::run(
            Restarts::new(events.clone(), settings),
            leading.clone(),
            background.stopped(),
        ));
    }
    if uninjected_pods || evict_uninjected {
        let settings = UninjectedSettings {
            never_injected: plan.settings.ignored_namespaces.iter().cloned().collect(),
            eviction: evict_uninjected.then(|| Eviction {
                interval: eviction_interval,
                client: eviction_client.clone(),
            }),
        };
        let interval = eviction_interval.clamp(UNINJECTED_INTERVAL_MIN, UNINJECTED_INTERVAL);
        background.spawn(uninjected::run(
            UninjectedPods::new(events.clone(), settings),
            interval,
            leading,
            background.stopped(),
        ));
    }
    denial_events.then(|| {
        let (queue, writer) = DenialEvents::start(events.clone());
        background.spawn(writer);
        queue
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, CliError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| CliError::Io {
            what: format!("listening on {addr}"),
            source,
        })
}

/// Clients of the API server: one that retries what the API server asks to be retried (429,
/// 503, 504), and one that does not, for the Eviction API, whose 429 is an answer.
struct Clients {
    main: kube::Client,
    no_retry: kube::Client,
}

async fn kube_clients(kubeconfig: Option<PathBuf>) -> Result<Clients, CliError> {
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
    let client = |config: kube::Config| {
        kube::Client::try_from(config).map_err(|e| CliError::Kube(e.to_string()))
    };
    let mut no_retry = config.clone();
    no_retry.default_retry = false;
    Ok(Clients {
        main: client(config)?,
        no_retry: client(no_retry)?,
    })
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
