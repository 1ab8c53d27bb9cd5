//! A throwaway PostgreSQL server for tests: `initdb` into a temporary directory, listening on
//! 127.0.0.1 at a free port with password logins, stopped and removed when dropped.
//!
//! It runs the Debian package's binaries (`/usr/lib/postgresql/*/bin`, or `$EDGEMTLS_PG_BIN`).
//! PostgreSQL refuses to run as root, so as root it runs as the `postgres` user the package
//! creates. Without the binaries, [`Cluster::start`] returns `Ok(None)` and says why, so the
//! caller can skip; CI installs the package, so there the tests run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::peers::missing_peer;

/// The superuser's password in every test cluster.
pub const PASSWORD: &str = "edgemtls-test-password";

/// A running test server.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Whether commands run as the `postgres` user (we are root).
    as_postgres: bool,
}

impl Cluster {
    /// Starts a server, or returns `None` (with the reason printed) where PostgreSQL is not
    /// installed.
    pub fn start() -> Result<Option<Self>, String> {
        let Some(bin) = bin_dir() else {
            missing_peer("PostgreSQL is not installed (apt-get install postgresql, or set EDGEMTLS_PG_BIN)");
            return Ok(None);
        };
        let as_postgres = is_root();
        let dir = tempfile::Builder::new().prefix("edgemtls-pg-").tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let data = dir.path().join("data");
        let sockets = dir.path().join("sockets");
        let password_file = dir.path().join("password");
        for made in [std::fs::create_dir(&data), std::fs::create_dir(&sockets), std::fs::write(&password_file, PASSWORD)] {
            made.map_err(|e| format!("preparing {}: {e}", dir.path().display()))?;
        }
        if as_postgres {
            set_mode(dir.path(), 0o755)?;
            for path in [&data, &sockets, &password_file] {
                let status = Command::new("chown").arg("postgres").arg(path).status().map_err(|e| format!("chown: {e}"))?;
                if !status.success() {
                    return Err(format!("chown postgres {} failed (is there a postgres user?)", path.display()));
                }
            }
        }
        let mut cluster = Self { dir, bin, port: 0, as_postgres };
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth-local=trust".as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                "--pwfile".as_ref(),
                password_file.as_os_str(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        // A port that was free a moment ago may be taken by the time the server binds it:
        // try a few.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port()?;
            match cluster.resume() {
                Ok(()) => return Ok(Some(cluster)),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a new empty database and returns its URL.
    pub fn create_database(&self) -> Result<String, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("edgemtls_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        self.sql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Runs SQL in `database` with psql and returns its unaligned output.
    pub fn sql(&self, database: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", database])
            .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
            .env("PGPASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !output.status.success() {
            return Err(format!("psql {sql:?}: {}", String::from_utf8_lossy(&output.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Turns TLS on with this server certificate and key (PEM) and restarts the server.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        let cert = self.data().join("server.crt");
        let key = self.data().join("server.key");
        std::fs::write(&cert, cert_pem).map_err(|e| format!("{}: {e}", cert.display()))?;
        std::fs::write(&key, key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
        // PostgreSQL insists on a private key file readable by its owner alone.
        set_mode(&key, 0o600)?;
        if self.as_postgres {
            for path in [&cert, &key] {
                Command::new("chown").arg("postgres").arg(path).status().map_err(|e| format!("chown: {e}"))?;
            }
        }
        let conf = self.data().join("postgresql.auto.conf");
        let mut settings = std::fs::read_to_string(&conf).unwrap_or_default();
        settings.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, settings).map_err(|e| format!("{}: {e}", conf.display()))?;
        self.pause()?;
        self.resume()
    }

    /// Stops the server (fast shutdown: connections are closed at once).
    pub fn pause(&self) -> Result<(), String> {
        self.run("pg_ctl", &["-D".as_ref(), self.data().as_os_str(), "-m".as_ref(), "fast".as_ref(), "-w".as_ref(), "stop".as_ref()])
    }

    /// Starts the server again on the same port, waiting until it accepts connections.
    pub fn resume(&self) -> Result<(), String> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().join("sockets").display()
        );
        let log = self.dir.path().join("sockets").join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data().as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-o".as_ref(),
                options.as_ref(),
                "start".as_ref(),
            ],
        )
        .map_err(|error| format!("{error}\n{}", std::fs::read_to_string(&log).unwrap_or_default()))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        let output =
            command.args(args).current_dir(self.dir.path()).stdin(Stdio::null()).output().map_err(|e| format!("{program}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&output.stderr).trim(),
                String::from_utf8_lossy(&output.stdout).trim()
            ));
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pause();
    }
}

fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("EDGEMTLS_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| format!("{}: {e}", path.display()))
}
