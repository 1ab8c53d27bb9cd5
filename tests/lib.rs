//! End-to-end tests live in `e2e/`. The build script compiles the test guests in `guests/`
//! (each must be used by a test, or the build fails) and this crate names their files.

/// The compiled test guests, one constant per directory in `tests/guests/`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

#[cfg(test)]
mod guest_check {
    include!("guest_check.rs");

    #[test]
    fn a_guest_that_no_test_names_is_reported_by_its_constant() {
        let guests = vec!["mtls-probe".to_string(), "slow-echo".to_string()];
        let sources = "const PROBE: &str = edgemtls_e2e::guests::MTLS_PROBE;";
        assert_eq!(unused_guests(&guests, sources), vec!["SLOW_ECHO".to_string()]);
        assert!(unused_guests(&guests[..1], sources).is_empty());
    }
}
