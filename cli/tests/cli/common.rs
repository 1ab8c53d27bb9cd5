//! Helpers shared by the CLI tests: a sandbox per test, running the binary, and making
//! certificates and keys in every format the importer accepts.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail, ensure};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

/// The variable `cert create --password-env` is pointed at in the PKCS#12 tests.
pub const PASSWORD_VAR: &str = "EDGEMTLS_TEST_P12_PASSWORD";

/// One test's world: a temporary directory holding the store and the input files.
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
    pub store: PathBuf,
}

impl Sandbox {
    pub fn new() -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let store = tmp.path().join("store");
        Ok(Self { tmp, store })
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// The binary with `--store`, a clean environment for the master key and the store,
    /// HOME at the sandbox and no standard input.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(env!("CARGO_BIN_EXE_edgemtls"));
        command
            .arg("--store")
            .arg(&self.store)
            .args(args)
            .current_dir(self.tmp.path())
            .env_remove("EDGEMTLS_MASTER_KEY")
            .env_remove("EDGEMTLS_STORE")
            .env_remove(PASSWORD_VAR)
            .env("HOME", self.tmp.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        command
    }

    pub fn run<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        output(self.command(args))
    }

    /// Runs and requires success; returns stdout.
    pub fn ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        expect_success(self.command(args))
    }

    /// Runs and requires failure with `expected` in stderr; returns stderr.
    pub fn fails<I, S>(&self, args: I, expected: &str) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        expect_failure(self.command(args), expected)
    }

    /// Writes a file into the sandbox with mode 0600 (so no permission warning) and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> Result<PathBuf> {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, contents)?;
        set_mode(&path, 0o600)?;
        Ok(path)
    }

    /// `cert create --name NAME --cert CERT [--key KEY] --env development` plus `extra`.
    pub fn create_args(&self, name: &str, cert: &Path, key: Option<&Path>, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["cert".into(), "create".into(), "--name".into(), name.into(), "--cert".into(), text(cert)];
        if let Some(key) = key {
            args.push("--key".into());
            args.push(text(key));
        }
        if !extra.iter().any(|a| *a == "--env" || *a == "--environment-type") {
            args.push("--env".into());
            args.push("development".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// `cert list --json`, parsed.
    pub fn list_json(&self) -> Result<Vec<Value>> {
        let out = self.ok(["cert", "list", "--json"])?;
        let value: Value = serde_json::from_str(&out).with_context(|| format!("cert list --json printed: {out}"))?;
        match value {
            Value::Array(items) => Ok(items),
            other => bail!("cert list --json is not an array: {other}"),
        }
    }

    /// `cert show REF --json`, parsed.
    pub fn show_json(&self, reference: &str) -> Result<Value> {
        let out = self.ok(["cert", "show", reference, "--json"])?;
        serde_json::from_str(&out).with_context(|| format!("cert show --json printed: {out}"))
    }

    /// The store's bytes on disk and its listing, to prove a refused command changed nothing.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let read_optional = |name: &str| -> Result<Option<Vec<u8>>> {
            match std::fs::read(self.store.join(name)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            }
        };
        let database = read_optional("store.db")?.context("the store has no store.db")?;
        let wal = read_optional("store.db-wal")?;
        // The listing is compared without `days_left`/`expiry_status`, which depend on the clock.
        let mut listing = self.list_json()?;
        for item in &mut listing {
            if let Value::Object(map) = item {
                map.remove("days_left");
                map.remove("expiry_status");
            }
        }
        Ok(Snapshot { database, wal, listing })
    }

    /// Runs a command that must be refused with `expected` on stderr, and checks that the
    /// store is byte-for-byte and listing-for-listing what it was.
    pub fn refused<I, S>(&self, args: I, expected: &str) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.refused_command(self.command(args), expected)
    }

    /// [`Sandbox::refused`] for a prepared command (extra environment variables and the like).
    pub fn refused_command(&self, command: Command, expected: &str) -> Result<String> {
        let before = self.snapshot()?;
        let stderr = expect_failure(command, expected)?;
        let after = self.snapshot()?;
        ensure!(before.database == after.database, "store.db changed after a refused command ({expected})");
        ensure!(before.wal == after.wal, "store.db-wal changed after a refused command ({expected})");
        ensure!(
            before.listing == after.listing,
            "cert list --json changed after a refused command ({expected}):\nbefore: {:#?}\nafter: {:#?}",
            before.listing,
            after.listing
        );
        Ok(stderr)
    }

    /// A store holding one valid certificate named `existing`, so refusals have something to keep.
    pub fn with_existing_cert(&self, ca: &TestCa) -> Result<()> {
        let leaf = ca.client("existing client")?;
        let (cert, key) = leaf.write_pem_split(self, "existing")?;
        self.ok(self.create_args("existing", &cert, Some(&key), &[]))?;
        ensure!(self.store.join("store.db").exists(), "store.db was not created");
        Ok(())
    }
}

/// What [`Sandbox::snapshot`] records.
#[derive(Debug)]
pub struct Snapshot {
    database: Vec<u8>,
    wal: Option<Vec<u8>>,
    listing: Vec<Value>,
}

pub fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

pub fn output(mut command: Command) -> Result<Output> {
    command.output().with_context(|| format!("running {command:?}"))
}

pub fn describe(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn expect_success(command: Command) -> Result<String> {
    let args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let out = output(command)?;
    ensure!(out.status.success(), "`edgemtls {}` failed:\n{}", args.join(" "), describe(&out));
    Ok(String::from_utf8(out.stdout)?)
}

pub fn expect_failure(command: Command, expected: &str) -> Result<String> {
    let args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let out = output(command)?;
    ensure!(!out.status.success(), "`edgemtls {}` succeeded but should fail:\n{}", args.join(" "), describe(&out));
    let stderr = String::from_utf8(out.stderr.clone())?;
    ensure!(stderr.contains(expected), "`edgemtls {}`: stderr lacks {expected:?}:\n{}", args.join(" "), describe(&out));
    Ok(stderr)
}

#[cfg(unix)]
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(not(unix))]
pub fn set_mode(_path: &Path, _mode: u32) -> Result<()> {
    Ok(())
}

#[cfg(unix)]
pub fn mode(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

/// A CA made with rcgen.
pub struct TestCa {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub cert: rcgen::Certificate,
}

impl TestCa {
    pub fn new(common_name: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, "Acme Test");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(365);
        let cert = params.self_signed(&key)?;
        Ok(Self { params, key, cert })
    }

    /// Signs `params` (for `key`) with this CA.
    pub fn sign(&self, params: &CertificateParams, key: KeyPair) -> Result<TestLeaf> {
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(TestLeaf { cert, key, ca_pem: Some(self.cert.pem()), ca_der: Some(self.cert.der().to_vec()) })
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, common_name: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = self.params.clone();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &Issuer::from_params(&self.params, &self.key))?;
        Ok(Self { params, key, cert })
    }

    /// A CRL (PEM, current for 7 days) revoking these serial numbers half an hour ago.
    pub fn crl(&self, revoked: &[u64]) -> Result<String> {
        let now = OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(7),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*serial),
                    revocation_time: now - Duration::minutes(30),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&Issuer::from_params(&self.params, &self.key))?.pem()?)
    }

    /// A client certificate valid from yesterday for 90 days.
    pub fn client(&self, common_name: &str) -> Result<TestLeaf> {
        let now = OffsetDateTime::now_utc();
        self.sign(&client_params(common_name, now - Duration::days(1), now + Duration::days(90))?, KeyPair::generate()?)
    }
}

/// Parameters of a client certificate (`clientAuth`) valid between the two times.
pub fn client_params(common_name: &str, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.distinguished_name.push(DnType::OrganizationName, "Acme Test");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    Ok(params)
}

/// A leaf certificate, its key and (when CA-signed) the CA certificate.
pub struct TestLeaf {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
    pub ca_pem: Option<String>,
    pub ca_der: Option<Vec<u8>>,
}

impl TestLeaf {
    /// The leaf followed by the CA, PEM.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.cert.pem(), self.ca_pem.as_deref().unwrap_or(""))
    }

    pub fn key_pkcs8_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn key_pkcs8_der(&self) -> Vec<u8> {
        self.key.serialize_der()
    }

    /// `<stem>.pem` (chain) and `<stem>.key` (PKCS#8 PEM, mode 0600).
    pub fn write_pem_split(&self, sandbox: &Sandbox, stem: &str) -> Result<(PathBuf, PathBuf)> {
        let cert = sandbox.write(&format!("{stem}.pem"), self.chain_pem())?;
        let key = sandbox.write(&format!("{stem}.key"), self.key_pkcs8_pem())?;
        Ok((cert, key))
    }

    /// The DER SubjectPublicKeyInfo read back from the certificate with x509-parser.
    pub fn spki_der(&self) -> Result<Vec<u8>> {
        spki_of_cert(self.cert.der())
    }
}

/// The DER SubjectPublicKeyInfo of a DER certificate, via x509-parser.
pub fn spki_of_cert(der: &[u8]) -> Result<Vec<u8>> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| anyhow::anyhow!("x509-parser: {e}"))?;
    Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
}

/// base64url (no padding) SHA-256, the pin format.
pub fn pin(spki_der: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, spki_der))
}

/// The `privateKey` OCTET STRING of a PKCS#8 `PrivateKeyInfo`: PKCS#1 `RSAPrivateKey` for RSA,
/// SEC1 `ECPrivateKey` for ECDSA.
pub fn pkcs8_inner_key(pkcs8: &[u8]) -> Result<Vec<u8>> {
    use der::asn1::{AnyRef, OctetStringRef};
    use der::{Decode, Reader, SliceReader};
    let mut reader = SliceReader::new(pkcs8)?;
    let inner = reader.sequence(|r| {
        let _version: u8 = r.decode()?;
        let _algorithm: AnyRef<'_> = r.decode()?;
        let key: OctetStringRef<'_> = r.decode()?;
        // Attributes or a public key (PKCS#8 v2) may follow.
        while !r.is_finished() {
            let _: AnyRef<'_> = r.decode()?;
        }
        Ok(key.as_bytes().to_vec())
    })?;
    // Make sure what we extracted is itself one DER value.
    AnyRef::from_der(&inner)?;
    Ok(inner)
}

/// A degenerate PKCS#7 / CMS `SignedData` (no signers) carrying `certs`, DER.
pub fn pkcs7_der(certs: &[&[u8]]) -> Result<Vec<u8>> {
    use cms::cert::CertificateChoices;
    use cms::cert::x509::Certificate;
    use cms::content_info::{CmsVersion, ContentInfo};
    use cms::signed_data::{CertificateSet, EncapsulatedContentInfo, SignedData, SignerInfos};
    use der::asn1::SetOfVec;
    use der::oid::ObjectIdentifier;
    use der::{Any, Decode, Encode};

    const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
    const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");

    let mut choices = Vec::new();
    for der in certs {
        choices.push(CertificateChoices::Certificate(Certificate::from_der(der)?));
    }
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::new(),
        encap_content_info: EncapsulatedContentInfo { econtent_type: ID_DATA, econtent: None },
        certificates: Some(CertificateSet(SetOfVec::try_from(choices)?)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::new()),
    };
    let info = ContentInfo { content_type: ID_SIGNED_DATA, content: Any::encode_from(&signed)? };
    Ok(info.to_der()?)
}

/// A PKCS#12 file made with p12-keystore: the key and the chain (leaf first), under `password`.
pub fn pkcs12(leaf: &TestLeaf, password: &str) -> Result<Vec<u8>> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let mut certs = vec![Certificate::from_der(leaf.cert.der())?];
    if let Some(ca) = &leaf.ca_der {
        certs.push(Certificate::from_der(ca)?);
    }
    let chain = PrivateKeyChain::new(b"edgemtls-test".to_vec(), PrivateKey::from_der(&leaf.key_pkcs8_der())?, certs);
    let mut store = KeyStore::new();
    store.add_entry("client", KeyStoreEntry::PrivateKeyChain(chain));
    Ok(store.writer(password).write()?)
}

/// The PEM body (base64 without line breaks) of the first section of `pem_text`.
pub fn pem_body(pem_text: &str) -> String {
    pem_text.lines().filter(|l| !l.starts_with("-----")).collect::<String>()
}

/// Finds a JSON object with `name` in a listing.
pub fn by_name<'a>(listing: &'a [Value], name: &str) -> Result<&'a Value> {
    listing.iter().find(|item| item["name"] == name).with_context(|| format!("no certificate named {name} in {listing:#?}"))
}

/// `openssl` on PATH, or a skip message.
pub fn have_openssl(test: &str) -> bool {
    let found = Command::new("openssl").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !found {
        crate::cli::peers::missing_peer(&format!("{test} needs the openssl command, which is not on PATH"));
    }
    found
}

/// Runs `openssl ARGS` in `dir` and requires success.
pub fn openssl<I, S>(dir: &Path, args: I) -> Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new("openssl");
    command.args(args).current_dir(dir).stdin(Stdio::null());
    let out = output(command)?;
    ensure!(out.status.success(), "openssl failed:\n{}", describe(&out));
    Ok(())
}

/// An openssl CA in `dir` (`ca.pem`, `ca.key`; RSA 2048, 30 days) with the subject `subject`.
pub fn openssl_ca(dir: &Path, subject: &str) -> Result<()> {
    openssl(dir, ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-subj", subject, "-days", "30"])
}

/// A child process killed when dropped.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// Waits (at most 30 s) until this process listens on `port`. One that exits first fails
    /// at once; either failure quotes the process's `log` (its stderr), so a node that could
    /// not start says why.
    pub fn wait_until_listening(&mut self, port: u16, log: &Path) -> Result<()> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let alive = || match self.0.try_wait()? {
            Some(status) => bail!("the process exited ({status}) before it listened on {addr}"),
            None => Ok(()),
        };
        wait_for_addr_while(addr, std::time::Duration::from_secs(30), alive).with_context(|| {
            let log = std::fs::read_to_string(log).unwrap_or_else(|error| format!("(no log: {error})"));
            format!("the process's log:\n{log}")
        })
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something listens on `port`.
pub fn wait_for(port: u16) -> Result<()> {
    wait_for_addr(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Waits (at most 30 s) until something accepts connections on `addr`.
pub fn wait_for_addr(addr: std::net::SocketAddr) -> Result<()> {
    wait_for_addr_within(addr, std::time::Duration::from_secs(30))
}

/// Waits at most `limit` until something accepts connections on `addr` (a host that compiles
/// a 12 MiB JavaScript component at start, on a busy machine, takes a while).
pub fn wait_for_addr_within(addr: std::net::SocketAddr, limit: std::time::Duration) -> Result<()> {
    wait_for_addr_while(addr, limit, || Ok(()))
}

/// Waits at most `limit` until something accepts connections on `addr`, failing at once with
/// `still_waiting`'s error (the process that should listen has exited).
fn wait_for_addr_while(
    addr: std::net::SocketAddr,
    limit: std::time::Duration,
    mut still_waiting: impl FnMut() -> Result<()>,
) -> Result<()> {
    let deadline = std::time::Instant::now() + limit;
    while std::net::TcpStream::connect(addr).is_err() {
        still_waiting()?;
        anyhow::ensure!(std::time::Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// A plain GET to 127.0.0.1:`port`: the status code and the body (HTTP/1.0, so the body is
/// not chunked and the server closes the connection).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    http_get_with(port, path, &[])
}

/// [`http_get`] with request headers.
pub fn http_get_with(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).context("no status line")?;
    let (_, body) = response.split_once("\r\n\r\n").context("no HTTP body")?;
    Ok((status, body.to_string()))
}

/// `edgemtls serve` on a free port with `config` in development, its log (JSON lines when
/// `json_log`) going to `serve.log` in the sandbox. Returns once it listens.
pub fn serve_logged(sandbox: &Sandbox, config: &Path, json_log: bool) -> Result<(Running, u16, PathBuf)> {
    let log = sandbox.path("serve.log");
    let port = free_port()?;
    let mut args = Vec::new();
    if json_log {
        args.extend(["--log-format".to_string(), "json".to_string()]);
    }
    args.extend(["serve", "--config", &text(config), "--env", "development", "--listen", &format!("127.0.0.1:{port}")].map(String::from));
    let serve = sandbox.command(args).stdout(Stdio::null()).stderr(std::fs::File::create(&log)?).spawn()?;
    let mut serve = Running(serve);
    serve.wait_until_listening(port, &log)?;
    Ok((serve, port, log))
}

/// A dev CA in `pki/` with a client certificate for each of `client_cns` and a server
/// certificate for localhost, and `edgemtls dev-upstream` serving with it (requiring client
/// certificates from that CA). Returns the PKI directory, the upstream and its port.
pub fn dev_pki_and_upstream(sandbox: &Sandbox, client_cns: &[&str]) -> Result<(String, Running, u16)> {
    let pki = text(&sandbox.path("pki"));
    sandbox.ok(["pki", "init", "--out", &pki])?;
    for cn in client_cns {
        sandbox.ok(["pki", "issue", "--ca", &pki, "--cn", cn, "--out", &pki])?;
    }
    sandbox.ok(["pki", "issue", "--ca", &pki, "--cn", "localhost", "--server", "--san", "localhost", "--out", &pki])?;
    let port = free_port()?;
    let upstream = start_dev_upstream(sandbox, &pki, port)?;
    Ok((pki, upstream, port))
}

/// `edgemtls dev-upstream` on `port` with the PKI `dev_pki_and_upstream` made in `pki`,
/// once it accepts connections (again, after a test stopped it).
pub fn start_dev_upstream(sandbox: &Sandbox, pki: &str, port: u16) -> Result<Running> {
    let upstream = sandbox
        .command([
            "dev-upstream",
            "--client-ca",
            &format!("{pki}/ca.pem"),
            "--cert",
            &format!("{pki}/localhost.pem"),
            "--key",
            &format!("{pki}/localhost.key"),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let upstream = Running(upstream);
    wait_for(port)?;
    Ok(upstream)
}

/// Clients sending requests back to back until stopped, counting answers by client CN.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<Result<String, String>>>>,
}

impl Load {
    pub fn start(port: u16, path: &'static str, clients: usize) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut outcomes = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        outcomes.push(match http_get(port, path) {
                            Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|json| json["client_cn"].as_str().map(str::to_string))
                                .ok_or(body),
                            Ok((status, body)) => Err(format!("{status} {body}")),
                            Err(error) => Err(error.to_string()),
                        });
                    }
                    outcomes
                })
            })
            .collect();
        Self { stop, threads }
    }

    pub fn finish(self) -> Vec<Result<String, String>> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.threads.into_iter().flat_map(|t| t.join().unwrap_or_default()).collect()
    }
}

/// A config whose `/hello` route (hello-mtls) calls the dev upstream on `upstream_port`
/// presenting `certificate` in development, trusting the upstream through `pki/ca.pem`.
pub fn hello_mtls_config(certificate: &str, upstream_port: u16) -> String {
    format!(
        r#"[environments.development.vars]
BACKEND_MTLS_CERT = "{certificate}"

[[routes]]
path = "/hello"
handler = "hello-mtls"
[routes.options]
url = "https://localhost:{upstream_port}/"

[[upstreams]]
hosts = ["localhost:{upstream_port}"]
ca_bundle = "pki/ca.pem"
"#
    )
}

/// The config of the README's rotation runbook: `/api` forwards to the upstream with the
/// certificate production's BACKEND_MTLS_CERT names, and the admin listener on `admin_port`.
pub fn rotation_config(path: &std::path::Path, certificate: &str, upstream_port: u16, admin_port: u16) -> Result<()> {
    std::fs::write(
        path,
        format!(
            r#"admin_listen = "127.0.0.1:{admin_port}"

[environments.production.vars]
BACKEND_MTLS_CERT = "{certificate}"

[[routes]]
path = "/api"
handler = "url-forward"
[routes.options]
baseUrl = "https://localhost:{upstream_port}"
mtlsCertificate = "$env(BACKEND_MTLS_CERT)"

[[upstreams]]
hosts = ["localhost:{upstream_port}"]
ca_bundle = "pki/ca.pem"
"#
        ),
    )?;
    Ok(())
}

/// `sh -c script` in a mount namespace of its own, with `args` as `"$@"`: what the script
/// mounts (a read-only bind mount, a small tmpfs) is seen by the commands it runs and by
/// nobody else, and goes away with them. `$EDGEMTLS` is the binary and `$STORE` the sandbox's
/// store; the environment is the one [`Sandbox::command`] gives the binary.
pub fn in_mount_namespace(sandbox: &Sandbox, script: &str, args: &[&str]) -> Command {
    let template = sandbox.command::<[&str; 0], &str>([]);
    let mut command = Command::new("unshare");
    command.args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"]).args(args);
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command.env("EDGEMTLS", env!("CARGO_BIN_EXE_edgemtls")).env("STORE", &sandbox.store).current_dir(sandbox.dir()).stdin(Stdio::null());
    command
}

/// Whether this machine lets a test mount file systems in a namespace of its own (it needs
/// root and `unshare`); says on stderr that `test` is skipped when it does not.
pub fn can_mount(sandbox: &Sandbox, test: &str) -> bool {
    let probe = sandbox.path("mount-probe");
    let works = std::fs::create_dir_all(&probe).is_ok()
        && in_mount_namespace(sandbox, r#"mount -t tmpfs -o size=64k tmpfs "$1""#, &[&text(&probe)])
            .output()
            .is_ok_and(|out| out.status.success());
    if !works {
        crate::cli::peers::missing_peer(&format!("{test} needs root and `unshare --mount` to mount a read-only or full file system"));
    }
    works
}
