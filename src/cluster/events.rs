//! Kubernetes Events kvinject writes (`core/v1`, so `kubectl describe` and `kubectl get events`
//! show them), each at most once.
//!
//! An Event's name is derived from what it is about and a key the caller chooses (the pod's
//! uid, the versions that changed, a denial's message and time window), so a second replica or
//! a new Lease holder writing the same Event gets `409 AlreadyExists` instead of a duplicate.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use sha2::{Digest, Sha256};

use crate::cluster::Cluster;
use crate::cluster::workloads::Workload;
use crate::core::spc::hex;
use crate::webhook::metrics::SharedMetrics;

/// The component Events name as their source.
pub const COMPONENT: &str = "kvinject";
/// Longest Event message written; longer ones are cut at a character boundary.
pub const MAX_MESSAGE: usize = 1024;

/// Why an Event is written: its `reason`, and its `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A workload restarted because objects its env vars read were rotated (Normal).
    SecretsRotated,
    /// Objects were rotated for a pod whose owner cannot be restarted (Normal).
    RotationNotRestarted,
    /// A labelled pod runs without injection (Warning).
    NotInjected,
    /// A pod without injection was evicted so its owner recreates it (Normal).
    EvictedNotInjected,
    /// `/mutate` denied a pod of this workload (Warning).
    InjectionDenied,
}

impl Reason {
    /// Every reason, for metrics that start at zero.
    pub const ALL: [Self; 5] = [
        Self::SecretsRotated,
        Self::RotationNotRestarted,
        Self::NotInjected,
        Self::EvictedNotInjected,
        Self::InjectionDenied,
    ];

    /// The Event's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecretsRotated => "SecretsRotated",
            Self::RotationNotRestarted => "RotationNotRestarted",
            Self::NotInjected => "NotInjected",
            Self::EvictedNotInjected => "EvictedNotInjected",
            Self::InjectionDenied => "InjectionDenied",
        }
    }

    fn event_type(self) -> &'static str {
        match self {
            Self::NotInjected | Self::InjectionDenied => "Warning",
            _ => "Normal",
        }
    }
}

/// What an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Involved {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// uid.
    pub uid: String,
}

impl Involved {
    /// A pod.
    pub fn pod(namespace: &str, name: &str, uid: &str) -> Self {
        Self {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }
}

impl From<&Workload> for Involved {
    fn from(workload: &Workload) -> Self {
        Self {
            api_version: workload.kind.api_version().into(),
            kind: workload.kind.as_str().into(),
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
            uid: workload.uid.clone(),
        }
    }
}

/// Writes Events as one replica (`reporting_instance`), counting them.
#[derive(Clone)]
pub struct EventWriter {
    cluster: Cluster,
    instance: String,
    metrics: SharedMetrics,
}

impl EventWriter {
    /// A writer for `cluster`, as the replica `instance`.
    pub fn new(cluster: Cluster, instance: &str, metrics: SharedMetrics) -> Self {
        Self {
            cluster,
            instance: instance.to_owned(),
            metrics,
        }
    }

    /// The cluster it writes to.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The metrics it counts into.
    pub fn metrics(&self) -> &SharedMetrics {
        &self.metrics
    }

    /// Writes the Event `reason` about `involved` unless one with the same `key` exists;
    /// `Ok(true)` when this call wrote it.
    pub async fn write(
        &self,
        involved: &Involved,
        reason: Reason,
        message: &str,
        key: &str,
    ) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(event_name(involved, reason, key)),
                namespace: Some(involved.namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some(involved.api_version.clone()),
                kind: Some(involved.kind.clone()),
                namespace: Some(involved.namespace.clone()),
                name: Some(involved.name.clone()),
                uid: Some(involved.uid.clone()),
                ..ObjectReference::default()
            },
            reason: Some(reason.as_str().into()),
            message: Some(cut(message, MAX_MESSAGE).to_owned()),
            type_: Some(reason.event_type().into()),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: None,
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            action: Some(reason.as_str().into()),
            reporting_component: Some(COMPONENT.into()),
            // The API server refuses a reportingInstance over 128 characters.
            reporting_instance: Some(cut(&self.instance, 128).to_owned()),
            ..Event::default()
        };
        let api = Api::<Event>::namespaced(self.cluster.client().clone(), &involved.namespace);
        let result = match api.create(&PostParams::default(), &event).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
        match &result {
            Ok(true) => self.metrics.event(reason.as_str(), true),
            Ok(false) => {}
            Err(error) => {
                self.metrics.event(reason.as_str(), false);
                tracing::warn!(reason = reason.as_str(), namespace = %involved.namespace,
                    name = %involved.name, %error, "could not write Event");
            }
        }
        result
    }
}

/// `<involved name>.<16 hex digits of SHA-256 over uid, reason and key>`: a valid object name
/// whatever the involved object's name, and the same for the same Event.
fn event_name(involved: &Involved, reason: Reason, key: &str) -> String {
    let hash = hex(&digest(&[&involved.uid, reason.as_str(), key])[..8]);
    let base = cut(&involved.name, 200).trim_end_matches(['.', '-']);
    format!("{base}.{hash}")
}

/// SHA-256 over `parts`, each followed by a NUL byte, so that different lists of parts never
/// hash the same text.
pub fn digest(parts: &[&str]) -> [u8; 32] {
    let mut digest = Sha256::new();
    for part in parts {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    digest.finalize().into()
}

/// `text` cut to at most `max` bytes at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_stable_and_differ_by_key() {
        let pod = Involved::pod("shop", &format!("{}.-", "a".repeat(250)), "u-1");
        let name = event_name(&pod, Reason::NotInjected, "k");
        assert!(name.len() <= 253, "{}", name.len());
        assert!(!name.contains(".."));
        assert_eq!(name, event_name(&pod, Reason::NotInjected, "k"));
        assert_ne!(name, event_name(&pod, Reason::NotInjected, "other"));
        assert_ne!(name, event_name(&pod, Reason::EvictedNotInjected, "k"));
    }

    #[test]
    fn messages_are_cut_at_a_character_boundary() {
        let text = "é".repeat(600);
        let short = cut(&text, MAX_MESSAGE);
        assert!(short.len() <= MAX_MESSAGE);
        assert!(short.chars().all(|c| c == 'é'));
    }
}
