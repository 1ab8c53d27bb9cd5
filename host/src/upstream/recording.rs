//! Connections that remember the TLS error that ended them.
//!
//! A TLS 1.3 server refuses a client certificate after the handshake, so the alert fails a
//! later read inside the connection's task, not the request. By the time the request fails,
//! hyper's client has reduced that cause to "connection was not ready" or, over HTTP/2, to
//! text. Each connection therefore records the first TLS error it reads and hands the record
//! to the client as connection info, which every client error carries.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};

/// The first TLS error a connection read, shared with the client as connection info.
#[derive(Clone, Default)]
pub(crate) struct LastTlsError(Arc<Mutex<Option<rustls::Error>>>);

impl LastTlsError {
    fn record(&self, error: &std::io::Error) {
        if let Some(tls) = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
            && let Ok(mut slot) = self.0.lock()
            && slot.is_none()
        {
            *slot = Some(tls.clone());
        }
    }

    /// The recorded error of the connection a client error happened on, if any.
    pub(crate) fn of(error: &hyper_util::client::legacy::Error) -> Option<rustls::Error> {
        let mut extensions = http::Extensions::new();
        error.connect_info()?.get_extras(&mut extensions);
        let recorded = extensions.get::<LastTlsError>()?;
        recorded.0.lock().ok()?.clone()
    }
}

/// Wraps a connector so that each of its connections records its TLS error.
#[derive(Clone)]
pub(crate) struct RecordingConnector<C>(pub(crate) C);

impl<C> tower_service::Service<http::Uri> for RecordingConnector<C>
where
    C: tower_service::Service<http::Uri>,
    C::Future: Send + 'static,
{
    type Response = Recording<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { Ok(Recording { inner: connecting.await?, last: LastTlsError::default() }) })
    }
}

/// A connection that records its first TLS error.
pub(crate) struct Recording<S> {
    inner: S,
    last: LastTlsError,
}

impl<S: Connection> Connection for Recording<S> {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(self.last.clone())
    }
}

impl<S: Read + Unpin> Read for Recording<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Err(error)) = &poll {
            self.last.record(error);
        }
        poll
    }
}

impl<S: Write + Unpin> Write for Recording<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Err(error)) = &poll {
            self.last.record(error);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Err(error)) = &poll {
            self.last.record(error);
        }
        poll
    }
}
