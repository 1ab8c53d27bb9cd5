//! End-to-end tests live in `e2e/`; the build script compiles the guests they run.
