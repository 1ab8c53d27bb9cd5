//! Upstream names resolved once every few seconds, not once per connection.
//!
//! hyper's connector asks the system resolver for every new connection, on a blocking thread:
//! for an upstream that closes its connections (S3 in the bench: a connection per request)
//! that is a file read of /etc/hosts or a DNS query, and two thread hand-offs, each time.
//! Answers are kept for [`KEEP_FOR`], like Envoy's default DNS refresh; failures are not
//! kept, so a name that starts to resolve is used at once. The connector still checks every
//! address it connects to (`connector.rs` `PeerGuard`), cached or not.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};

/// How long an answer is used before the name is looked up again.
const KEEP_FOR: Duration = Duration::from_secs(5);

/// At most this many names are kept; guests choose names, so the cache is bounded. When it
/// is full, answers that are too old to use go first, and then everything.
const MAX_NAMES: usize = 1024;

type Answers = Arc<Mutex<HashMap<Name, (Instant, Vec<SocketAddr>)>>>;

/// A resolver that keeps the answers of `R` (the system resolver by default).
#[derive(Clone)]
pub(crate) struct CachedResolver<R = GaiResolver> {
    inner: R,
    answers: Answers,
}

impl CachedResolver {
    /// The process's one cache of system resolver answers, shared by every identity's pool.
    pub(crate) fn shared() -> Self {
        static ANSWERS: std::sync::OnceLock<Answers> = std::sync::OnceLock::new();
        Self { inner: GaiResolver::new(), answers: ANSWERS.get_or_init(Answers::default).clone() }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<R> tower_service::Service<Name> for CachedResolver<R>
where
    R: tower_service::Service<Name> + Send,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<BoxError>,
    R::Future: Send + 'static,
{
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let now = Instant::now();
        let fresh = self
            .answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&name)
            .and_then(|(at, addrs)| (now.duration_since(*at) < KEEP_FOR).then(|| addrs.clone()));
        if let Some(addrs) = fresh {
            return Box::pin(std::future::ready(Ok(addrs.into_iter())));
        }
        let lookup = self.inner.call(name.clone());
        let answers = self.answers.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = lookup.await.map_err(Into::into)?.collect();
            let mut answers = answers.lock().unwrap_or_else(PoisonError::into_inner);
            if answers.len() >= MAX_NAMES {
                answers.retain(|_, (at, _)| now.duration_since(*at) < KEEP_FOR);
                if answers.len() >= MAX_NAMES {
                    answers.clear();
                }
            }
            answers.insert(name, (now, addrs.clone()));
            Ok(addrs.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Answers every name with one address, counting the lookups.
    #[derive(Clone, Default)]
    struct Counting(Arc<AtomicUsize>);

    impl tower_service::Service<Name> for Counting {
        type Response = std::vec::IntoIter<SocketAddr>;
        type Error = std::io::Error;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Name) -> Self::Future {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(vec![SocketAddr::from(([127, 0, 0, 1], 1000 + n as u16))].into_iter()))
        }
    }

    #[tokio::test]
    async fn a_name_is_looked_up_once_while_its_answer_is_fresh_and_the_cache_stays_bounded() {
        use tower_service::Service;
        let lookups = Counting::default();
        let mut resolver = CachedResolver { inner: lookups.clone(), answers: Answers::default() };
        let name = Name::from_str("billing.internal").expect("a valid name");
        let first: Vec<_> = resolver.call(name.clone()).await.expect("resolves").collect();
        let again: Vec<_> = resolver.call(name.clone()).await.expect("resolves").collect();
        assert_eq!(first, again);
        assert_eq!(lookups.0.load(Ordering::SeqCst), 1, "the second connection used the kept answer");

        // An answer older than KEEP_FOR is looked up again.
        let old = Instant::now().checked_sub(KEEP_FOR + Duration::from_secs(1)).expect("the clock is past that");
        resolver.answers.lock().unwrap().get_mut(&name).expect("kept").0 = old;
        let _ = resolver.call(name.clone()).await.expect("resolves");
        assert_eq!(lookups.0.load(Ordering::SeqCst), 2);

        for i in 0..(MAX_NAMES + 10) {
            let _ = resolver.call(Name::from_str(&format!("n{i}.internal")).expect("valid")).await.expect("resolves");
        }
        assert!(resolver.answers.lock().unwrap().len() <= MAX_NAMES);
    }
}
