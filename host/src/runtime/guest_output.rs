//! What guests print: into the host's log, a line at a time, tagged with the route, and
//! never more than a budget per request, so a guest cannot flood the log or the disk.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Bytes of stdout and stderr together that one request may log.
pub(super) const OUTPUT_BUDGET: usize = 64 << 10;

/// The bytes a request has left to log; shared by its stdout and stderr, reset per request.
#[derive(Clone, Default)]
pub(super) struct OutputBudget(Arc<AtomicUsize>);

impl OutputBudget {
    pub(super) fn new() -> Self {
        Self(Arc::new(AtomicUsize::new(OUTPUT_BUDGET)))
    }

    pub(super) fn reset(&self) {
        self.0.store(OUTPUT_BUDGET, Ordering::Relaxed);
    }

    /// Takes up to `wanted` bytes; returns how many may be logged, and whether this call
    /// used up the last of the budget.
    fn take(&self, wanted: usize) -> (usize, bool) {
        let mut left = self.0.load(Ordering::Relaxed);
        loop {
            let granted = wanted.min(left);
            match self.0.compare_exchange(left, left - granted, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return (granted, left > 0 && left == granted && granted < wanted),
                Err(actual) => left = actual,
            }
        }
    }
}

/// A guest's stdout or stderr.
#[derive(Clone)]
pub(super) struct GuestOutput {
    route: Arc<str>,
    stream: &'static str,
    budget: OutputBudget,
}

impl GuestOutput {
    pub(super) fn new(route: &str, stream: &'static str, budget: OutputBudget) -> Self {
        Self { route: route.into(), stream, budget }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter { output: self.clone(), line: Vec::new() })
    }
}

/// Collects bytes into lines and logs each; always accepts everything (a guest is never
/// blocked by its own output), logging what the budget allows.
struct LineWriter {
    output: GuestOutput,
    line: Vec<u8>,
}

/// The longest line logged as one event; longer ones are split.
const MAX_LINE: usize = 4096;

impl LineWriter {
    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        // Control characters (escape sequences, stray carriage returns) are shown, not obeyed.
        let text: String = text
            .trim_end_matches(['\n', '\r'])
            .chars()
            .flat_map(|c| if c.is_control() && c != '\t' { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
            .collect();
        tracing::info!(target: "edgemtls::guest", route = %self.output.route, stream = self.output.stream, "{text}");
        self.line.clear();
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let (granted, exhausted) = self.output.budget.take(buf.len());
        for &byte in &buf[..granted] {
            self.line.push(byte);
            if byte == b'\n' || self.line.len() >= MAX_LINE {
                self.emit();
            }
        }
        if exhausted {
            self.emit();
            tracing::warn!(
                target: "edgemtls::guest", route = %self.output.route,
                "guest output over {} KiB in one request; the rest of it is dropped", OUTPUT_BUDGET >> 10
            );
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.emit();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.emit();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_says_once_when_it_runs_out() {
        let budget = OutputBudget::new();
        assert_eq!(budget.take(OUTPUT_BUDGET - 10), (OUTPUT_BUDGET - 10, false));
        assert_eq!(budget.take(100), (10, true));
        assert_eq!(budget.take(100), (0, false));
        budget.reset();
        assert_eq!(budget.take(5), (5, false));
    }
}
