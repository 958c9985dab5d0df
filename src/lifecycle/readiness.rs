//! Whether this replica serves admissions: `/readyz` answers from [`Readiness`].
//!
//! Parts register as not ready and report when they are (each watch cache, the HTTPS listener);
//! the serving certificate is asked on every check; once shutdown begins, never ready again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Something whose health decides readiness beyond its parts: the serving certificate.
pub trait HealthCheck: Send + Sync {
    /// `Err` when not ready because of it; `Ok(Some(note))` when ready but worth reporting.
    fn health(&self) -> Result<Option<String>, String>;
    /// When it stops being valid (Unix time), if it expires.
    fn expiry(&self) -> Option<i64> {
        None
    }
}

/// Which parts are ready (each cache synced, the HTTPS listener serving) and whether the
/// serving certificate is valid; `/readyz` reads it.
#[derive(Default)]
pub struct Readiness {
    parts: Mutex<BTreeMap<&'static str, bool>>,
    stopping: AtomicBool,
    certificate: OnceLock<Arc<dyn HealthCheck>>,
}

impl Readiness {
    /// Registers a part that is not ready yet.
    pub fn expect(&self, part: &'static str) {
        if let Ok(mut parts) = self.parts.lock() {
            parts.insert(part, false);
        }
    }

    /// Marks a part ready.
    pub fn set_ready(&self, part: &'static str) {
        if let Ok(mut parts) = self.parts.lock() {
            parts.insert(part, true);
        }
    }

    /// Also watch the serving certificate: an expired one makes kvinject unready.
    pub fn watch_certificate(&self, store: Arc<dyn HealthCheck>) {
        let _ = self.certificate.set(store);
    }

    /// When the watched serving certificate stops being valid (Unix time).
    pub fn certificate_expiry(&self) -> Option<i64> {
        self.certificate.get()?.expiry()
    }

    /// A problem worth reporting while ready (a refused certificate replacement).
    pub fn note(&self) -> Option<String> {
        self.certificate
            .get()
            .and_then(|store| store.health().ok().flatten())
    }

    /// From now on, never ready (shutting down).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// The parts that are ready.
    pub fn synced(&self) -> Vec<&'static str> {
        self.parts
            .lock()
            .map(|parts| {
                parts
                    .iter()
                    .filter(|(_, ready)| **ready)
                    .map(|(part, _)| *part)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `Ok` when ready, else what is not.
    pub fn check(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        if let Some(store) = self.certificate.get() {
            store.health()?;
        }
        let parts = self
            .parts
            .lock()
            .map_err(|_| "readiness state poisoned".to_owned())?;
        let waiting: Vec<&str> = parts
            .iter()
            .filter(|(_, ready)| !**ready)
            .map(|(part, _)| *part)
            .collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!("waiting for: {}", waiting.join(", ")))
        }
    }
}
