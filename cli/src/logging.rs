//! The log on stderr, and a limit on the warnings of the libraries that talk to callers.
//!
//! h2, hyper and rustls log a warning for some misbehaviours of a peer: h2 one per
//! connection that resets too many streams, so an HTTP/2 rapid-reset flood wrote 8,190
//! lines in 35 s. A caller must not be able to fill the log at will, so those warnings are
//! limited per call site as the host's own are (`edgemtls_host::warn_limited!`): at most
//! [`PER_SECOND`](edgemtls_host::log_limit::PER_SECOND) a second, and the first after a
//! dropped run is preceded by a line counting what was dropped.

use std::collections::HashMap;
use std::sync::Mutex;

use edgemtls_host::log_limit::Limiter;
use tracing::callsite::{DefaultCallsite, Identifier};
use tracing::field::FieldSet;
use tracing::metadata::Kind;
use tracing::span;
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Layer};

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init(json: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
    let text = fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(LibraryWarnings::new(text.json())).init();
    } else {
        registry.with(LibraryWarnings::new(text)).init();
    }
}

/// The libraries whose warnings a peer can cause: targets equal to one of these, or under it.
const LIBRARIES: &[&str] = &["h2", "hyper", "hyper_util", "rustls"];

fn from_a_library(target: &str) -> bool {
    LIBRARIES.iter().any(|library| target.strip_prefix(library).is_some_and(|rest| rest.is_empty() || rest.starts_with("::")))
}

/// A layer (the formatter) whose warnings and errors from [`LIBRARIES`] are limited per
/// call site; everything else passes as it is.
pub struct LibraryWarnings<L> {
    inner: L,
    /// One limiter per call site, by target and line (events bridged from the `log` crate
    /// share a few call sites, so the call site itself does not tell them apart).
    sites: Mutex<HashMap<(String, Option<u32>), Limiter>>,
}

impl<L> LibraryWarnings<L> {
    /// Limits `inner`'s library warnings.
    pub fn new(inner: L) -> Self {
        Self { inner, sites: Mutex::new(HashMap::new()) }
    }

    /// `None` when `event` passes as it is; else `Some` of what the limit says: `Some(None)`
    /// drop it, `Some(Some(n))` log it after saying that `n` were dropped (n may be 0).
    fn limit(&self, event: &Event<'_>) -> Option<Option<u64>> {
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if *metadata.level() > Level::WARN || !from_a_library(metadata.target()) {
            return None;
        }
        let mut sites = self.sites.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let site = sites.entry((metadata.target().to_string(), metadata.line())).or_default();
        Some(site.allow())
    }
}

/// The line that counts dropped warnings: an event of its own, handed to the formatter
/// directly (emitting it through `tracing` from inside the subscriber could be lost).
static DROPPED_CALLSITE: DefaultCallsite = DefaultCallsite::new(&DROPPED);
static DROPPED: Metadata<'static> = Metadata::new(
    "dropped library warnings",
    "edgemtls::log_limit",
    Level::WARN,
    Some(file!()),
    Some(line!()),
    Some(module_path!()),
    FieldSet::new(&["message", "suppressed", "library"], Identifier(&DROPPED_CALLSITE)),
    Kind::EVENT,
);

impl<L> LibraryWarnings<L> {
    fn report_dropped<S: Subscriber>(&self, suppressed: u64, library: &str, ctx: Context<'_, S>)
    where
        L: Layer<S>,
    {
        let fields = DROPPED.fields();
        let (Some(message), Some(count), Some(from)) = (fields.field("message"), fields.field("suppressed"), fields.field("library"))
        else {
            return;
        };
        let text = format!("{suppressed} similar warnings from {library} were not logged");
        let values = [
            (&message, Some(&text as &dyn tracing::Value)),
            (&count, Some(&suppressed as &dyn tracing::Value)),
            (&from, Some(&library as &dyn tracing::Value)),
        ];
        self.inner.on_event(&Event::new(&DROPPED, &fields.value_set(&values)), ctx);
    }
}

impl<S: Subscriber, L: Layer<S>> Layer<S> for LibraryWarnings<L> {
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        match self.limit(event) {
            None | Some(Some(0)) => {}
            Some(None) => return,
            Some(Some(suppressed)) => {
                let normalized = event.normalized_metadata();
                let target = normalized.as_ref().unwrap_or_else(|| event.metadata()).target();
                self.report_dropped(suppressed, target, ctx.clone());
            }
        }
        self.inner.on_event(event, ctx);
    }

    // Everything else is the formatter's.
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, span: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.inner.on_record(span, values, ctx);
    }

    fn on_follows_from(&self, span: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(span, follows, ctx);
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use edgemtls_host::log_limit::PER_SECOND;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// What the formatter wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
            String::from_utf8_lossy(&bytes).lines().map(str::to_string).collect()
        }
    }

    /// What h2 logs per connection under a rapid reset (`h2::proto::streams::recv`).
    fn h2_reset_warning() {
        tracing::warn!(target: "h2::proto::streams::recv", "recv_reset; remotely-reset pending-accept streams reached limit (20)");
    }

    #[test]
    fn a_flood_of_library_warnings_becomes_ten_lines_a_second_and_a_count() {
        let captured = Captured::default();
        let writer = captured.clone();
        let layer = tracing_subscriber::fmt::layer().with_ansi(false).with_writer(move || writer.clone());
        let subscriber = tracing_subscriber::registry().with(LibraryWarnings::new(layer));
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..5000 {
                h2_reset_warning();
            }
            // Ours and other levels pass as they are.
            for _ in 0..50 {
                tracing::warn!(target: "edgemtls_host::server", "the host's own warning");
                tracing::info!(target: "h2::codec", "an info line");
            }
            let lines = captured.lines();
            let resets = lines.iter().filter(|line| line.contains("reached limit")).count();
            assert!(resets <= 2 * PER_SECOND as usize, "{resets} of 5000 warnings logged");
            assert_eq!(lines.iter().filter(|line| line.contains("the host's own warning")).count(), 50);
            assert_eq!(lines.iter().filter(|line| line.contains("an info line")).count(), 50);

            // Once a second has passed, the next one is logged after a count of the dropped.
            let deadline = Instant::now() + Duration::from_secs(5);
            let counted = loop {
                h2_reset_warning();
                if let Some(line) = captured.lines().into_iter().find(|line| line.contains("were not logged")) {
                    break line;
                }
                assert!(Instant::now() < deadline, "no count of the dropped warnings");
                std::thread::sleep(Duration::from_millis(20));
            };
            assert!(counted.contains("similar warnings from h2::proto::streams::recv"), "{counted}");
            let dropped: u64 = counted.split_whitespace().find_map(|word| word.parse().ok()).unwrap_or_default();
            assert!(dropped >= 5000 - 2 * u64::from(PER_SECOND), "{counted}");
        });
    }

    #[test]
    fn library_targets_are_matched_whole() {
        assert!(from_a_library("h2"));
        assert!(from_a_library("h2::proto::streams::recv"));
        assert!(from_a_library("rustls::common_state"));
        assert!(!from_a_library("h2o"));
        assert!(!from_a_library("edgemtls_host::server"));
    }
}
