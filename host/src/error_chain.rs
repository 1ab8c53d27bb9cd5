//! Walking an error's causes, written once: upstream failures, revocation fetches and the
//! PostgreSQL store all look for a typed cause (a `rustls::Error`, an I/O error) under a
//! library's framing.

use std::error::Error;

/// `error` and each of its causes, outermost first.
///
/// An `std::io::Error` that wraps an error of its own is followed into it: its `source()`
/// skips the error it wraps (it returns that error's own source), and that is where a TLS
/// error travels (tokio-rustls puts the `rustls::Error` in an `io::Error`, which hyper-rustls
/// wraps in a second one). Such an `io::Error` displays as the error it wraps, so a caller
/// that joins the causes' words skips it ([`wraps_another`]).
pub(crate) fn causes<'a>(error: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |&current| match current.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
        Some(inner) => Some(inner as &(dyn Error + 'static)),
        None => current.source(),
    })
}

/// Whether `error` is an `std::io::Error` that only carries another error (the next of
/// [`causes`]), whose words it displays as its own.
pub(crate) fn wraps_another(error: &(dyn Error + 'static)) -> bool {
    error.downcast_ref::<std::io::Error>().is_some_and(|io| io.get_ref().is_some())
}

/// What went wrong, in words: the first I/O error in `error`'s chain (worded by its kind),
/// else its innermost cause. The layers above are a library's framing ("client error
/// (Connect)", "tcp connect error") that a reader can do nothing with.
pub(crate) fn plain_cause(error: &(dyn Error + 'static)) -> String {
    let mut innermost = error;
    for cause in causes(error) {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return crate::plain::io_error(io).into_owned();
        }
        innermost = cause;
    }
    innermost.to_string()
}
