//! Helpers for `bench/run.py`: fill a store with N certificates, time name lookups, and
//! measure rustls' own client-auth handshake rate in process (the ceiling for S2).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use edgemtls_host::Environment;
use edgemtls_host::pki::{DevCa, Identity, IssueOptions, inspect_leaf};
use edgemtls_host::store::{NewCertificate, Store, StoreLocation};

mod tls_load;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Issues `count` client certificates `<prefix>0..` (CN `<prefix>-cn-<i>`) into a store.
    Populate {
        /// A directory or a postgres:// URL.
        #[arg(long)]
        store: std::ffi::OsString,
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value = "id")]
        prefix: String,
        /// Also write `<name>.pem` / `<name>.key` here (for nginx).
        #[arg(long)]
        write_files: Option<PathBuf>,
    },
    /// Times `Resolver::resolve` over the store's names against a bare `HashMap` lookup.
    Lookup {
        /// A directory or a postgres:// URL.
        #[arg(long)]
        store: std::ffi::OsString,
        #[arg(long, default_value_t = 200_000)]
        iterations: usize,
    },
    /// rustls client-auth handshakes per second, in memory, no resumption.
    HandshakeRate {
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        client_cert: PathBuf,
        #[arg(long)]
        client_key: PathBuf,
        #[arg(long)]
        server_cert: PathBuf,
        #[arg(long)]
        server_key: PathBuf,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// HTTPS load with a client certificate (wrk has none): `connections` callers on one
    /// thread, each on a keep-alive connection or with a new connection and a full handshake
    /// (no resumption) per request. Fails when any answer is not 200 with `expect_bytes`.
    TlsLoad(tls_load::Options),
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Populate { store, ca, count, prefix, write_files } => {
            populate(&StoreLocation::parse(&store), &ca, count, &prefix, write_files)
        }
        Command::Lookup { store, iterations } => lookup(&StoreLocation::parse(&store), iterations),
        Command::HandshakeRate { ca, client_cert, client_key, server_cert, server_key, seconds } => {
            handshake_rate(&ca, &client_cert, &client_key, &server_cert, &server_key, seconds)
        }
        Command::TlsLoad(options) => tls_load::run(options),
    }
}

fn populate(store: &StoreLocation, ca: &std::path::Path, count: usize, prefix: &str, files: Option<PathBuf>) -> anyhow::Result<()> {
    let ca = DevCa::load(ca)?;
    let mut store = Store::open(store)?;
    if let Some(dir) = &files {
        std::fs::create_dir_all(dir)?;
    }
    let started = Instant::now();
    for i in 0..count {
        let name = format!("{prefix}{i}");
        let options = IssueOptions { common_name: format!("{prefix}-cn-{i}"), server: false, sans: vec![], days: 30, ..Default::default() };
        let (cert_pem, key_pem) = ca.issue(&options)?;
        if let Some(dir) = &files {
            std::fs::write(dir.join(format!("{name}.pem")), &cert_pem)?;
            edgemtls_host::pki::write_private_file(&dir.join(format!("{name}.key")), key_pem.as_bytes())?;
        }
        let chain = edgemtls_host::pki::pem::certificates(cert_pem.as_bytes())?;
        let key = edgemtls_host::pki::pem::private_key(key_pem.as_bytes())?;
        let path = PathBuf::from(format!("<generated {name}>"));
        let metadata = inspect_leaf(&path, &chain[0])?;
        let identity = Identity { chain, key, cert_path: path.clone(), key_path: path, warnings: vec![] };
        store.create(NewCertificate { name, environments: Environment::ALL.to_vec(), identity, metadata })?;
    }
    println!("{}", serde_json::json!({ "populated": count, "seconds": started.elapsed().as_secs_f64() }));
    Ok(())
}

fn lookup(store: &StoreLocation, iterations: usize) -> anyhow::Result<()> {
    let trust = Arc::new(edgemtls_host::upstream::TrustProfiles::new(&[])?);
    let started = Instant::now();
    let resolver = edgemtls_host::resolve::Resolver::open(store, Environment::Production, trust)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let names: Vec<String> = Store::open(store)?.list()?.into_iter().map(|r| r.name).collect();
    anyhow::ensure!(!names.is_empty(), "the store is empty");
    let baseline: HashMap<String, Arc<()>> = names.iter().map(|n| (n.clone(), Arc::new(()))).collect();
    // Same access pattern for both: a stride through the names.
    let time = |f: &dyn Fn(&str) -> bool| {
        let started = Instant::now();
        let mut hits = 0usize;
        for i in 0..iterations {
            if f(&names[(i * 7919) % names.len()]) {
                hits += 1;
            }
        }
        (started.elapsed(), hits)
    };
    let (resolver_time, resolver_hits) = time(&|n| resolver.resolve(n).is_ok());
    let (map_time, map_hits) = time(&|n| baseline.get(n).map(Arc::clone).is_some());
    anyhow::ensure!(resolver_hits == iterations && map_hits == iterations, "lookups failed");
    let per = |d: Duration| d.as_secs_f64() * 1e9 / iterations as f64;
    println!(
        "{}",
        serde_json::json!({
            "certificates": names.len(),
            "snapshot_load_seconds": load_seconds,
            "resolve_ns": per(resolver_time),
            "hashmap_ns": per(map_time),
            "ratio": per(resolver_time) / per(map_time),
        })
    );
    Ok(())
}

fn handshake_rate(
    ca: &std::path::Path,
    client_cert: &std::path::Path,
    client_key: &std::path::Path,
    server_cert: &std::path::Path,
    server_key: &std::path::Path,
    seconds: f64,
) -> anyhow::Result<()> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    let provider = Arc::new(provider);
    let mut roots = rustls::RootCertStore::empty();
    for cert in edgemtls_bench::load_certs(ca)? {
        roots.add(cert)?;
    }
    let roots = Arc::new(roots);
    let (chain, key) = edgemtls_bench::load_identity(client_cert, client_key)?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(chain, key)?;
    client.resumption = rustls::client::Resumption::disabled();
    let client = Arc::new(client);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone()).build()?;
    let (chain, key) = edgemtls_bench::load_identity(server_cert, server_key)?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    let server = Arc::new(server);

    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        let mut c = rustls::ClientConnection::new(client.clone(), "localhost".try_into()?)?;
        let mut s = rustls::ServerConnection::new(server.clone())?;
        while c.is_handshaking() || s.is_handshaking() {
            transfer(&mut c, &mut s)?;
            transfer(&mut s, &mut c)?;
        }
        anyhow::ensure!(s.peer_certificates().is_some(), "no client certificate");
        count += 1;
    }
    println!("{}", serde_json::json!({ "handshakes": count, "per_second": count as f64 / started.elapsed().as_secs_f64() }));
    Ok(())
}

fn transfer(
    from: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl rustls::SideData>>,
    to: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl rustls::SideData>>,
) -> anyhow::Result<()> {
    let mut buffer = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buffer)?;
    }
    let mut slice = buffer.as_slice();
    while !slice.is_empty() {
        to.read_tls(&mut slice)?;
        to.process_new_packets()?;
    }
    Ok(())
}
