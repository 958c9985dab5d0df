//! The pod's Azure identity, checked as a chain (`docs/contract.md` section 5).
//!
//! Exactly one identity: AAD Pod Identity through a bound selector, or Workload Identity through
//! the pod's own ServiceAccount. A pod can never claim an identity its namespace or ServiceAccount
//! does not grant it.

use std::fmt;

use crate::core::annotations::{
    AAD_POD_IDENTITY_LABEL, ALLOWED_SERVICE_ACCOUNTS, CLIENT_ID, WORKLOAD_IDENTITY_CLIENT_ID,
};
use crate::core::denial::{Denial, DenialReason};
use crate::core::facts::{ClusterFacts, IdentityBindingFacts, SpcIdentity};
use crate::core::pod::PodView;

/// The identity a pod authenticates to Key Vault with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodIdentity {
    /// AAD Pod Identity: the pod's `aadpodidbinding` label matches an AzureIdentityBinding.
    AadPodIdentity {
        /// The label value (the binding's selector).
        selector: String,
    },
    /// Azure Workload Identity through the pod's ServiceAccount.
    WorkloadIdentity {
        /// The application (client) ID.
        client_id: String,
        /// The ServiceAccount that carries it.
        service_account: String,
    },
}

impl fmt::Display for PodIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AadPodIdentity { selector } => {
                write!(f, "AAD Pod Identity (aadpodidbinding: {selector})")
            }
            Self::WorkloadIdentity {
                client_id,
                service_account,
            } => write!(
                f,
                "workload identity {client_id} (ServiceAccount {service_account})"
            ),
        }
    }
}

/// Where AAD Pod Identity finds the AzureIdentityBinding a pod's `aadpodidbinding` label claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindingScope {
    /// In every namespace: AAD Pod Identity's default.
    #[default]
    EveryNamespace,
    /// Only in the pod's own namespace: AAD Pod Identity run with `forceNamespaced`.
    PodNamespace,
}

impl BindingScope {
    /// The namespace to look in for a pod of `pod_namespace` (`None`: every one).
    fn namespace(self, pod_namespace: &str) -> Option<&str> {
        match self {
            Self::EveryNamespace => None,
            Self::PodNamespace => Some(pod_namespace),
        }
    }

    fn describe(self, pod_namespace: &str) -> String {
        match self {
            Self::EveryNamespace => "in any namespace".to_owned(),
            Self::PodNamespace => format!("in namespace {pod_namespace}"),
        }
    }
}

/// Warning returned with every pod that uses AAD Pod Identity (without the `kvinject: ` prefix).
pub const AAD_POD_IDENTITY_DEPRECATED: &str = "AAD Pod Identity (label aadpodidbinding) is deprecated since 2022-10; \
migrate to Azure Workload Identity: annotate the pod's ServiceAccount with azure.workload.identity/client-id \
and remove the aadpodidbinding label";

/// Resolves the pod's identity; `requested_client_id` is its `kvinject.io/client-id` annotation.
pub fn resolve(
    pod: &PodView<'_>,
    namespace: &str,
    requested_client_id: Option<&str>,
    facts: &dyn ClusterFacts,
    scope: BindingScope,
) -> Result<PodIdentity, Denial> {
    let selector = pod.label(AAD_POD_IDENTITY_LABEL).filter(|s| !s.is_empty());
    let service_account = pod.service_account_name();
    let account = facts.service_account(namespace, service_account);
    let account_known = account.is_some();
    let workload_client_id = workload_client_id(
        requested_client_id,
        account.and_then(|sa| sa.client_id),
        account_known,
        service_account,
        namespace,
    )?;
    match (selector, workload_client_id) {
        (Some(selector), Some(client_id)) => Err(identity_denial(format!(
            "pod has two Azure identities: label {AAD_POD_IDENTITY_LABEL}: {selector} (AAD Pod Identity) and \
             client ID {client_id} from ServiceAccount {service_account} (workload identity); keep exactly one: \
             remove the {AAD_POD_IDENTITY_LABEL} label, or run the pod as a ServiceAccount without \
             {WORKLOAD_IDENTITY_CLIENT_ID}"
        ))),
        (Some(selector), None) => {
            aad_pod_identity(selector, service_account, namespace, facts, scope)
        }
        (None, Some(client_id)) => Ok(PodIdentity::WorkloadIdentity {
            client_id,
            service_account: service_account.to_owned(),
        }),
        (None, None) if !account_known => Err(Denial::missing(format!(
            "pod asks for Key Vault objects but has no Azure identity: its ServiceAccount {service_account} \
             does not exist in namespace {namespace}; create it annotated with {WORKLOAD_IDENTITY_CLIENT_ID}: \
             <client-id> (workload identity), or label the pod {AAD_POD_IDENTITY_LABEL}: <selector> with a \
             matching AzureIdentityBinding (AAD Pod Identity, deprecated)"
        ))),
        (None, None) => Err(identity_denial(format!(
            "pod asks for Key Vault objects but has no Azure identity: annotate its ServiceAccount \
             {service_account} in namespace {namespace} with {WORKLOAD_IDENTITY_CLIENT_ID}: <client-id> \
             (workload identity), or label the pod {AAD_POD_IDENTITY_LABEL}: <selector> with a matching \
             AzureIdentityBinding (AAD Pod Identity, deprecated)"
        ))),
    }
}

/// The workload identity client ID of the pod: its ServiceAccount's, which the pod's own
/// `kvinject.io/client-id` may only repeat.
fn workload_client_id(
    requested: Option<&str>,
    account_client_id: Option<String>,
    account_known: bool,
    service_account: &str,
    namespace: &str,
) -> Result<Option<String>, Denial> {
    let account_client_id = account_client_id.filter(|id| !id.is_empty());
    if let Some(id) = &account_client_id
        && !is_guid(id)
    {
        return Err(identity_denial(format!(
            "ServiceAccount {service_account} in namespace {namespace} has annotation \
                 {WORKLOAD_IDENTITY_CLIENT_ID}: {id:?}, which is not a client ID (GUID); fix the ServiceAccount's annotation"
        )));
    }
    match (requested, account_client_id) {
        (Some(requested), _) if !is_guid(requested) => Err(Denial::annotation(
            CLIENT_ID,
            format!(
                "{requested:?} is not a client ID (GUID such as 00000000-0000-0000-0000-000000000000)"
            ),
        )),
        (Some(requested), None) if !account_known => Err(Denial::missing(format!(
            "annotation {CLIENT_ID}: names client ID {requested}, but the pod's ServiceAccount \
             {service_account} does not exist in namespace {namespace}; create it with \
             {WORKLOAD_IDENTITY_CLIENT_ID}: {requested}"
        ))),
        (Some(requested), None) => Err(Denial::annotation(
            CLIENT_ID,
            format!(
                "names client ID {requested}, but the pod's ServiceAccount {service_account} in namespace \
                 {namespace} carries no {WORKLOAD_IDENTITY_CLIENT_ID}; a pod cannot name a client ID its \
                 ServiceAccount does not carry: annotate the ServiceAccount, or run the pod as one that has it"
            ),
        )),
        (Some(requested), Some(account)) if !requested.eq_ignore_ascii_case(&account) => {
            Err(Denial::annotation(
                CLIENT_ID,
                format!(
                    "names client ID {requested}, but the pod's ServiceAccount {service_account} carries {account}; \
                     a pod cannot name a client ID its ServiceAccount does not carry: remove the annotation \
                     or set it to {account}"
                ),
            ))
        }
        (_, account) => Ok(account),
    }
}

/// AAD Pod Identity: a binding with the pod's selector must exist where AAD Pod Identity looks
/// (`scope`), and the policy of every such binding must let the pod's ServiceAccount claim it.
fn aad_pod_identity(
    selector: &str,
    service_account: &str,
    namespace: &str,
    facts: &dyn ClusterFacts,
    scope: BindingScope,
) -> Result<PodIdentity, Denial> {
    let bindings = facts.identity_bindings(scope.namespace(namespace), selector);
    if bindings.is_empty() {
        let fix = if facts.identity_bindings_available() {
            format!(
                "create an AzureIdentityBinding with spec.selector: {selector} in namespace {namespace}, or fix the label"
            )
        } else {
            "AAD Pod Identity is not installed in this cluster (no AzureIdentityBinding API): use workload identity".to_owned()
        };
        return Err(Denial::missing(format!(
            "label {AAD_POD_IDENTITY_LABEL}: {selector} matches no AzureIdentityBinding {}; {fix}",
            scope.describe(namespace)
        )));
    }
    check_binding_policy(&bindings, selector, namespace, service_account)?;
    Ok(PodIdentity::AadPodIdentity {
        selector: selector.to_owned(),
    })
}

/// The identity policy for every pod that carries `aadpodidbinding`, injected or not: each
/// binding the label claims (where AAD Pod Identity looks, `scope`) that lists
/// `kvinject.io/allowed-service-accounts` must list the pod's ServiceAccount. A label alone must
/// not be enough to take an identity, from any namespace.
pub fn check_pod_identity_policy(
    pod: &PodView<'_>,
    namespace: &str,
    facts: &dyn ClusterFacts,
    scope: BindingScope,
) -> Result<(), Denial> {
    let Some(selector) = pod.label(AAD_POD_IDENTITY_LABEL).filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let bindings = facts.identity_bindings(scope.namespace(namespace), selector);
    check_binding_policy(&bindings, selector, namespace, pod.service_account_name())
}

/// Whether an `allowed-service-accounts` entry names ServiceAccount `service_account` of
/// `pod_namespace`: `namespace/name`, or a bare `name` of the binding's own namespace.
fn entry_allows(
    entry: &str,
    binding: &IdentityBindingFacts,
    pod_namespace: &str,
    service_account: &str,
) -> bool {
    match entry.split_once('/') {
        Some((namespace, name)) => namespace == pod_namespace && name == service_account,
        None => binding.namespace == pod_namespace && entry == service_account,
    }
}

fn check_binding_policy(
    bindings: &[IdentityBindingFacts],
    selector: &str,
    pod_namespace: &str,
    service_account: &str,
) -> Result<(), Denial> {
    for binding in bindings {
        let Some(allowed) = &binding.allowed_service_accounts else {
            continue;
        };
        if !allowed
            .iter()
            .any(|entry| entry_allows(entry, binding, pod_namespace, service_account))
        {
            return Err(identity_denial(format!(
                "label {AAD_POD_IDENTITY_LABEL}: {selector} claims AzureIdentityBinding {}/{}, whose \
                 {ALLOWED_SERVICE_ACCOUNTS} is [{}], but the pod runs as ServiceAccount \
                 {pod_namespace}/{service_account}; run the pod as one of those ServiceAccounts, or ask the \
                 binding's owner to add {pod_namespace}/{service_account}",
                binding.namespace,
                binding.name,
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

fn identity_denial(what: impl fmt::Display) -> Denial {
    Denial::new(what).because(DenialReason::Identity)
}

/// Whether an existing SPC's identity is the pod's own.
pub fn matches_spc(pod: &PodIdentity, spc: &SpcIdentity) -> bool {
    match (pod, spc) {
        (PodIdentity::AadPodIdentity { .. }, SpcIdentity::PodIdentity) => true,
        (PodIdentity::WorkloadIdentity { client_id, .. }, SpcIdentity::ClientId(spc_id)) => {
            client_id.eq_ignore_ascii_case(spc_id)
        }
        _ => false,
    }
}

/// Whether `s` is a GUID (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex).
pub fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guid_is_five_groups_of_hex_digits_of_set_lengths() {
        for guid in [
            "00000000-0000-0000-0000-000000000000",
            "3fa85f64-5717-4562-B3FC-2c963f66afa6",
        ] {
            assert!(is_guid(guid), "{guid}");
        }
        for not_guid in [
            "",
            "-",
            "3fa85f64-5717-4562-b3fc",
            "3fa85f64-5717-4562-b3fc-2c963f66afa6-",
            "3fa85f64-5717-4562-b3fc-2c963f66afa6-0000",
            "3fa85f645-717-4562-b3fc-2c963f66afa6",
            "3fa85f64-5717-4562-b3fc-2c963f66afaz",
            "3fa85f64-5717-4562-b3fc-2c963f66afa６",
            "{3fa85f64-5717-4562-b3fc-2c963f66afa6}",
            "3fa85f6457174562b3fc2c963f66afa6",
        ] {
            assert!(!is_guid(not_guid), "{not_guid}");
        }
    }
}
