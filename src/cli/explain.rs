//! `kvinject explain`: what the core decides for every pod and pod template of some manifests,
//! and why, for people (text) and tools (JSON). Reads through the same adapter as `inject`, so
//! the two never disagree; prints only.

use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::CliError;
use crate::cli::args::{ExplainArgs, ExplainFormat};
use crate::core::annotations::{
    INJECT, TLS_SECRET_PREFIX, TLS_SECRET_TYPE, WORKLOAD_IDENTITY_CLIENT_ID,
};
use crate::core::identity::PodIdentity;
use crate::core::plan::{InjectionPlan, SkipReason};
use crate::core::reference::ObjectRef;
use crate::offline::inject::{Outcome, PodReport, explain};
use crate::offline::manifest;

/// `kvinject explain`: prints every pod's report; exit code 1 when any pod is denied.
pub fn run_explain(args: ExplainArgs) -> Result<ExitCode, CliError> {
    let ExplainArgs {
        filename,
        namespace,
        output,
        core,
    } = args;
    let input = manifest::read(&filename)?;
    let reports = explain(input.documents, &namespace, &core.settings());
    let text = match output {
        ExplainFormat::Text => reports.iter().map(text).collect::<Vec<_>>().join("\n"),
        ExplainFormat::Json => {
            let all: Vec<Value> = reports.iter().map(json_report).collect();
            format!("{:#}\n", Value::Array(all))
        }
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|source| CliError::Io {
            what: "writing standard output".into(),
            source,
        })?;
    let denied = reports
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Denied(_)));
    Ok(if denied {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Why a skipped pod is left alone, and what would change it.
fn skip_reason(reason: SkipReason, namespace: &str) -> String {
    match reason {
        SkipReason::NotLabelled => format!(
            "not labelled {INJECT}: \"true\", so the webhook never sees it; add the label to inject it"
        ),
        SkipReason::OptedOut => format!("annotation {INJECT}: \"false\" opts it out"),
        SkipReason::IgnoredNamespace => format!(
            "namespace {namespace} is never injected (kube-system, kube-node-lease and kvinject's own)"
        ),
        SkipReason::MirrorPod => "a static pod's mirror, owned by the kubelet".to_owned(),
        SkipReason::NothingRequested => {
            "labelled, but no annotation asks for a Key Vault object".to_owned()
        }
    }
}

fn identity_text(identity: &PodIdentity, bindings: &[String]) -> String {
    match identity {
        PodIdentity::WorkloadIdentity {
            client_id,
            service_account,
        } => format!(
            "Workload Identity: ServiceAccount {service_account} carries {WORKLOAD_IDENTITY_CLIENT_ID}: {client_id}"
        ),
        PodIdentity::AadPodIdentity { selector } => format!(
            "AAD Pod Identity (deprecated): label aadpodidbinding: {selector}, bound by AzureIdentityBinding {}",
            bindings.join(", ")
        ),
    }
}

/// `secret db-password, latest version, format pem`.
fn object_text(object: &ObjectRef) -> String {
    let mut text = format!("{} {}", object.object_type.as_str(), object.name);
    match &object.version {
        Some(version) => write!(text, ", version {version}"),
        None => write!(text, ", latest version"),
    }
    .ok();
    for (option, value) in [
        ("format", object.format.map(|f| f.as_str())),
        ("encoding", object.encoding.map(|e| e.as_str())),
        ("file mode", object.mode.as_deref()),
    ] {
        if let Some(value) = value {
            write!(text, ", {option} {value}").ok();
        }
    }
    text
}

/// Where each annotation's object lands: the file, and the env var or TLS Secret it feeds.
struct Landing {
    annotation: String,
    object: Option<ObjectRef>,
    path: Option<String>,
    env: Option<(String, String, String)>,
    tls_secret: Option<String>,
}

/// Per volume of the plan: (vault, landings); reference mode has no vault and lands env vars only.
fn landings(plan: &InjectionPlan) -> Vec<(Option<String>, Vec<Landing>)> {
    if plan.objects.is_empty() {
        let env = plan
            .env
            .iter()
            .map(|wire| Landing {
                annotation: wire.annotation.clone(),
                object: None,
                path: None,
                env: Some((wire.var.clone(), wire.secret.clone(), wire.key.clone())),
                tls_secret: None,
            })
            .collect();
        return vec![(None, env)];
    }
    plan.objects
        .iter()
        .zip(&plan.volumes)
        .map(|(objects, volume)| {
            let landed = objects
                .references
                .iter()
                .zip(&objects.files)
                .map(|((annotation, object), (_, file))| Landing {
                    annotation: annotation.clone(),
                    object: Some(object.clone()),
                    path: Some(format!(
                        "{}/{file}",
                        volume.mount_path.trim_end_matches('/')
                    )),
                    env: plan
                        .env
                        .iter()
                        .find(|wire| wire.annotation == *annotation)
                        .map(|wire| (wire.var.clone(), wire.secret.clone(), wire.key.clone())),
                    tls_secret: annotation
                        .strip_prefix(TLS_SECRET_PREFIX)
                        .map(str::to_owned),
                })
                .collect();
            (Some(objects.vault.clone()), landed)
        })
        .collect()
}

fn text(report: &PodReport) -> String {
    let PodReport {
        document,
        namespace,
        outcome,
        warnings,
        bindings,
    } = report;
    let mut out = String::new();
    let verdict = match outcome {
        Outcome::Injected(_) => "injected",
        Outcome::Skipped(_) => "not injected",
        Outcome::Denied(_) => "denied",
    };
    writeln!(out, "{document} in namespace {namespace}: {verdict}").ok();
    match outcome {
        Outcome::Skipped(reason) => {
            writeln!(out, "  why: {}", skip_reason(*reason, namespace)).ok();
        }
        Outcome::Denied(message) => {
            writeln!(out, "  why: {message}").ok();
        }
        Outcome::Injected(plan) => {
            writeln!(out, "  why: labelled {INJECT}: \"true\"").ok();
            writeln!(
                out,
                "  identity: {}",
                identity_text(&plan.identity, bindings)
            )
            .ok();
            writeln!(out, "  containers: {}", plan.containers.join(", ")).ok();
            let generated = !plan.generated_spcs.is_empty();
            for ((vault, landed), volume) in landings(plan).into_iter().zip(&plan.volumes) {
                let origin = match (&vault, generated) {
                    (Some(vault), true) => format!("generated for Key Vault {vault}"),
                    _ => "named by the pod".to_owned(),
                };
                writeln!(
                    out,
                    "  SecretProviderClass {} ({origin}), volume {} at {}",
                    volume.spc_name, volume.name, volume.mount_path
                )
                .ok();
                for landing in landed {
                    let mut lands = Vec::new();
                    if let Some(path) = landing.path {
                        lands.push(format!("file {path}"));
                    }
                    if let Some((var, secret, key)) = landing.env {
                        lands.push(format!("env {var} (Secret {secret}, key {key})"));
                    }
                    if let Some(secret) = landing.tls_secret {
                        lands.push(format!(
                            "{TLS_SECRET_TYPE} Secret {secret} (tls.key, tls.crt) while a pod mounts the volume"
                        ));
                    }
                    let object = landing.object.as_ref().map(object_text);
                    let head = match object {
                        Some(object) => format!("{}: {object}", landing.annotation),
                        None => landing.annotation.clone(),
                    };
                    writeln!(out, "    {head}\n      -> {}", lands.join("; ")).ok();
                }
            }
        }
    }
    for warning in warnings {
        writeln!(out, "  warning: {warning}").ok();
    }
    out
}

fn json_report(report: &PodReport) -> Value {
    let PodReport {
        document,
        namespace,
        outcome,
        warnings,
        bindings,
    } = report;
    let mut out = json!({
        "document": document,
        "namespace": namespace,
        "warnings": warnings,
    });
    match outcome {
        Outcome::Skipped(reason) => {
            out["outcome"] = json!("skipped");
            out["reason"] = json!(reason.as_str());
            out["why"] = json!(skip_reason(*reason, namespace));
        }
        Outcome::Denied(message) => {
            out["outcome"] = json!("denied");
            out["denial"] = json!(message);
        }
        Outcome::Injected(plan) => {
            out["outcome"] = json!("injected");
            out["identity"] = match &plan.identity {
                PodIdentity::WorkloadIdentity {
                    client_id,
                    service_account,
                } => {
                    json!({"kind": "workload-identity", "clientID": client_id, "serviceAccount": service_account})
                }
                PodIdentity::AadPodIdentity { selector } => {
                    json!({"kind": "aad-pod-identity", "selector": selector, "bindings": bindings})
                }
            };
            out["containers"] = json!(plan.containers);
            let generated = !plan.generated_spcs.is_empty();
            let volumes: Vec<Value> = landings(plan)
                .into_iter()
                .zip(&plan.volumes)
                .map(|((vault, landed), volume)| {
                    let objects: Vec<Value> = landed
                        .into_iter()
                        .map(|landing| {
                            let mut entry = json!({"annotation": landing.annotation});
                            if let Some(object) = &landing.object {
                                entry["type"] = json!(object.object_type.as_str());
                                entry["name"] = json!(object.name);
                                entry["version"] = json!(object.version);
                            }
                            entry["path"] = json!(landing.path);
                            if let Some((var, secret, key)) = landing.env {
                                entry["env"] = json!({"name": var, "secret": secret, "key": key});
                            }
                            if let Some(secret) = landing.tls_secret {
                                entry["tlsSecret"] = json!(secret);
                            }
                            entry
                        })
                        .collect();
                    json!({
                        "secretProviderClass": volume.spc_name,
                        "generated": generated,
                        "vault": vault,
                        "volume": volume.name,
                        "mountPath": volume.mount_path,
                        "objects": objects,
                    })
                })
                .collect();
            out["volumes"] = Value::Array(volumes);
        }
    }
    out
}
