//! Startup validation as data: every folder under `tests/startup-cases/` is a config plus
//! the problems (or warnings) it must produce. See `tests/startup-cases/README.md`.

use std::path::{Path, PathBuf};

use edgemtls_host::Environment;
use edgemtls_host::config::Config;
use edgemtls_host::server::App;
use time::{Duration, OffsetDateTime};

use crate::harness::*;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("startup-cases")
}

/// A fresh world with the fixed certificate set the cases refer to.
fn fixture_world() -> anyhow::Result<World> {
    let world = World::new()?;
    let now = OffsetDateTime::now_utc();
    world.add_cert("ok_cert", "ok", &all_envs())?;
    world.add_cert("disabled_cert", "disabled", &all_envs())?;
    world.store()?.disable("disabled_cert", false)?;
    world.add_cert_with_validity("expired_cert", "expired", &all_envs(), now - Duration::days(30), now - Duration::days(1))?;
    world.add_cert_with_validity("future_cert", "future", &all_envs(), now + Duration::days(1), now + Duration::days(30))?;
    world.add_cert("prod_only", "prod-only", &[Environment::Production])?;
    // An hour over 10 days, so the warning says "10 days" however long the test takes.
    world.add_cert_with_validity(
        "soon_cert",
        "soon",
        &all_envs(),
        now - Duration::days(1),
        now + Duration::days(10) + Duration::hours(1),
    )?;
    Ok(world)
}

/// Reads an optional one-word file of a case.
fn optional_word(case: &Path, file: &str) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(case.join(file)) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(anyhow::anyhow!("{}: {error}", case.join(file).display())),
    }
}

/// Runs one case folder; the error names what did not hold.
fn run_case(case: &Path) -> anyhow::Result<()> {
    let environment: Environment = match optional_word(case, "environment.txt")? {
        Some(word) => word.parse()?,
        None => Environment::Development,
    };
    let starts = match optional_word(case, "outcome.txt")?.as_deref() {
        None | Some("refused") => false,
        Some("starts") => true,
        Some(other) => anyhow::bail!("outcome.txt says '{other}'; expected 'refused' or 'starts'"),
    };
    let expected_path = case.join("expected.txt");
    let expected_text = std::fs::read_to_string(&expected_path).map_err(|e| anyhow::anyhow!("{}: {e}", expected_path.display()))?;
    let expected: Vec<&str> = expected_text.lines().map(str::trim_end).filter(|line| !line.trim().is_empty()).collect();
    if !starts && expected.is_empty() {
        anyhow::bail!("expected.txt is empty; a refused case must say what the problems mention");
    }

    let world = fixture_world()?;
    let config = Config::load(&case.join("edgemtls.toml"))?;
    let prepared = App::prepare(&config, environment, &world.store_location());
    let warnings = prepared.warnings.join("\n");
    // Whatever a case says, it says it in plain words.
    let said = match &prepared.app {
        Ok(_) => warnings.clone(),
        Err(problems) => problems.iter().map(|p| p.0.as_str()).collect::<Vec<_>>().join("\n") + &warnings,
    };
    for debug in ["Some(", "Other(", "::", "{"] {
        if said.contains(debug) {
            anyhow::bail!("the problems or warnings contain Rust debug text '{debug}':\n{said}");
        }
    }
    match (prepared.app, starts) {
        (Ok(_), false) => anyhow::bail!("started in {environment}, but it must be refused (warnings: {warnings:?})"),
        (Err(problems), true) => {
            let problems: Vec<_> = problems.iter().map(|p| p.0.as_str()).collect();
            anyhow::bail!("refused in {environment}, but it must start; problems:\n{}", problems.join("\n"))
        }
        (Err(problems), false) => {
            let problems = problems.iter().map(|p| p.0.as_str()).collect::<Vec<_>>().join("\n");
            let missing: Vec<_> = expected.iter().filter(|line| !problems.contains(**line)).collect();
            if !missing.is_empty() {
                anyhow::bail!("problems in {environment} do not mention {missing:?}; problems:\n{problems}");
            }
        }
        (Ok(_), true) => {
            if expected.is_empty() && !warnings.is_empty() {
                anyhow::bail!("started in {environment} with warnings, expected none:\n{warnings}");
            }
            let missing: Vec<_> = expected.iter().filter(|line| !warnings.contains(**line)).collect();
            if !missing.is_empty() {
                anyhow::bail!("warnings in {environment} do not mention {missing:?}; warnings:\n{warnings}");
            }
        }
    }
    Ok(())
}

#[test]
fn every_startup_case_produces_its_expected_problems() -> anyhow::Result<()> {
    let dir = cases_dir();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no case folders under {}", dir.display());

    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Err(error) = run_case(case) {
            failures.push(format!("case '{name}' ({}): {error:#}", case.display()));
        }
    }
    assert!(failures.is_empty(), "{} of {} startup cases failed:\n\n{}", failures.len(), cases.len(), failures.join("\n\n"));
    Ok(())
}
