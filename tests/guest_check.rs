// Shared by `build.rs` (which enforces it) and `lib.rs` (which tests it): every test guest
// must be named by a test.

/// `mtls-probe` → `MTLS_PROBE`, the constant in `edgemtls_e2e::guests`.
pub fn constant(guest: &str) -> String {
    guest.replace('-', "_").to_ascii_uppercase()
}

/// The constants of the guests that `sources` (the test code) never names as `guests::NAME`.
pub fn unused_guests(guests: &[String], sources: &str) -> Vec<String> {
    guests.iter().map(|g| constant(g)).filter(|c| !sources.contains(&format!("guests::{c}"))).collect()
}
