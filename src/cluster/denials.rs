//! Denials reach the workload's owner: when `/mutate` denies a pod a controller creates, the API
//! server records it only as a `FailedCreate` Event on the ReplicaSet or Job. kvinject writes one
//! Warning Event `InjectionDenied` on the top-level workload (a Deployment through its ReplicaSet,
//! a CronJob through its Job) with the denial's message, at most once per workload and message
//! per window; nothing for dry runs.
//!
//! Admission never waits for it: a denial is handed over through a bounded queue (when full, it
//! is dropped) to one task that reads the owner chain (each level's uid checked, so a forged
//! ownerReference leads nowhere) and writes the Event, at most [`PER_SECOND`] a second.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc;

use crate::cluster::events::{EventWriter, Involved, Reason, digest};
use crate::cluster::workloads::Workload;

/// One Event per workload and message per this window.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Denials waiting for their Event, at most.
const QUEUE: usize = 256;
/// Owner chains read and Events written per second, at most.
const PER_SECOND: u32 = 10;
/// Denials remembered for the window, at most; when full, the oldest are forgotten first.
const REMEMBERED: usize = 4096;

/// A denied pod's controller and the message.
#[derive(Debug, Clone)]
pub struct Denied {
    /// The pod's controller (its ownerReference with `controller: true`).
    pub controller: Workload,
    /// The denial message.
    pub message: String,
}

/// Where the webhook hands denials over; clones share the queue.
#[derive(Clone)]
pub struct DenialEvents {
    queue: mpsc::Sender<Denied>,
}

impl DenialEvents {
    /// The queue, and the task that writes its Events through `events` (run it until shutdown).
    pub fn start(events: EventWriter) -> (Self, impl Future<Output = ()>) {
        let (queue, denials) = mpsc::channel(QUEUE);
        (Self { queue }, write_events(events, denials))
    }

    /// Hands a denial over, never waiting: when the queue is full it is dropped.
    pub fn denied(&self, denied: Denied) {
        if self.queue.try_send(denied).is_err() {
            tracing::debug!("denial Event queue full; one denial not told to its workload");
        }
    }
}

async fn write_events(events: EventWriter, mut denials: mpsc::Receiver<Denied>) {
    let mut told: HashMap<[u8; 32], Instant> = HashMap::new();
    let pause = Duration::from_secs(1) / PER_SECOND;
    while let Some(denied) = denials.recv().await {
        let key = digest(&[&denied.controller.uid, &denied.message]);
        if told.get(&key).is_some_and(|at| at.elapsed() < WINDOW) {
            continue;
        }
        if told.len() >= REMEMBERED {
            told.retain(|_, at| at.elapsed() < WINDOW);
            if told.len() >= REMEMBERED {
                told.clear();
            }
        }
        told.insert(key, Instant::now());
        tell(&events, denied).await;
        tokio::time::sleep(pause).await;
    }
}

async fn tell(events: &EventWriter, denied: Denied) {
    let workload = match events.cluster().top_workload(denied.controller).await {
        Ok(workload) => workload,
        Err(error) => {
            tracing::debug!(%error, "a denied pod's owner could not be read; no Event");
            return;
        }
    };
    // The same name on every replica within one window: a second replica's write is a conflict.
    // (The Event's name hashes the workload's uid and this key.)
    let window = Timestamp::now().as_second() / WINDOW.as_secs() as i64;
    let key = format!("{window}:{}", denied.message);
    let message = format!(
        "a pod of this workload was not admitted: {}",
        denied.message
    );
    let _ = events
        .write(
            &Involved::from(&workload),
            Reason::InjectionDenied,
            &message,
            &key,
        )
        .await;
}
