//! Reporting a real peer a test needs that is missing here.

/// Says that a test's real peer (nginx, PostgreSQL, Node.js, a mount, …) is missing here.
/// On a developer's machine the test then passes as skipped; where `CI` is set it fails, so
/// a CI machine without the peer cannot stay green (`.ci/run` installs every peer and sets
/// `CI`).
pub fn missing_peer(what: &str) {
    assert!(std::env::var_os("CI").is_none(), "{what}, and CI is set: a test without its peer must fail here, not pass as skipped");
    eprintln!("skipped: {what}");
}
