//! "Every interval until shutdown": the one loop behind the collector, the certificate file
//! watch and self-managed certificate renewal.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};

/// Ticks every interval (the first at once) until `shutdown` resolves. A slow pass delays the
/// next tick rather than bunching missed ones.
pub struct Ticks<S> {
    ticker: Interval,
    shutdown: Pin<Box<S>>,
    stopped: bool,
}

impl<S: Future<Output = ()>> Ticks<S> {
    /// Ticks every `interval` until `shutdown`.
    pub fn new(interval: Duration, shutdown: S) -> Self {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            ticker,
            shutdown: Box::pin(shutdown),
            stopped: false,
        }
    }

    /// Waits for the next tick: `true` to run a pass, `false` (from then on) once shutdown came.
    pub async fn next(&mut self) -> bool {
        if self.stopped {
            return false;
        }
        tokio::select! {
            _ = self.ticker.tick() => true,
            () = &mut self.shutdown => {
                self.stopped = true;
                false
            }
        }
    }
}
