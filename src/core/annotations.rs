//! Every label and annotation key kvinject reads or writes, in one place.
//!
//! This module owns names only. Reading the values lives in `request` and `reference`, their meaning in `plan`.

/// Prefix shared by every kvinject key.
pub const PREFIX: &str = "kvinject.io/";

/// Namespace label that the MutatingWebhookConfiguration's namespaceSelector matches.
pub const NAMESPACE_INJECTION_LABEL: &str = "kvinject.io/injection";
/// Value of [`NAMESPACE_INJECTION_LABEL`] that opts a namespace in.
pub const NAMESPACE_INJECTION_ENABLED: &str = "enabled";

/// Pod label (objectSelector) and pod annotation (`"false"` = explicit skip).
pub const INJECT: &str = "kvinject.io/inject";
/// Key Vault name, on the pod or on its Namespace.
pub const VAULT: &str = "kvinject.io/vault";
/// Azure AD tenant GUID, on the pod or on its Namespace.
pub const TENANT_ID: &str = "kvinject.io/tenant-id";
/// Prefix of `env.<VAR>` annotations.
pub const ENV_PREFIX: &str = "kvinject.io/env.";
/// Prefix of `file.<NAME>` annotations.
pub const FILE_PREFIX: &str = "kvinject.io/file.";
/// Prefix of `tls-secret.<SECRET>` annotations: a `kubernetes.io/tls` Secret synced from a
/// certificate.
pub const TLS_SECRET_PREFIX: &str = "kvinject.io/tls-secret.";
/// Directory the CSI volume is mounted at.
pub const MOUNT_PATH: &str = "kvinject.io/mount-path";
/// Comma list of the containers (and named init containers) to wire.
pub const CONTAINERS: &str = "kvinject.io/containers";
/// Workload identity client ID requested by the pod.
pub const CLIENT_ID: &str = "kvinject.io/client-id";
/// Reference mode: an existing SecretProviderClass in the pod's namespace.
pub const SECRET_PROVIDER_CLASS: &str = "kvinject.io/secret-provider-class";
/// Marker kvinject writes on every pod it mutated: the SPCs the pod uses, comma-separated.
pub const INJECTED: &str = "kvinject.io/injected";
/// Pod template annotation (`"true"`): restart the workload when an object its env vars read is
/// rotated (with `serve --rotation-restarts`).
pub const RESTART_ON_ROTATION: &str = "kvinject.io/restart-on-rotation";
/// Pod template annotation kvinject sets on a workload to restart it (as `kubectl rollout
/// restart` sets its own): the time of the restart, RFC 3339.
pub const RESTARTED_AT: &str = "kvinject.io/restarted-at";
/// Workload annotation kvinject sets with a restart: digests of the (SPC, object, version) it was
/// for, so that any Lease holder tells a late report of the same version from a new rotation.
pub const ROTATED: &str = "kvinject.io/rotated";

/// Every exact (non-prefix) kvinject key a pod may carry; anything else under [`PREFIX`] is unknown.
pub const KNOWN_POD_KEYS: [&str; 10] = [
    INJECT,
    VAULT,
    TENANT_ID,
    MOUNT_PATH,
    CONTAINERS,
    CLIENT_ID,
    SECRET_PROVIDER_CLASS,
    INJECTED,
    RESTART_ON_ROTATION,
    RESTARTED_AT,
];

/// Default directory of the CSI volume in each target container.
pub const DEFAULT_MOUNT_PATH: &str = "/mnt/secrets-store";
/// Name of the CSI volume kvinject adds for the pod's vault; the volume of another vault named
/// by `?vault=` is this name, `-` and that vault.
pub const VOLUME_NAME: &str = "kvinject-secrets";
/// File a `tls-secret.<SECRET>` object is mounted as, when no `file.` annotation names it:
/// `<SECRET>` and this suffix.
pub const TLS_FILE_SUFFIX: &str = ".pem";
/// Secret type of a synced TLS Secret.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// The SPC names of a `kvinject.io/injected` marker.
pub fn marker_spcs(marker: &str) -> impl Iterator<Item = &str> {
    marker
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
}
/// Prefix of generated SecretProviderClass (and synced Secret) names.
pub const GENERATED_NAME_PREFIX: &str = "kvinject-";

/// Label kvinject puts on every SecretProviderClass it generates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on generated SPCs.
pub const MANAGED_BY_VALUE: &str = "kvinject";

/// Whether a [`MANAGED_BY_LABEL`] value says the object is kvinject's.
pub fn is_managed_by_kvinject(label: Option<&str>) -> bool {
    label == Some(MANAGED_BY_VALUE)
}

/// Namespace annotation (set by cluster admins): comma list of the Key Vaults its pods may use.
pub const ALLOWED_VAULTS: &str = "kvinject.io/allowed-vaults";

/// A comma list of names, trimmed, empty entries dropped.
pub fn comma_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// AAD Pod Identity: pod label naming an AzureIdentityBinding selector.
pub const AAD_POD_IDENTITY_LABEL: &str = "aadpodidbinding";
/// AzureIdentityBinding annotation: comma list of the ServiceAccounts whose pods may claim it.
pub const ALLOWED_SERVICE_ACCOUNTS: &str = "kvinject.io/allowed-service-accounts";
/// Annotation on generated SPCs: when an admission last needed it (RFC 3339). The collector
/// never deletes an SPC used within the grace period.
pub const LAST_USED: &str = "kvinject.io/last-used";
/// Azure Workload Identity: ServiceAccount annotation carrying the client ID.
pub const WORKLOAD_IDENTITY_CLIENT_ID: &str = "azure.workload.identity/client-id";
/// Static (mirror) pods carry this annotation; the kubelet owns them and they are never mutated.
pub const MIRROR_POD: &str = "kubernetes.io/config.mirror";

/// CSI driver name of the Secrets Store CSI driver.
pub const CSI_DRIVER: &str = "secrets-store.csi.k8s.io";
/// API version of SecretProviderClass.
pub const SPC_API_VERSION: &str = "secrets-store.csi.x-k8s.io/v1";
/// API group of AzureIdentityBinding.
pub const AAD_POD_IDENTITY_GROUP: &str = "aadpodidentity.k8s.io";

/// Longest name part (after the `/`) of a Kubernetes annotation key.
pub const MAX_KEY_NAME_LEN: usize = 63;
