//! A pod's workload: its owner chain walked up to the object people manage (a Deployment through
//! its ReplicaSet, a CronJob through its Job), a restart the way `kubectl rollout restart` does
//! one, and whether a rollout is still going.
//!
//! Every level is read from the API server and must carry the uid its child's ownerReference
//! names: a pod's ownerReferences are whatever its creator wrote, so a reference to an object
//! that does not exist, or to another object of the same name, leads nowhere.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::core::annotations::{RESTARTED_AT, ROTATED};

/// The kinds on a pod's owner chain kvinject follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 ReplicaSet (a Deployment's, or on its own).
    ReplicaSet,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// batch/v1 Job (a CronJob's, or on its own).
    Job,
    /// batch/v1 CronJob.
    CronJob,
}

impl WorkloadKind {
    /// The kind of an ownerReference (`apiVersion`, `kind`), when kvinject follows it.
    pub fn of(api_version: &str, kind: &str) -> Option<Self> {
        match (api_version, kind) {
            ("apps/v1", "Deployment") => Some(Self::Deployment),
            ("apps/v1", "ReplicaSet") => Some(Self::ReplicaSet),
            ("apps/v1", "StatefulSet") => Some(Self::StatefulSet),
            ("apps/v1", "DaemonSet") => Some(Self::DaemonSet),
            ("batch/v1", "Job") => Some(Self::Job),
            ("batch/v1", "CronJob") => Some(Self::CronJob),
            _ => None,
        }
    }

    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::ReplicaSet => "ReplicaSet",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::Job => "Job",
            Self::CronJob => "CronJob",
        }
    }

    /// Its API version.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::Job | Self::CronJob => "batch/v1",
            _ => "apps/v1",
        }
    }

    /// Whether a template annotation rolls its pods (`kubectl rollout restart` kinds).
    pub fn restartable(self) -> bool {
        matches!(self, Self::Deployment | Self::StatefulSet | Self::DaemonSet)
    }

    fn resource(self) -> ApiResource {
        let (group, version) = self.api_version().split_once('/').unwrap_or(("", "v1"));
        let plural = match self {
            Self::Deployment => "deployments",
            Self::ReplicaSet => "replicasets",
            Self::StatefulSet => "statefulsets",
            Self::DaemonSet => "daemonsets",
            Self::Job => "jobs",
            Self::CronJob => "cronjobs",
        };
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, self.as_str()),
            plural,
        )
    }
}

/// An object of a followed kind in a namespace, as an ownerReference names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    /// Its kind.
    pub kind: WorkloadKind,
    /// Its namespace (an owner is always in its child's).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The uid the reference names.
    pub uid: String,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.name)
    }
}

/// The controller among an object's owner references (the one with `controller: true`), when
/// it names a followed kind.
pub fn controller_among(namespace: &str, owners: &[OwnerReference]) -> Option<Workload> {
    let owner = owners.iter().find(|owner| owner.controller == Some(true))?;
    Some(Workload {
        kind: WorkloadKind::of(&owner.api_version, &owner.kind)?,
        namespace: namespace.to_owned(),
        name: owner.name.clone(),
        uid: owner.uid.clone(),
    })
}

/// [`controller_among`] the `ownerReferences` of object metadata read as JSON (a review's pruned
/// object); malformed references name no controller.
pub fn controller_of(namespace: &str, metadata: &Value) -> Option<Workload> {
    let owners: Vec<OwnerReference> =
        serde_json::from_value(metadata.get("ownerReferences")?.clone()).ok()?;
    controller_among(namespace, &owners)
}

/// Why a pod's workload could not be told.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// A level is gone, or is another object than its child's reference names.
    #[error("{0} does not exist (or is not the one its pods name)")]
    Missing(Workload),
    /// The API server did not answer.
    #[error("reading {0}: {1}")]
    Api(Workload, kube::Error),
}

impl Cluster {
    fn workload_api(&self, workload: &Workload) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client().clone(),
            &workload.namespace,
            &workload.kind.resource(),
        )
    }

    /// Reads `workload`, checking it is the object its reference names.
    pub async fn read_workload(&self, workload: &Workload) -> Result<DynamicObject, OwnerError> {
        match self.workload_api(workload).get_opt(&workload.name).await {
            Ok(Some(object)) if object.uid().as_deref() == Some(workload.uid.as_str()) => {
                Ok(object)
            }
            Ok(_) => Err(OwnerError::Missing(workload.clone())),
            Err(error) => Err(OwnerError::Api(workload.clone(), error)),
        }
    }

    /// The top of the owner chain that starts at `controller` (a pod's controller reference): a
    /// ReplicaSet's Deployment, a Job's CronJob, else `controller` itself. Each level is read and
    /// its uid checked.
    pub async fn top_workload(&self, controller: Workload) -> Result<Workload, OwnerError> {
        let object = self.read_workload(&controller).await?;
        let parent = match controller.kind {
            WorkloadKind::ReplicaSet | WorkloadKind::Job => controller_among(
                &controller.namespace,
                object
                    .metadata
                    .owner_references
                    .as_deref()
                    .unwrap_or_default(),
            ),
            _ => None,
        };
        match parent {
            Some(parent)
                if matches!(
                    (controller.kind, parent.kind),
                    (WorkloadKind::ReplicaSet, WorkloadKind::Deployment)
                        | (WorkloadKind::Job, WorkloadKind::CronJob)
                ) =>
            {
                self.read_workload(&parent).await?;
                Ok(parent)
            }
            _ => Ok(controller),
        }
    }

    /// Restarts a Deployment, StatefulSet or DaemonSet as `kubectl rollout restart` does: its pod
    /// template gets the annotation [`RESTARTED_AT`], `at`. The patch names the uid read, so it
    /// never lands on another object of the same name.
    /// `rotated` goes into the workload's own annotation [`ROTATED`]: what the restart was for.
    pub async fn restart_workload(
        &self,
        workload: &Workload,
        at: Timestamp,
        rotated: &str,
    ) -> Result<(), kube::Error> {
        let patch = json!({
            "metadata": {"uid": workload.uid, "annotations": {ROTATED: rotated}},
            "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at.to_string()}}}}
        });
        self.workload_api(workload)
            .patch(
                &workload.name,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
            .map(drop)
    }
}

/// When an object's pod template was last restarted through [`RESTARTED_AT`].
pub fn restarted_at(object: &DynamicObject) -> Option<Timestamp> {
    object.data["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
        .as_str()?
        .parse()
        .ok()
}

/// Whether a workload's rollout is still going, read from its status as `kubectl rollout status`
/// reads it: the controller has not seen the latest spec, or not every pod is updated and
/// available. A Deployment past its progress deadline is no longer rolling.
pub fn rolling(kind: WorkloadKind, object: &DynamicObject) -> bool {
    let number = |value: &Value| value.as_i64().unwrap_or(0);
    let spec = &object.data["spec"];
    let status = &object.data["status"];
    let generation = object.metadata.generation.unwrap_or(0);
    if number(&status["observedGeneration"]) < generation {
        return true;
    }
    let replicas = spec["replicas"].as_i64().unwrap_or(1);
    match kind {
        WorkloadKind::Deployment => {
            let stalled = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
            if stalled {
                return false;
            }
            let updated = number(&status["updatedReplicas"]);
            updated < replicas
                || number(&status["replicas"]) > updated
                || number(&status["availableReplicas"]) < updated
        }
        WorkloadKind::StatefulSet => {
            let revisions_differ = match (
                status["updateRevision"].as_str(),
                status["currentRevision"].as_str(),
            ) {
                (Some(update), Some(current)) => update != current,
                _ => false,
            };
            revisions_differ || number(&status["updatedReplicas"]) < replicas
        }
        WorkloadKind::DaemonSet => {
            let desired = number(&status["desiredNumberScheduled"]);
            number(&status["updatedNumberScheduled"]) < desired
                || number(&status["numberAvailable"]) < desired
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_controller_reference_names_a_followed_kind_or_nothing() {
        let metadata = json!({"ownerReferences": [
            {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "1"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "2", "controller": true}]});
        let owner = controller_of("shop", &metadata).unwrap();
        assert_eq!(owner.to_string(), "ReplicaSet/web-1");
        assert_eq!(owner.uid, "2");
        let custom = json!({"ownerReferences": [
            {"apiVersion": "example.com/v1", "kind": "Rollout", "name": "r", "uid": "3", "controller": true}]});
        assert_eq!(controller_of("shop", &custom), None);
        assert_eq!(controller_of("shop", &json!({})), None);
    }

    #[test]
    fn a_rollout_is_going_until_the_status_says_every_pod_is_updated_and_available() {
        let deployment = |generation: i64, status: Value| {
            object(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "generation": generation},
                "spec": {"replicas": 2}, "status": status}))
        };
        let done = json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        assert!(!rolling(
            WorkloadKind::Deployment,
            &deployment(3, done.clone())
        ));
        assert!(rolling(WorkloadKind::Deployment, &deployment(4, done)));
        let surging = json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2});
        assert!(rolling(WorkloadKind::Deployment, &deployment(3, surging)));
        let set = object(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "generation": 1}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "updatedReplicas": 1, "updateRevision": "b", "currentRevision": "a"}}));
        assert!(rolling(WorkloadKind::StatefulSet, &set));
        let daemons = object(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "generation": 1}, "spec": {},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3}}));
        assert!(!rolling(WorkloadKind::DaemonSet, &daemons));
    }
}
