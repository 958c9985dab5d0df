//! The flags of every command, as clap derives them. Every `serve` flag also reads an
//! environment variable; every flags struct is destructured field by field where it is used,
//! so a new flag cannot be forgotten.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::certs;
use crate::core::annotations;
use crate::core::identity::BindingScope;
use crate::core::plan::{PodLimits, Settings};
use crate::keyvault::{VerifierSettings, VerifyMode};
use crate::offline::manifest::Format;
use crate::webhook::listener::Limits;
use crate::webhook::memo;

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
    /// Say, for every pod and pod template, what kvinject would do and why: opted in or not,
    /// the identity, each object's vault, type, version and where it lands, the warnings, and
    /// for a denial its message and fix.
    Explain(ExplainArgs),
    /// Run the HTTPS admission webhook.
    Serve(Box<ServeArgs>),
    /// Write a CA and a serving certificate for the webhook Service.
    Certs(CertsArgs),
    /// Print a shell completion script: `source <(kvinject completions bash)`.
    Completions(CompletionsArgs),
}

/// `kvinject completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
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
    /// The only Key Vaults any pod may use (comma list; default: any). Namespaces narrow it
    /// further with the annotation kvinject.io/allowed-vaults.
    #[arg(long, env = "KVINJECT_ALLOWED_VAULTS", value_delimiter = ',')]
    pub allowed_vaults: Option<Vec<String>>,
    /// AAD Pod Identity runs with forceNamespaced: a pod's aadpodidbinding label claims only
    /// bindings of its own namespace (default: bindings of every namespace, as AAD Pod
    /// Identity matches them).
    #[arg(long, env = "KVINJECT_AAD_POD_IDENTITY_FORCE_NAMESPACED")]
    pub aad_pod_identity_force_namespaced: bool,
    /// Most Key Vault objects (env., file. and tls-secret. annotations) one pod may ask for.
    #[arg(long, env = "KVINJECT_MAX_OBJECTS_PER_POD", default_value_t = PodLimits::default().max_objects)]
    pub max_objects_per_pod: usize,
    /// Most vaults one pod may read from (each is an SPC, a volume and Key Vault requests).
    #[arg(long, env = "KVINJECT_MAX_VAULTS_PER_POD", default_value_t = PodLimits::default().max_vaults)]
    pub max_vaults_per_pod: usize,
    /// Most containers of one pod kvinject wires.
    #[arg(long, env = "KVINJECT_MAX_TARGET_CONTAINERS", default_value_t = PodLimits::default().max_target_containers)]
    pub max_target_containers: usize,
    /// Largest JSON Patch kvinject answers for one pod, in bytes.
    #[arg(long, env = "KVINJECT_MAX_PATCH_BYTES", default_value_t = PodLimits::default().max_patch_bytes)]
    pub max_patch_bytes: usize,
}

impl CoreArgs {
    /// The core's settings.
    pub fn settings(self) -> Settings {
        let Self {
            default_vault,
            default_tenant_id,
            kvinject_namespace,
            allowed_vaults,
            aad_pod_identity_force_namespaced,
            max_objects_per_pod,
            max_vaults_per_pod,
            max_target_containers,
            max_patch_bytes,
        } = self;
        let mut settings = Settings::new(default_vault, default_tenant_id, &kvinject_namespace);
        settings.allowed_vaults = allowed_vaults.map(|list| {
            list.iter()
                .flat_map(|v| annotations::comma_list(v))
                .collect()
        });
        settings.binding_scope = if aad_pod_identity_force_namespaced {
            BindingScope::PodNamespace
        } else {
            BindingScope::EveryNamespace
        };
        settings.limits = PodLimits {
            max_objects: max_objects_per_pod,
            max_vaults: max_vaults_per_pod,
            max_target_containers,
            max_patch_bytes,
        };
        settings
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
    /// The mode asked for (if any) and the verifier's settings.
    pub fn settings(self) -> (Option<VerifyMode>, VerifierSettings) {
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

/// `kvinject explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A file, a directory of .yaml/.yml/.json files, or `-` for standard input.
    #[arg(short = 'f', long = "filename")]
    pub filename: String,
    /// Namespace of documents that name none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Output format: text for people, json for tools.
    #[arg(short = 'o', long, value_enum, default_value_t = ExplainFormat::Text)]
    pub output: ExplainFormat,
    /// Core settings.
    #[command(flatten)]
    pub core: CoreArgs,
}

/// What `kvinject explain` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExplainFormat {
    /// Human-readable, one block per pod.
    Text,
    /// One JSON array, an object per pod.
    Json,
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
    /// PEM CA bundle: require every HTTPS client to present a certificate it signed (for API
    /// servers configured to present one to webhooks). Default: no client certificates.
    #[arg(long, env = "KVINJECT_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
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
    /// Generated SecretProviderClasses one namespace may hold before new ones are refused.
    #[arg(long, env = "KVINJECT_MAX_SPCS_PER_NAMESPACE", default_value_t = Limits::default().max_spcs_per_namespace)]
    pub max_spcs_per_namespace: usize,
    /// Deadline for the direct look-ups of one admission (objects too new for the caches).
    #[arg(long, env = "KVINJECT_LOOKUP_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub lookup_timeout: Duration,
    /// Pods' answers remembered while every fact they were planned on holds: a workload's pods,
    /// alike, are planned once (0: every pod planned; at most 4096).
    #[arg(long, env = "KVINJECT_PLAN_CACHE_ENTRIES", default_value_t = memo::DEFAULT_ENTRIES,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=memo::MAX_ENTRIES as u64))]
    pub plan_cache_entries: usize,
    /// Core settings.
    #[command(flatten)]
    pub core: CoreArgs,
    /// Key Vault verification (with kvinject's own identity).
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// What the Lease holder does beyond collecting, and the denial Events.
    #[command(flatten)]
    pub operations: OperationsArgs,
}

/// Flags of the features that act on workloads and pods (all off unless set; each needs the
/// RBAC the chart adds only when it is on).
#[derive(Debug, Clone, Args)]
pub struct OperationsArgs {
    /// Restart the workload of a pod annotated kvinject.io/restart-on-rotation: "true" when an
    /// object its env vars read is rotated (reads SecretProviderClassPodStatus objects).
    #[arg(long, env = "KVINJECT_ROTATION_RESTARTS", conflicts_with = "facts")]
    pub rotation_restarts: bool,
    /// How long rotations of one workload are gathered into one restart.
    #[arg(long, env = "KVINJECT_ROTATION_DEBOUNCE", default_value = "30s", value_parser = parse_duration)]
    pub rotation_debounce: Duration,
    /// Least time between two restarts of one workload.
    #[arg(long, env = "KVINJECT_ROTATION_MIN_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub rotation_min_interval: Duration,
    /// Most restarted workloads rolling at once, cluster-wide.
    #[arg(long, env = "KVINJECT_ROTATION_MAX_CONCURRENT", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub rotation_max_concurrent: u16,
    /// Count labelled pods of opted-in namespaces that run without injection
    /// (kvinject_uninjected_pods) and write a Warning Event on each.
    #[arg(long, env = "KVINJECT_UNINJECTED_PODS", conflicts_with = "facts")]
    pub uninjected_pods: bool,
    /// Also evict them (Eviction API: PodDisruptionBudgets apply), so their owners recreate them
    /// through the webhook; implies --uninjected-pods.
    #[arg(long, env = "KVINJECT_EVICT_UNINJECTED", conflicts_with = "facts")]
    pub evict_uninjected: bool,
    /// At most one eviction per this interval.
    #[arg(long, env = "KVINJECT_EVICTION_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub eviction_interval: Duration,
    /// Write a Warning Event on the top-level workload (Deployment, StatefulSet, DaemonSet,
    /// CronJob, ...) of a pod /mutate denies.
    #[arg(long, env = "KVINJECT_DENIAL_EVENTS", conflicts_with = "facts")]
    pub denial_events: bool,
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
    #[arg(long, default_value_t = certs::DEFAULT_CA_DAYS)]
    pub ca_days: i64,
    /// Serving certificate validity in days.
    #[arg(long, default_value_t = certs::DEFAULT_CERT_DAYS)]
    pub cert_days: i64,
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
