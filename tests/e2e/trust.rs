//! Upstream trust controls, each with the case it lets through and the case it refuses:
//! the CA bundle, the hostname check, CRLs, SPKI pins, and the `verify = false` /
//! `check_hostname = false` escape hatches (refused in production). Every upstream is a
//! real TLS server that requires a client certificate; what it saw is the evidence.

use std::path::Path;

use edgemtls_dev_upstream::{EchoTuning, EchoUpstream};
use edgemtls_host::Environment;
use edgemtls_host::pki::pem::certificates as parse_pem_certificates;
use edgemtls_host::pki::{DevCa, IssueOptions, inspect_leaf};

use crate::harness::*;

/// The certificate every probe names; its CN is what the upstream reports.
const CLIENT: &str = "trust_client";
const CLIENT_CN: &str = "trust-client";

/// A world with the client certificate stored for every environment.
fn world() -> anyhow::Result<World> {
    let world = World::new()?;
    world.add_cert(CLIENT, CLIENT_CN, &all_envs())?;
    Ok(world)
}

/// A server certificate for `sans` issued by `ca`: `(chain PEM, key PEM)`.
fn server_cert(ca: &DevCa, sans: &[&str]) -> anyhow::Result<(String, String)> {
    let options = IssueOptions {
        common_name: sans.first().copied().unwrap_or("server").into(),
        server: true,
        sans: sans.iter().map(|s| s.to_string()).collect(),
        days: 30,
        ..Default::default()
    };
    Ok(ca.issue(&options)?)
}

const LOCALHOST: &[&str] = &["localhost", "127.0.0.1"];

/// The leaf's metadata (serial, SPKI pin) as the product computes it.
fn leaf_metadata(chain_pem: &str) -> anyhow::Result<edgemtls_host::pki::CertificateMetadata> {
    let chain = parse_pem_certificates(chain_pem.as_bytes())?;
    let leaf = chain.first().ok_or_else(|| anyhow::anyhow!("empty chain"))?;
    Ok(inspect_leaf(Path::new("upstream leaf"), leaf)?)
}

/// A config with the probe routes and one `[[upstreams]]` entry for `upstream` made of
/// `entry` (TOML lines).
fn config_text(upstream: &EchoUpstream, entry: &str) -> String {
    let port = upstream.addr().port();
    format!(
        "{routes}\n[[upstreams]]\nhosts = [\"localhost:{port}\", \"127.0.0.1:{port}\"]\n{entry}\n",
        routes = probe_routes("https://unused.invalid/")
    )
}

/// What the upstream had seen at one moment.
#[derive(Debug, Clone, Copy)]
struct Seen {
    requests: usize,
    handshakes: usize,
}

impl Seen {
    fn of(upstream: &EchoUpstream) -> Self {
        Self { requests: upstream.log().requests().len(), handshakes: upstream.log().handshakes() }
    }
}

/// Serves a config whose only trust entry for `upstream` is `entry` in `environment`, and
/// probes `https://localhost:PORT/<label>` naming the client certificate. The host is
/// stopped before returning.
async fn probe_with(world: &World, upstream: &EchoUpstream, entry: &str, environment: Environment, label: &str) -> anyhow::Result<Reply> {
    let config = world.config_raw(&config_text(upstream, entry))?;
    let host = world.serve(&config, environment).await?;
    host.probe(&upstream_url(upstream, &format!("/{label}")), Some(CLIENT)).await
}

/// The host refused the upstream's certificate itself: 502 with `reason`, and the
/// certificate error, and the upstream completed no handshake and served no request.
fn assert_refused(reply: &Reply, upstream: &EchoUpstream, before: Seen, reason: &str, case: &str) -> anyhow::Result<()> {
    assert_eq!(reply.status, 502, "{case}: expected 502, got {}: {}", reply.status, reply.body);
    let problem = reply.json()?;
    assert_eq!(problem["type"], format!("urn:edgemtls:problem:{reason}"), "{case}: {}", reply.body);
    assert_eq!(problem["reason"], reason, "{case}: {}", reply.body);
    let after = Seen::of(upstream);
    assert_eq!(after.requests, before.requests, "{case}: the upstream must not have served a request: {:?}", upstream.log().requests());
    assert_eq!(after.handshakes, before.handshakes, "{case}: no TLS handshake may complete with a refused server");
    Ok(())
}

/// The request reached the upstream over mTLS with the client certificate: 200, and the
/// upstream logged exactly one more request, for `label`, presenting the client CN.
fn assert_served(reply: &Reply, upstream: &EchoUpstream, before: Seen, label: &str, case: &str) -> anyhow::Result<()> {
    assert_eq!(reply.status, 200, "{case}: expected 200, got {}: {}", reply.status, reply.body);
    assert_eq!(reply.json()?["client_cn"], CLIENT_CN, "{case}: {}", reply.body);
    let requests = upstream.log().requests();
    assert_eq!(requests.len(), before.requests + 1, "{case}: {requests:?}");
    let last = requests.last().ok_or_else(|| anyhow::anyhow!("{case}: no request"))?;
    assert_eq!(last.path, format!("/{label}"), "{case}");
    assert_eq!(last.client_cn.as_deref(), Some(CLIENT_CN), "{case}: the upstream must have seen the client certificate");
    assert!(upstream.log().handshakes() > before.handshakes, "{case}: a handshake must have completed");
    Ok(())
}

#[tokio::test]
async fn ca_bundle_of_another_ca_is_refused_and_the_issuing_ca_is_trusted() -> anyhow::Result<()> {
    let world = world()?;
    let other = DevCa::generate("other test CA", 30)?;
    other.write_to(&world.path().join("other-pki"), None)?;
    let (chain, key) = server_cert(&other, LOCALHOST)?;
    let upstream = world.upstream_with(&chain, &key, true).await?;

    // Trusting the world's CA does not make a certificate from another CA acceptable.
    let before = Seen::of(&upstream);
    let reply = probe_with(&world, &upstream, "ca_bundle = \"pki/ca.pem\"", Environment::Development, "wrong-ca").await?;
    assert_refused(&reply, &upstream, before, "upstream-unknown-issuer", "server cert from a CA not in ca_bundle")?;

    // No entry at all: only the public web roots, which do not include it either.
    let config = world.config_raw(&format!("[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\nallowed_outbound_hosts = [\"*\"]\n"))?;
    let host = world.serve(&config, Environment::Development).await?;
    let before = Seen::of(&upstream);
    let reply = host.probe(&upstream_url(&upstream, "/no-entry"), Some(CLIENT)).await?;
    assert_refused(&reply, &upstream, before, "upstream-unknown-issuer", "no [[upstreams]] entry")?;
    drop(host);

    // The CA that issued it, in ca_bundle: served.
    let before = Seen::of(&upstream);
    let reply = probe_with(&world, &upstream, "ca_bundle = \"other-pki/ca.pem\"", Environment::Development, "right-ca").await?;
    assert_served(&reply, &upstream, before, "right-ca", "server cert from the CA in ca_bundle")?;
    Ok(())
}

#[tokio::test]
async fn hostname_mismatch_is_refused_unless_check_hostname_is_off_in_development() -> anyhow::Result<()> {
    let world = world()?;
    let (chain, key) = server_cert(&world.ca, &["wrong.example"])?;
    let upstream = world.upstream_with(&chain, &key, true).await?;

    let before = Seen::of(&upstream);
    let reply = probe_with(&world, &upstream, "ca_bundle = \"pki/ca.pem\"", Environment::Development, "mismatch").await?;
    assert_refused(&reply, &upstream, before, "upstream-hostname-mismatch", "SAN wrong.example reached as localhost")?;

    let before = Seen::of(&upstream);
    let entry = "ca_bundle = \"pki/ca.pem\"\ncheck_hostname = false";
    let reply = probe_with(&world, &upstream, entry, Environment::Development, "unchecked").await?;
    assert_served(&reply, &upstream, before, "unchecked", "check_hostname = false in development")?;
    Ok(())
}

#[tokio::test]
async fn check_hostname_false_still_verifies_the_chain() -> anyhow::Result<()> {
    let world = world()?;
    let other = DevCa::generate("other test CA", 30)?;
    let (chain, key) = server_cert(&other, &["wrong.example"])?;
    let upstream = world.upstream_with(&chain, &key, true).await?;

    let before = Seen::of(&upstream);
    let entry = "ca_bundle = \"pki/ca.pem\"\ncheck_hostname = false";
    let reply = probe_with(&world, &upstream, entry, Environment::Development, "untrusted").await?;
    assert_refused(&reply, &upstream, before, "upstream-unknown-issuer", "check_hostname = false with a certificate from an untrusted CA")?;
    Ok(())
}

#[tokio::test]
async fn revoked_upstream_certificate_is_refused_by_its_crl() -> anyhow::Result<()> {
    let world = world()?;
    let (chain, key) = server_cert(&world.ca, LOCALHOST)?;
    let upstream = world.upstream_with(&chain, &key, true).await?;
    let serial = leaf_metadata(&chain)?.serial;
    // Another certificate of the same CA, to revoke instead.
    let (bystander, _) = server_cert(&world.ca, LOCALHOST)?;
    let bystander_serial = leaf_metadata(&bystander)?.serial;
    assert_ne!(serial, bystander_serial);

    std::fs::write(world.path().join("revoked.crl"), world.ca.revocation_list(&[&serial])?)?;
    std::fs::write(world.path().join("other.crl"), world.ca.revocation_list(&[&bystander_serial])?)?;

    let before = Seen::of(&upstream);
    let entry = "ca_bundle = \"pki/ca.pem\"\ncrl = [\"revoked.crl\"]";
    let reply = probe_with(&world, &upstream, entry, Environment::Development, "revoked").await?;
    assert_refused(&reply, &upstream, before, "upstream-certificate-revoked", "server cert listed in the CRL")?;

    // A CRL from the same CA that lists another serial: served.
    let before = Seen::of(&upstream);
    let entry = "ca_bundle = \"pki/ca.pem\"\ncrl = [\"other.crl\"]";
    let reply = probe_with(&world, &upstream, entry, Environment::Development, "not-revoked").await?;
    assert_served(&reply, &upstream, before, "not-revoked", "CRL that does not list the server cert")?;
    Ok(())
}

#[tokio::test]
async fn spki_pin_mismatch_is_refused_and_the_right_pin_is_served() -> anyhow::Result<()> {
    let world = world()?;
    let (chain, key) = server_cert(&world.ca, LOCALHOST)?;
    let upstream = world.upstream_with(&chain, &key, true).await?;
    let pin = leaf_metadata(&chain)?.spki_sha256;
    let (other_chain, _) = server_cert(&world.ca, LOCALHOST)?;
    let other_pin = leaf_metadata(&other_chain)?.spki_sha256;
    assert_eq!(pin.len(), 43, "{pin}");
    assert_ne!(pin, other_pin);

    let before = Seen::of(&upstream);
    let entry = format!("ca_bundle = \"pki/ca.pem\"\npin_spki_sha256 = [\"{other_pin}\"]");
    let reply = probe_with(&world, &upstream, &entry, Environment::Development, "wrong-pin").await?;
    assert_refused(&reply, &upstream, before, "upstream-pin-mismatch", "pin of another key")?;

    let before = Seen::of(&upstream);
    let entry = format!("ca_bundle = \"pki/ca.pem\"\npin_spki_sha256 = [\"{pin}\"]");
    let reply = probe_with(&world, &upstream, &entry, Environment::Development, "right-pin").await?;
    assert_served(&reply, &upstream, before, "right-pin", "pin of the server's key")?;

    // Any listed pin may match (rotation: old and new key side by side).
    let before = Seen::of(&upstream);
    let entry = format!("ca_bundle = \"pki/ca.pem\"\npin_spki_sha256 = [\"{other_pin}\", \"{pin}\"]");
    let reply = probe_with(&world, &upstream, &entry, Environment::Development, "any-pin").await?;
    assert_served(&reply, &upstream, before, "any-pin", "one of two pins matches")?;

    // Pins hold even when chain verification is off.
    let before = Seen::of(&upstream);
    let entry = format!("verify = false\npin_spki_sha256 = [\"{other_pin}\"]");
    let reply = probe_with(&world, &upstream, &entry, Environment::Development, "unverified-wrong-pin").await?;
    assert_refused(&reply, &upstream, before, "upstream-pin-mismatch", "verify = false with a pin of another key")?;
    Ok(())
}

#[tokio::test]
async fn weakened_verification_is_refused_in_production_and_allowed_in_development() -> anyhow::Result<()> {
    let world = world()?;
    let other = DevCa::generate("untrusted test CA", 30)?;
    let (chain, key) = server_cert(&other, LOCALHOST)?;
    let upstream = world.upstream_with(&chain, &key, true).await?;

    for (entry, refusal) in [
        ("verify = false", "verify = false is refused in production"),
        ("ca_bundle = \"pki/ca.pem\"\ncheck_hostname = false", "check_hostname = false is refused in production"),
    ] {
        let config = world.config_raw(&config_text(&upstream, entry))?;
        let error = match world.serve(&config, Environment::Production).await {
            Ok(_) => panic!("`{entry}` must stop the host from starting in production"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.contains(refusal), "`{entry}` in production: expected '{refusal}' in: {error}");
        assert!(error.contains("upstreams[0]"), "the problem must name the entry: {error}");
        assert!(error.contains(&format!("localhost:{}", upstream.addr().port())), "the problem must name the hosts: {error}");
    }
    assert_eq!(upstream.log().connections(), 0, "a host that refused to start contacted the upstream");

    // Development: an untrusted certificate is accepted, and the request goes through
    // with the client certificate.
    let before = Seen::of(&upstream);
    let reply = probe_with(&world, &upstream, "verify = false", Environment::Development, "unverified").await?;
    assert_served(&reply, &upstream, before, "unverified", "verify = false in development")?;

    // The same upstream without the escape hatch is refused, so it was verify = false that
    // let it through.
    let before = Seen::of(&upstream);
    let reply = probe_with(&world, &upstream, "ca_bundle = \"pki/ca.pem\"", Environment::Development, "verified").await?;
    assert_refused(&reply, &upstream, before, "upstream-unknown-issuer", "the same untrusted upstream with verification on")?;
    Ok(())
}

#[tokio::test]
async fn the_star_entry_sets_trust_for_every_upstream_not_listed() -> anyhow::Result<()> {
    let world = world()?;
    let upstream = world.upstream(true).await?;
    let target = upstream_url(&upstream, "/default");
    // No entry: the dev CA is not trusted, the handshake fails before any request.
    world.config_raw(&format!("[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\nallowed_outbound_hosts = [\"*\"]\n"))?;
    let host = world.serve(&world.path().join("edgemtls.toml"), Environment::Production).await?;
    let reply = host.probe(&target, Some(CLIENT)).await?;
    assert_eq!(reply.json()?["reason"], "upstream-unknown-issuer", "{}", reply.body);
    assert!(upstream.log().requests().is_empty());
    drop(host);

    // `hosts = ["*"]` with the dev CA: trusted, and the hostname is still checked. (It sets
    // trust only: the route allows the call itself.)
    let config = world.config_raw(&format!(
        "[[routes]]\npath = \"/probe\"\nhandler = \"{PROBE}\"\nallowed_outbound_hosts = [\"*\"]\n\n[[upstreams]]\nhosts = [\"*\"]\nca_bundle = \"pki/ca.pem\"\n"
    ))?;
    let host = world.serve(&config, Environment::Production).await?;
    let reply = host.probe(&target, Some(CLIENT)).await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()?["client_cn"], CLIENT_CN);
    Ok(())
}

/// `tls_versions` decides what the upstream sees: TLS 1.2 only is spoken even with a server
/// that has 1.3, TLS 1.3 only refuses a server that has only 1.2, and the default speaks
/// 1.3, or 1.2 with a server that has no 1.3.
#[tokio::test]
async fn tls_versions_set_the_version_the_upstream_sees() -> anyhow::Result<()> {
    let world = world()?;
    let (chain, key) = server_cert(&world.ca, LOCALHOST)?;
    let modern = world.upstream_with(&chain, &key, true).await?;
    let older = world.upstream_with_tuning(&chain, &key, EchoTuning { tls12_only: true, ..EchoTuning::default() }).await?;

    for (upstream, versions, label, on_tls12) in [
        (&modern, "", "default", false),
        (&modern, "tls_versions = [\"1.2\"]", "tls12-only", true),
        (&modern, "tls_versions = [\"1.3\"]", "tls13-only", false),
        (&older, "", "default-with-an-older-server", true),
    ] {
        let before = Seen::of(upstream);
        let tls12_before = upstream.log().tls12_handshakes();
        let entry = format!("ca_bundle = \"pki/ca.pem\"\n{versions}");
        let reply = probe_with(&world, upstream, &entry, Environment::Development, label).await?;
        assert_served(&reply, upstream, before, label, label)?;
        let tls12 = upstream.log().tls12_handshakes() - tls12_before;
        assert_eq!(tls12 > 0, on_tls12, "{label}: {tls12} TLS 1.2 handshakes");
    }

    let before = Seen::of(&older);
    let entry = "ca_bundle = \"pki/ca.pem\"\ntls_versions = [\"1.3\"]";
    let reply = probe_with(&world, &older, entry, Environment::Development, "tls13-only-with-an-older-server").await?;
    assert_eq!(reply.status, 502, "{}", reply.body);
    let problem = reply.json()?;
    assert_eq!(Seen::of(&older).requests, before.requests, "nothing may be sent to a server that speaks only TLS 1.2");
    assert_eq!(Seen::of(&older).handshakes, before.handshakes, "no handshake may complete");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert_eq!(problem["reason"], "tls-alert", "{}", reply.body);
    assert!(detail.contains("speaks none of the TLS versions this host offers it") && detail.contains("tls_versions"), "{}", reply.body);
    Ok(())
}
