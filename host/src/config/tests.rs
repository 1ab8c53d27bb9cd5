#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use super::*;

#[test]
fn parses_the_design_example() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("certs"))?;
    std::fs::write(dir.path().join("certs/ca.pem"), "")?;
    let path = dir.path().join("edgemtls.toml");
    let config = Config::parse(
        &path,
        r#"
listen = "127.0.0.1:8081"
[environments.production.vars]
BACKEND_MTLS_CERT = "billing_prod"
[environments.preview.vars]
BACKEND_MTLS_CERT = "billing_staging"
[[routes]]
path = "/billing/"
handler = "plugins/hello.wasm"
[routes.options]
baseUrl = "https://billing.internal:8443"
mtlsCertificate = "$env(BACKEND_MTLS_CERT)"
retries = 3
[[upstreams]]
hosts = ["billing.internal:8443", "Other.Internal:443"]
ca_bundle = "certs/ca.pem"
"#,
    )?;
    assert_eq!(config.listen.port(), 8081);
    assert_eq!(config.routes[0].path, "/billing");
    assert_eq!(config.routes[0].component, ComponentSource::File(dir.path().join("plugins/hello.wasm")));
    assert_eq!(config.routes[0].options["retries"], "3");
    assert_eq!(config.upstreams[0].hosts, vec!["billing.internal:8443", "other.internal:443"]);
    let prod = config.resolved_options(&config.routes[0], Environment::Production)?;
    assert_eq!(prod["mtlsCertificate"], "billing_prod");
    let err = config.resolved_options(&config.routes[0], Environment::Development).unwrap_err();
    assert!(err.to_string().contains("variable 'BACKEND_MTLS_CERT' is not defined for environment development"), "{err}");
    Ok(())
}

#[test]
fn unknown_keys_and_bad_values_are_named() {
    let path = Path::new("/tmp/edgemtls.toml");
    let cases = [
        ("lisen = \"x\"", "unknown field `lisen`"),
        ("listen = \"nope\"", "listen: 'nope' is not an address"),
        ("[[routes]]\npath = \"/a\"\nhandler = \"a.wasm\"\ncolour = 1", "unknown field `colour`"),
        ("[[routes]]\npath = \"a\"\nhandler = \"a.wasm\"", "routes[0].path"),
        ("[environments.staging2.vars]\nA = \"b\"", "environments.staging2"),
        ("[[routes]]\npath = \"/a\"\nhandler = \"nosuch\"", "neither a built-in handler"),
        ("[[routes]]\npath = \"/a\"\nhandler = \"a.wasm\"\n[[routes]]\npath = \"/a/\"\nhandler = \"b.wasm\"", "one would never be reached"),
        (
            "[[routes]]\npath = \"/u/:id\"\nhandler = \"a.wasm\"\n[[routes]]\npath = \"/u/:name\"\nhandler = \"b.wasm\"",
            "matches exactly what '/u/:id' matches",
        ),
        ("[limits]\nrequest_timeout_ms = 0", "limits.request_timeout_ms: 0 is out of range"),
        ("[limits]\nmemory_mib = 18446744073709551615", "limits.memory_mib"),
        ("[limits]\nmax_outbound_requests = 0", "limits.max_outbound_requests"),
        ("[limits]\nmax_websockets = 0", "limits.max_websockets: 0 is out of range"),
        ("[limits]\nwebsocket_idle_timeout_ms = 0", "limits.websocket_idle_timeout_ms: 0 is out of range"),
        ("[[routes]]\npath = \"/a\"\nhandler = \"a.wasm\"\nallowed_outbound_hosts = [\"ftp://x\"]", "allowed_outbound_hosts[0]"),
        ("[[routes]]\npath = \"/a\"\nhandler = \"a.wasm\"\nmax_requests_per_instance = 0", "max_requests_per_instance"),
    ];
    for (text, expected) in cases {
        let err = Config::parse(path, text).unwrap_err().to_string();
        assert!(err.contains(expected) && err.contains("/tmp/edgemtls.toml"), "{text}: {err}");
    }
}

#[test]
fn upstream_hosts_that_could_never_match_are_refused_with_the_fix() {
    let path = Path::new("/tmp/edgemtls.toml");
    let cases = [
        (r#"hosts = ["localhost"]"#, "hosts[0]: 'localhost' has no port; write 'localhost:443'"),
        (r#"hosts = ["https://localhost:18443"]"#, "has a scheme (https://); write the host and port alone, like 'localhost:18443'"),
        (r#"hosts = ["*.internal:8443"]"#, "wildcards are not supported"),
        (r#"hosts = ["*", "a:1"]"#, "must be alone in its entry"),
        (r#"hosts = ["a b:1"]"#, "is not a host:port"),
    ];
    for (hosts, expected) in cases {
        let text = format!("[[upstreams]]\n{hosts}\n");
        let err = Config::parse(path, &text).unwrap_err().to_string();
        assert!(err.contains(expected), "{hosts}: {err}");
    }
    let entry_cases = [
        ("revocation = \"maybe\"", "upstreams[0].revocation: 'maybe' is not one of off, crl, ocsp, both"),
        ("revocation_soft_fail = true", "revocation settings are given but revocation is off"),
        ("revocation = \"ocsp\"\nrevocation_timeout_ms = 10", "revocation_timeout_ms: 10 is out of range"),
        ("revocation = \"crl\"\ncrl_cache_ttl_s = 0", "crl_cache_ttl_s: 0 is out of range"),
        (
            "tls_versions = [\"1.1\"]",
            "upstreams[0].tls_versions: '1.1' is not a TLS version edgemtls speaks; write \"1.2\", \"1.3\" or both",
        ),
        ("tls_versions = [\"TLSv1.3\"]", "'TLSv1.3' is not a TLS version"),
        ("tls_versions = []", "upstreams[0].tls_versions: must name at least one version"),
    ];
    for (entry, expected) in entry_cases {
        let text = format!("[[upstreams]]\nhosts = [\"a:1\"]\n{entry}\n");
        let err = Config::parse(path, &text).unwrap_err().to_string();
        assert!(err.contains(expected), "{entry}: {err}");
    }
    for (entry, expected) in [
        ("", TlsVersions::Both),
        ("tls_versions = [\"1.3\", \"1.2\"]", TlsVersions::Both),
        ("tls_versions = [\"1.2\"]", TlsVersions::Tls12Only),
        ("tls_versions = [\"1.3\"]", TlsVersions::Tls13Only),
    ] {
        let config = Config::parse(path, &format!("[[upstreams]]\nhosts = [\"a:1\"]\n{entry}\n")).unwrap();
        assert_eq!(config.upstreams[0].tls_versions, expected, "{entry}");
    }
    let checked = Config::parse(path, "[[upstreams]]\nhosts = [\"a:1\"]\nrevocation = \"both\"\nrevocation_soft_fail = true\n").unwrap();
    assert_eq!(checked.upstreams[0].revocation.mode, RevocationMode::Both);
    assert!(checked.upstreams[0].revocation.soft_fail);
    let twice = "[[upstreams]]\nhosts = [\"a:1\"]\n[[upstreams]]\nhosts = [\"A:1\"]\n";
    assert!(Config::parse(path, twice).unwrap_err().to_string().contains("already in upstreams[0]"));
    // "*" alone is the default profile for every upstream not listed.
    let config = Config::parse(path, "[[upstreams]]\nhosts = [\"*\"]\n[[upstreams]]\nhosts = [\"[::1]:8443\"]\n").unwrap();
    assert_eq!(config.upstreams[0].hosts, vec!["*"]);
    assert_eq!(config.upstreams[1].hosts, vec!["[::1]:8443"]);
}

#[test]
fn tls_and_caller_rules_are_checked_with_the_fix_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for file in ["server.pem", "server.key", "callers.pem"] {
        std::fs::write(dir.path().join(file), "")?;
    }
    let path = dir.path().join("edgemtls.toml");
    let tls = |client: &str| format!("[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n{client}\n");
    let route = |extra: &str| format!("[[routes]]\npath = \"/admin\"\nhandler = \"url-forward\"\n{extra}\n");

    let config = Config::parse(
        &path,
        &(tls("client_auth = \"optional\"\nclient_ca = [\"callers.pem\"]")
            + &route("client_auth = \"required\"\nallowed_client_subjects = [\"CN=ops-*\"]")),
    )?;
    let listener = config.tls.as_ref().unwrap();
    assert_eq!((listener.client_auth, listener.client_auth_exempt_loopback), (ClientAuth::Optional, false));
    assert_eq!(config.routes[0].callers.client_auth, Some(ClientAuth::Required));
    assert!(config.routes[0].callers.has_allow_list());
    assert!(!listener.revocation.checks(), "revocation is off unless asked for");

    // [tls] takes the revocation keys of [[upstreams]], with the same defaults and ranges.
    let checked = Config::parse(
        &path,
        &(tls(
            "client_auth = \"required\"\nclient_ca = [\"callers.pem\"]\nrevocation = \"both\"\nrevocation_soft_fail = true\nrevocation_timeout_ms = 500\ncrl_cache_ttl_s = 60",
        ) + &route("")),
    )?;
    let policy = checked.tls.as_ref().unwrap().revocation;
    assert_eq!(policy.mode, RevocationMode::Both);
    assert!(policy.soft_fail);
    assert_eq!((policy.timeout, policy.crl_cache_ttl), (std::time::Duration::from_millis(500), std::time::Duration::from_secs(60)));

    let refused = [
        (tls("client_auth = \"required\""), route(""), "tls.client_ca: client_auth = \"required\" needs the CA bundle"),
        (tls("client_auth = \"sometimes\"\nclient_ca = [\"callers.pem\"]"), route(""), "tls.client_auth: 'sometimes' is not one of"),
        (tls("client_ca = [\"callers.pem\"]"), route(""), "client_ca or crl is set but client_auth is \"none\""),
        (
            tls("client_auth = \"required\"\nclient_ca = [\"callers.pem\"]"),
            route("client_auth = \"optional\""),
            "looser than the listener's",
        ),
        (String::new(), route("client_auth = \"required\""), "routes[0].client_auth: callers can only present certificates when [tls]"),
        (String::new(), route("allowed_client_issuers = [\"CN=x\"]"), "routes[0].allowed_client_*"),
        (tls("client_auth = \"optional\"\nclient_ca = [\"missing.pem\"]"), route(""), "tls.client_ca: '"),
        (
            tls("client_auth = \"optional\"\nclient_ca = [\"callers.pem\"]"),
            route("allowed_client_spki_sha256 = [\"abc\"]"),
            "is not a base64url SHA-256",
        ),
        (tls("revocation = \"ocsp\""), route(""), "tls.revocation: checks callers' certificates, but client_auth is \"none\""),
        (
            tls("client_auth = \"required\"\nclient_ca = [\"callers.pem\"]\nrevocation = \"sometimes\""),
            route(""),
            "tls.revocation: 'sometimes' is not one of off, crl, ocsp, both",
        ),
        (
            tls("client_auth = \"required\"\nclient_ca = [\"callers.pem\"]\nrevocation_soft_fail = true"),
            route(""),
            "tls.revocation: revocation settings are given but revocation is off",
        ),
        (
            tls("client_auth = \"required\"\nclient_ca = [\"callers.pem\"]\nrevocation = \"crl\"\nrevocation_timeout_ms = 99"),
            route(""),
            "tls.revocation_timeout_ms: 99 is out of range: use 100 to 60000",
        ),
        (
            tls("client_auth = \"required\"\nclient_ca = [\"callers.pem\"]\nrevocation = \"crl\"\ncrl_cache_ttl_s = 0"),
            route(""),
            "tls.crl_cache_ttl_s: 0 is out of range",
        ),
    ];
    for (tls, route, expected) in refused {
        let error = Config::parse(&path, &(tls.clone() + &route)).unwrap_err().to_string();
        assert!(error.contains(expected), "{tls}{route}\nsaid: {error}\nexpected: {expected}");
    }
    Ok(())
}

#[test]
fn caller_headers_merge_the_preset_the_listener_and_the_route_and_bad_entries_are_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for file in ["server.pem", "server.key", "ca.pem"] {
        std::fs::write(dir.path().join(file), "")?;
    }
    let path = dir.path().join("edgemtls.toml");
    let tls = "[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = [\"ca.pem\"]\nclient_auth = \"optional\"\ncaller_headers_preset = \"nginx\"\n";
    let route = "[[routes]]\npath = \"/a\"\nhandler = \"a.wasm\"\n";
    let config = Config::parse(
        &path,
        &format!(
            "{tls}[tls.caller_headers]\n\"X-Client-Cert\" = \"rfc9440\"\n{route}[routes.caller_headers]\nX_Authenticated_User = \"subject_cn\"\n"
        ),
    )?;
    let headers: Vec<(&str, CallerField)> = config.routes[0].callers.headers.iter().map(|h| (h.name.as_str(), h.field)).collect();
    // The listener's own table replaces the preset's x-client-cert; the route adds its header.
    assert!(headers.contains(&("x-client-cert", CallerField::Rfc9440)), "{headers:?}");
    assert!(!headers.contains(&("x-client-cert", CallerField::EscapedCert)), "{headers:?}");
    assert!(headers.contains(&("x-ssl-client-s-dn", CallerField::SubjectDn)), "{headers:?}");
    assert!(headers.contains(&("x_authenticated_user", CallerField::SubjectCn)), "{headers:?}");

    let cases = [
        (
            format!("{tls}{route}[routes.caller_headers]\n\"X-User\" = \"cn\""),
            "routes[0].caller_headers.\"X-User\": 'cn' is not a caller field; use one of subject_dn, subject_cn",
        ),
        (format!("{tls}[tls.caller_headers]\n\"Client_Cert\" = \"rfc9440\"\n{route}"), "the host already sets this header"),
        (format!("{tls}[tls.caller_headers]\n\"Content-Length\" = \"serial\"\n{route}"), "belongs to the HTTP connection"),
        (format!("{tls}[tls.caller_headers]\n\"X User\" = \"serial\"\n{route}"), "is not a valid header name"),
        (format!("{tls}[tls.caller_headers]\n\"X-User\" = \"serial\"\n\"x_user\" = \"subject_cn\"\n{route}"), "names the same header as"),
        (format!("{}{route}", tls.replace("\"nginx\"", "\"apache\"")), "tls.caller_headers_preset: 'apache' is not a preset"),
    ];
    for (text, expected) in cases {
        let error = Config::parse(&path, &text).unwrap_err().to_string();
        assert!(error.contains(expected), "expected '{expected}' in: {error}");
    }
    Ok(())
}

#[test]
fn pkcs11_names_the_module_and_the_pin_variable_never_the_pin() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("libtoken.so"), "")?;
    let path = dir.path().join("edgemtls.toml");
    let config = Config::parse(&path, "[pkcs11]\nmodule = \"libtoken.so\"\npin_env = \"HSM_PIN\"\n")?;
    assert_eq!(config.pkcs11.module, dir.path().join("libtoken.so"));
    assert_eq!(config.pkcs11.pin_env, "HSM_PIN");
    // Without the section: SoftHSM2's module and EDGEMTLS_PKCS11_PIN.
    assert_eq!(Config::parse(&path, "")?.pkcs11, super::TokenSettings::default());
    let err = Config::parse(&path, "[pkcs11]\npin_env = \"1234\"\n").unwrap_err();
    assert!(err.to_string().contains("pkcs11.pin_env: must name the environment variable that holds the PIN"), "{err}");
    let err = Config::parse(&path, "[pkcs11]\nmodule = \"missing.so\"\n").unwrap_err();
    assert!(err.to_string().contains("pkcs11.module"), "{err}");
    let err = Config::parse(&path, "[pkcs11]\npin = \"1234\"\n").unwrap_err();
    assert!(err.to_string().contains("unknown field `pin`"), "{err}");
    Ok(())
}
