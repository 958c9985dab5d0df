//! Per-connection deadlines: for HTTP/1.1 enforced on the byte stream ([`DeadlineIo`]), for
//! HTTP/2 on requests ([`RequestActivity`]), whose keep-alive pings keep the byte stream busy.
//!
//! The API server keeps webhook connections alive and reuses them for up to 90 s of idleness,
//! so an idle connection must live longer than that; a client that starts a request must finish
//! sending it promptly, or 1,000 slow clients could hold 1,000 connections. hyper's own header
//! timeout also runs while a keep-alive connection is idle, which would close it after a few
//! seconds; this wrapper tells the two states apart instead: a connection is idle from the end of
//! a response until the next byte arrives, and receiving from that byte until the response
//! starts.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

#[derive(Debug, Clone, Copy)]
enum State {
    /// Waiting for a request since this instant.
    Idle(Instant),
    /// Receiving a request that started at this instant.
    Receiving(Instant),
    /// Writing a response.
    Responding,
}

/// An I/O stream that fails with `TimedOut` when idle longer than `idle` or when a request takes
/// longer than `request` to arrive.
pub struct DeadlineIo<S> {
    inner: S,
    idle: Duration,
    request: Duration,
    state: State,
    timer: Pin<Box<Sleep>>,
}

impl<S> DeadlineIo<S> {
    /// Wraps a fresh connection (idle from now).
    pub fn new(inner: S, idle: Duration, request: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner,
            idle,
            request,
            state: State::Idle(now),
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Idle(since) => Some(since + self.idle),
            State::Receiving(since) => Some(since + self.request),
            State::Responding => None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for DeadlineIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && !matches!(this.state, State::Receiving(_)) {
                    this.state = State::Receiving(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if let State::Responding = this.state {
                    // The response is out and nothing more has arrived: idle from now.
                    this.state = State::Idle(Instant::now());
                }
                let Some(deadline) = this.deadline() else {
                    return Poll::Pending;
                };
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        let what = match this.state {
                            State::Idle(_) => "idle connection timed out",
                            _ => "request did not arrive in time",
                        };
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.state = State::Responding;
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.state = State::Responding;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Requests in flight on one connection, and since when there has been none.
#[derive(Debug)]
pub struct RequestActivity {
    /// (requests in flight, when the last one ended or the connection opened)
    state: Mutex<(usize, Instant)>,
}

/// One request in flight; ending it (also by cancellation) is dropping it.
#[derive(Debug)]
pub struct ActiveRequest(Arc<RequestActivity>);

impl RequestActivity {
    /// A fresh connection, idle from now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new((0, Instant::now())),
        })
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> ActiveRequest {
        self.update(|(active, _)| *active += 1);
        ActiveRequest(self.clone())
    }

    /// When the connection will have been without requests for `idle`; `None` while one is in
    /// flight.
    pub fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        let (active, since) = *self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (active == 0).then_some(since + idle)
    }

    fn update(&self, change: impl FnOnce(&mut (usize, Instant))) {
        change(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.update(|(active, since)| {
            *active -= 1;
            if *active == 0 {
                *since = Instant::now();
            }
        });
    }
}
