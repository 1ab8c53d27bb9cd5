//! The README's Quick start, run as written: its `sh` blocks in an empty directory, with the
//! built binary as `edgemtls` (in place of the build and alias lines) and free ports in place
//! of 8443 and 8080, asserting the mTLS round trip it promises.

use std::os::unix::fs::symlink;

use anyhow::{Context, Result, ensure};

use super::common::*;

/// The `sh` blocks of the README's "## Quick start" section, joined.
fn quick_start_script() -> Result<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))?;
    let section = readme.split("\n## Quick start\n").nth(1).context("README.md has no '## Quick start' section")?;
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut script = String::new();
    for block in section.split("```sh\n").skip(1) {
        script.push_str(block.split("\n```").next().context("an unterminated sh block")?);
        script.push('\n');
    }
    ensure!(!script.is_empty(), "the Quick start has no sh block");
    Ok(script)
}

#[test]
fn the_readme_quick_start_runs_as_written_and_makes_the_round_trip() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let bin = sandbox.path("bin");
    std::fs::create_dir_all(&bin)?;
    symlink(env!("CARGO_BIN_EXE_edgemtls"), bin.join("edgemtls"))?;
    let work = sandbox.path("work");
    std::fs::create_dir_all(&work)?;

    let (upstream_port, serve_port) = (free_port()?, free_port()?);
    let script = quick_start_script()?;
    ensure!(script.contains("8443") && script.contains("8080"), "the ports this test replaces moved:\n{script}");
    let body: String = script
        .lines()
        // The build and the alias: the binary under test is on PATH instead.
        .filter(|line| !line.starts_with("cargo build") && !line.starts_with("alias edgemtls="))
        .map(|line| format!("{}\n", line.replace("8443", &upstream_port.to_string()).replace("8080", &serve_port.to_string())))
        .collect();
    // Stops what the script left running when it fails half way.
    let script = format!("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{body}");
    let path = std::env::var("PATH").unwrap_or_default();
    let mut command = std::process::Command::new("timeout");
    command
        .args(["120", "bash", "-c", &script])
        .current_dir(&work)
        .env("PATH", format!("{}:{path}", text(&bin)))
        .env("HOME", sandbox.dir())
        .env_remove("EDGEMTLS_STORE")
        .env_remove("EDGEMTLS_MASTER_KEY")
        .stdin(std::process::Stdio::null());
    let output = command.output()?;
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    ensure!(output.status.success(), "the Quick start failed ({}):\n{script}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    ensure!(stdout.contains("\"client_cn\":\"billing-client\""), "the upstream did not see billing-client:\n{stdout}\n{stderr}");
    // Nothing it started is left listening.
    ensure!(std::net::TcpStream::connect(("127.0.0.1", serve_port)).is_err(), "serve still runs");
    Ok(())
}
