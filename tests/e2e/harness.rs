//! Shared fixtures: a dev PKI, a store, an echo upstream, a served config, an HTTP client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use edgemtls_dev_upstream::{EchoOptions, EchoTuning, EchoUpstream};
use edgemtls_host::Environment;
use edgemtls_host::config::Config;
use edgemtls_host::pki::pem::certificates as parse_pem_certificates;
use edgemtls_host::pki::{DevCa, ImportRequest, IssueOptions, inspect_leaf, load_identity};
use edgemtls_host::server::{App, ServerHandle};
use edgemtls_host::store::{NewCertificate, Store};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use time::{Duration, OffsetDateTime};

pub const HELLO_MTLS: &str = edgemtls_plugins::paths::HELLO_MTLS;
pub const PROBE: &str = edgemtls_e2e::guests::MTLS_PROBE;

/// A temp dir with a dev CA, a store and helpers to fill them.
pub struct World {
    pub dir: tempfile::TempDir,
    pub ca: DevCa,
}

impl World {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca = DevCa::generate("e2e test CA", 30)?;
        ca.write_to(&dir.path().join("pki"), None)?;
        Ok(Self { dir, ca })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The store, as `serve` is given it.
    pub fn store_location(&self) -> edgemtls_host::store::StoreLocation {
        edgemtls_host::store::StoreLocation::Directory(self.store_dir())
    }

    pub fn store_dir(&self) -> PathBuf {
        self.path().join("store")
    }

    /// Issues a client certificate with common name `cn` valid from `not_before` to
    /// `not_after` and stores it as `name` for `environments` (bypassing create-time
    /// validation, so expired and future certificates can be stored too).
    pub fn add_cert_with_validity(
        &self,
        name: &str,
        cn: &str,
        environments: &[Environment],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let options = IssueOptions { common_name: cn.into(), server: false, sans: vec![], days: 1, ..Default::default() };
        let (cert_pem, key_pem) = self.ca.issue_with_validity(&options, not_before, not_after)?;
        let cert_path = self.path().join(format!("{name}.pem"));
        let key_path = self.path().join(format!("{name}.key"));
        std::fs::write(&cert_path, cert_pem)?;
        std::fs::write(&key_path, key_pem)?;
        let identity = load_identity(ImportRequest { cert_path: &cert_path, key_path: Some(&key_path), password: None })?;
        let metadata = inspect_leaf(&cert_path, &identity.chain[0])?;
        let mut store = Store::open(&self.store_location())?;
        store.create(NewCertificate { name: name.into(), environments: environments.to_vec(), identity, metadata })?;
        Ok(())
    }

    pub fn add_cert(&self, name: &str, cn: &str, environments: &[Environment]) -> anyhow::Result<()> {
        let now = OffsetDateTime::now_utc();
        self.add_cert_with_validity(name, cn, environments, now - Duration::minutes(5), now + Duration::days(30))
    }

    pub fn store(&self) -> anyhow::Result<Store> {
        Ok(Store::open(&self.store_location())?)
    }

    /// Starts an echo upstream on 127.0.0.1 with a server certificate for localhost.
    pub async fn upstream(&self, require_client_cert: bool) -> anyhow::Result<EchoUpstream> {
        self.upstream_tuned(require_client_cert, EchoTuning::default()).await
    }

    /// Like [`World::upstream`], but it closes every connection after one response: each
    /// request makes a new connection and a TLS handshake, resumed when the client can.
    pub async fn closing_upstream(&self, require_client_cert: bool) -> anyhow::Result<EchoUpstream> {
        self.upstream_tuned(require_client_cert, EchoTuning { close_connections: true, ..EchoTuning::default() }).await
    }

    /// Like [`World::upstream_with`], requiring client certificates, with benchmark and test
    /// knobs.
    pub async fn upstream_with_tuning(&self, chain_pem: &str, key_pem: &str, tuning: EchoTuning) -> anyhow::Result<EchoUpstream> {
        self.start_upstream(&next_upstream_stem(), chain_pem, key_pem, true, tuning).await
    }

    async fn upstream_tuned(&self, require_client_cert: bool, tuning: EchoTuning) -> anyhow::Result<EchoUpstream> {
        let options = IssueOptions {
            common_name: "localhost".into(),
            server: true,
            sans: vec!["localhost".into(), "127.0.0.1".into()],
            days: 30,
            ..Default::default()
        };
        let (chain_pem, key_pem) = self.ca.issue(&options)?;
        // nginx.rs reuses these two files.
        self.start_upstream("upstream", &chain_pem, &key_pem, require_client_cert, tuning).await
    }

    /// Starts an echo upstream on 127.0.0.1 that presents `chain_pem` (leaf first) with
    /// `key_pem`, and accepts client certificates issued by this world's CA. The files are
    /// kept as `upstream-N.pem` / `upstream-N.key`.
    pub async fn upstream_with(&self, chain_pem: &str, key_pem: &str, require_client_cert: bool) -> anyhow::Result<EchoUpstream> {
        self.start_upstream(&next_upstream_stem(), chain_pem, key_pem, require_client_cert, EchoTuning::default()).await
    }

    async fn start_upstream(
        &self,
        stem: &str,
        chain_pem: &str,
        key_pem: &str,
        require_client_cert: bool,
        tuning: EchoTuning,
    ) -> anyhow::Result<EchoUpstream> {
        let key_path = self.path().join(format!("{stem}.key"));
        let chain_path = self.path().join(format!("{stem}.pem"));
        std::fs::write(&chain_path, chain_pem)?;
        std::fs::write(&key_path, key_pem)?;
        let identity = load_identity(ImportRequest { cert_path: &chain_path, key_path: Some(&key_path), password: None })?;
        let client_ca = parse_pem_certificates(self.ca.cert_pem().as_bytes())?;
        EchoUpstream::start_tuned(
            "127.0.0.1:0".parse()?,
            EchoOptions { client_ca, server_chain: identity.chain, server_key: identity.key, require_client_cert },
            tuning,
        )
        .await
    }

    /// Writes `text` as `edgemtls.toml` exactly as given (no `[[upstreams]]` entry is added)
    /// and returns its path.
    pub fn config_raw(&self, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.path().join("edgemtls.toml");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Writes `edgemtls.toml` with `body` plus an `[[upstreams]]` entry trusting the dev CA
    /// for `upstream`, and returns its path.
    pub fn config(&self, body: &str, upstream: SocketAddr) -> anyhow::Result<PathBuf> {
        let path = self.path().join("edgemtls.toml");
        let text = format!(
            "{body}\n[[upstreams]]\nhosts = [\"localhost:{port}\", \"127.0.0.1:{port}\"]\nca_bundle = \"pki/ca.pem\"\n",
            port = upstream.port()
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Prepares and serves `config` in `environment` on a free port.
    pub async fn serve(&self, config: &Path, environment: Environment) -> anyhow::Result<Served> {
        self.serve_on(config, environment, "127.0.0.1:0".parse()?).await
    }

    /// Like [`World::serve`], on `addr` (for a config that names the host's own address).
    pub async fn serve_on(&self, config: &Path, environment: Environment, addr: SocketAddr) -> anyhow::Result<Served> {
        let config = Config::load(config)?;
        let prepared = App::prepare(&config, environment, &self.store_location());
        let app = prepared.app.map_err(|problems| {
            anyhow::anyhow!("startup problems: {}", problems.iter().map(|p| p.0.clone()).collect::<Vec<_>>().join("; "))
        })?;
        let handle = edgemtls_host::server::spawn(app, addr).await?;
        Ok(Served { addr: handle.addr, handle, client: client() })
    }
}

/// `upstream-N`: a file stem no other upstream of this test binary has.
fn next_upstream_stem() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!("upstream-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

/// A route table for the probe guest at `/probe` and hello-mtls at `/hello`.
pub fn probe_routes(hello_url: &str) -> String {
    format!(
        "[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\n\n[[routes]]\npath = \"/hello\"\nhandler = \"{HELLO_MTLS}\"\n[routes.options]\nurl = \"{hello_url}\"\n"
    )
}

pub type HttpClient = Client<HttpConnector, UnsyncBoxBody<Bytes, std::convert::Infallible>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A running host.
pub struct Served {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    client: HttpClient,
}

async fn reply(response: hyper::Response<hyper::body::Incoming>) -> anyhow::Result<Reply> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// What came back from the host.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("body is not JSON: {}", self.body))
    }
}

impl Served {
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
        self.request("GET", path, headers, Bytes::new()).await
    }

    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Bytes) -> anyhow::Result<Reply> {
        let mut request = hyper::Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.client.request(request.body(Full::new(body).boxed_unsync())?).await?;
        reply(response).await
    }

    /// Sends a streamed body.
    pub async fn request_streaming<B>(&self, method: &str, path: &str, body: B) -> anyhow::Result<Reply>
    where
        B: hyper::body::Body<Data = Bytes, Error = std::convert::Infallible> + Send + 'static,
    {
        let request = hyper::Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        let response = self.client.request(request.body(body.boxed_unsync())?).await?;
        reply(response).await
    }

    /// A GET whose response body the caller reads.
    pub async fn raw_get(&self, path: &str) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let request = hyper::Request::get(format!("http://{}{path}", self.addr));
        Ok(self.client.request(request.body(Full::new(Bytes::new()).boxed_unsync())?).await?)
    }

    /// Asks the probe to fetch `target` naming `certificate` (None: no certificate).
    pub async fn probe(&self, target: &str, certificate: Option<&str>) -> anyhow::Result<Reply> {
        let mut headers = vec![("x-target", target)];
        if let Some(name) = certificate {
            headers.push(("x-certificate", name));
        }
        self.get("/probe", &headers).await
    }
}

pub fn all_envs() -> Vec<Environment> {
    Environment::ALL.to_vec()
}

pub fn upstream_url(upstream: &EchoUpstream, path: &str) -> String {
    format!("https://localhost:{}{path}", upstream.addr().port())
}

#[allow(dead_code)]
pub fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[allow(dead_code)]
pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
