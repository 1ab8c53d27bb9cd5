//! A response body that ends with an error when its handler failed, so a client never takes
//! a cut-off answer for a whole one.
//!
//! wasmtime-wasi-http ends an outgoing body cleanly when the guest's store is dropped before
//! the guest finished the body (a trap, the deadline), exactly as if the guest had finished
//! it. Each request therefore gets an outcome that the store reports: `Succeeded` once the
//! handler returned and its instance is back in the pool, and `Failed` from `HostState`'s
//! `Drop`, which runs before the store's resources (and the body's finish channel) are
//! dropped. The body's end waits for it: a response is complete when its handler succeeded,
//! and a client that sends its next request then finds the instance free.
//!
//! A guest that finished its body (`outgoing-body.finish`) and runs on has answered: its
//! body closes while its outcome is still unknown, which a dropped store never does (it
//! reports `Failed` first). After one turn for a guest that is just returning, such an answer
//! goes out whole, whatever the guest does next.
//!
//! A body dropped before its answer is whole means the caller went away: a guest still
//! streaming it is ended then ([`super::serve::GuestTask`]), so its instance slot is free at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// How the request's handler ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The handler returned normally.
    Succeeded,
    /// The handler trapped, ran out of time, or its instance was dropped mid-request.
    Failed,
}

/// A response body that turns a clean end into an error when the handler failed.
pub(super) struct GuardedBody {
    inner: HyperOutgoingBody,
    /// `None` once read.
    outcome: Option<oneshot::Receiver<Outcome>>,
    /// The request's deadline, which each chunk pushes `stream_idle` ahead.
    deadline: super::deadline::Deadline,
    stream_idle: std::time::Duration,
    /// The request's route: named in the log, and held until the body ends, so a reload
    /// counts a body the host still streams (after its guest returned) as running on the
    /// config version it started on.
    route: std::sync::Arc<super::RouteContext>,
    /// The last frame read from the guest's body, sent once the next one (or the end and the
    /// outcome) is known.
    held: Option<Frame<Bytes>>,
    /// The guest's body has ended.
    inner_done: bool,
    /// Wakes the body at the deadline while nothing arrives: a body the host streams
    /// without a guest (`edgemtls:mtls/forward`) has no guest deadline to end it.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The guest, while it runs as a task of its own and its answer is unfinished.
    guest: Option<super::serve::GuestTask>,
    /// The guest's body ended before its outcome was known, and it was given one turn.
    gave_a_turn: bool,
}

impl GuardedBody {
    pub(super) fn wrap(
        inner: HyperOutgoingBody,
        outcome: oneshot::Receiver<Outcome>,
        deadline: super::deadline::Deadline,
        stream_idle: std::time::Duration,
        route: std::sync::Arc<super::RouteContext>,
        guest: Option<super::serve::GuestTask>,
    ) -> HyperOutgoingBody {
        use http_body_util::BodyExt;
        GuardedBody {
            inner,
            outcome: Some(outcome),
            deadline,
            stream_idle,
            route,
            held: None,
            inner_done: false,
            idle: None,
            guest,
            gave_a_turn: false,
        }
        .boxed_unsync()
    }
}

impl GuardedBody {
    /// Whether the deadline (pushed ahead by every chunk) has passed; else arranges to be
    /// polled again when it may have.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.deadline.passed() {
                return true;
            }
            let at = tokio::time::Instant::from_std(self.deadline.get());
            let sleep = self.idle.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        while self.outcome.is_some() && !self.inner_done {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Progress: the handler may take another idle period.
                    self.deadline.extend_to(std::time::Instant::now() + self.stream_idle);
                    // One frame is held back until the next is known: when it is the last,
                    // it goes out only with the outcome. A client that knows the length (a
                    // Content-Length) takes the response as whole at its last byte, so that
                    // byte must wait for the instance to be back in its pool (or the failure).
                    if let Some(previous) = self.held.replace(frame) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Poll::Ready(None) => self.inner_done = true,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                // Nothing more yet: what is held is not known to be the last, so it streams.
                Poll::Pending => {
                    if let Some(frame) = self.held.take() {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    return match self.idle_expired(cx) {
                        false => Poll::Pending,
                        true => {
                            self.outcome = None;
                            crate::warn_limited!(route = %self.route.route, stream_idle_timeout_ms = self.stream_idle.as_millis() as u64, "the response body made no progress in time: it is cut off");
                            Poll::Ready(Some(Err(wasmtime_wasi_http::Error::ConnectionReadTimeout)))
                        }
                    };
                }
            }
        }
        // The guest's body ended: it is whole if the handler succeeded, or finished the body
        // and runs on.
        let Some(outcome) = self.outcome.as_mut() else { return Poll::Ready(self.held.take().map(Ok)) };
        match Pin::new(outcome).poll(cx) {
            Poll::Ready(Ok(Outcome::Succeeded)) => {}
            Poll::Ready(Ok(Outcome::Failed) | Err(_)) => {
                self.outcome = None;
                self.held = None;
                crate::warn_limited!(route = %self.route.route, "the handler failed after its response started: the response is cut off");
                return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpProtocolError)));
            }
            // Most guests return right after finishing their body: one turn lets that land
            // first, so their instance is back in the pool before the client's next request.
            Poll::Pending if !self.gave_a_turn => {
                self.gave_a_turn = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Pending => {}
        }
        self.outcome = None;
        if let Some(guest) = self.guest.take() {
            guest.release();
        }
        Poll::Ready(self.held.take().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.outcome.is_none() && self.held.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
