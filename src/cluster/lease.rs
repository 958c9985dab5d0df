//! One holder at a time, through a `coordination.k8s.io/v1` Lease in kvinject's namespace.
//!
//! Optimistic concurrency does the locking: every take-over or renewal is a write conditioned on
//! the resourceVersion read, so two replicas can never both believe they hold the Lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, Error};

/// How long kvinject's Leases are held without renewal: a replica that dies is replaced
/// within this.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);

/// A Lease this process may hold.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    holder: String,
    duration: Duration,
}

impl LeaseLock {
    /// The Lease `name` in `namespace`, held as `holder` for `duration` after each renewal.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        holder: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            holder: holder.to_owned(),
            duration,
        }
    }

    /// How long a holder keeps the Lease without renewing it.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Takes the Lease if it is free or expired, renews it if held; `Ok(true)` while held.
    /// A conflict (another replica wrote first) is `Ok(false)`, not an error.
    pub async fn acquire_or_renew(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let held_by_us = spec.holder_identity.as_deref() == Some(self.holder.as_str());
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(MicroTime(renewed)), Some(seconds)) => {
                now.duration_since(*renewed).as_secs() >= i64::from(seconds)
            }
            _ => true,
        };
        if !held_by_us && !expired {
            return Ok(false);
        }
        let (acquired, transitions) = if held_by_us {
            (
                spec.acquire_time.map_or(now, |t| t.0),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (now, spec.lease_transitions.unwrap_or(0) + 1)
        };
        lease.spec = Some(self.spec(acquired, now, transitions));
        // `replace` sends the resourceVersion read above: a write in between makes it a 409.
        conflict_is_false(
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await,
        )
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

fn conflict_is_false(result: Result<Lease, Error>) -> Result<bool, Error> {
    match result {
        Ok(_) => Ok(true),
        Err(Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}
