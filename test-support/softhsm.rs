//! Throwaway SoftHSM2 tokens for the PKCS#11 tests: each `SoftHsm` has its own config and
//! token directory, so tests never share tokens nor touch the machine's.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, ensure};

/// SoftHSM2's module as Debian installs it.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of every test token.
pub const PIN: &str = "4321";
const SO_PIN: &str = "87654321";

/// A SoftHSM2 configuration with its own token directory.
pub struct SoftHsm {
    /// The configuration file; point `SOFTHSM2_CONF` at it.
    pub conf: PathBuf,
    /// The directory the tokens live in.
    pub tokens: PathBuf,
}

impl SoftHsm {
    /// A configuration under `dir`, or `None` when SoftHSM2 is not installed.
    pub fn new(dir: &Path) -> Result<Option<Self>> {
        if !Path::new(MODULE).is_file() || Command::new("softhsm2-util").arg("--version").output().is_err() {
            return Ok(None);
        }
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()))?;
        Ok(Some(Self { conf, tokens }))
    }

    fn util(&self, args: &[&str]) -> Result<()> {
        let output = Command::new("softhsm2-util").args(args).env("SOFTHSM2_CONF", &self.conf).output()?;
        ensure!(
            output.status.success(),
            "softhsm2-util {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Makes a token labelled `label` in a free slot, with [`PIN`].
    pub fn init_token(&self, label: &str) -> Result<()> {
        self.util(&["--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", SO_PIN])
    }

    /// Imports a PKCS#8 PEM private key into `token` as `label` with CKA_ID `id_hex`.
    pub fn import_key(&self, token: &str, label: &str, id_hex: &str, pkcs8_pem: &Path) -> Result<()> {
        let path = pkcs8_pem.to_string_lossy();
        self.util(&["--import", &path, "--token", token, "--label", label, "--id", id_hex, "--pin", PIN])
    }

    /// Points `command` (and the PKCS#11 module it loads) at this configuration.
    pub fn apply<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command.env("SOFTHSM2_CONF", &self.conf)
    }
}
