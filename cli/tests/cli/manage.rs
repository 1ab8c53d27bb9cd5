//! Listing, showing, updating, disabling, enabling and deleting certificates; what the store
//! keeps on disk; the master key.

use anyhow::{Context, Result, ensure};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::common::*;

#[test]
fn list_json_round_trips_what_was_created() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Round Trip CA")?;
    let now = OffsetDateTime::now_utc();
    let not_after = (now + Duration::days(90)).replace_nanosecond(0)?;
    let leaf = ca.sign(&client_params("billing client", now - Duration::days(1), not_after)?, rcgen::KeyPair::generate()?)?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "billing")?;
    let out = sandbox.ok(sandbox.create_args(
        "billing_api",
        &cert,
        Some(&key),
        &["--env", "production", "--env", "development", "--env", "prod"],
    ))?;
    ensure!(out.contains("created certificate 'billing_api'"), "{out}");

    let listing = sandbox.list_json()?;
    ensure!(listing.len() == 1, "{listing:#?}");
    let item = &listing[0];

    // Independently of the product: parse the certificate file we wrote.
    let pem_text = std::fs::read_to_string(&cert)?;
    let leaf_der = pem::parse_many(&pem_text)?.into_iter().next().context("no PEM section")?.into_contents();
    let (_, parsed) = X509Certificate::from_der(&leaf_der).map_err(|e| anyhow::anyhow!("{e}"))?;
    let spki_der = parsed.tbs_certificate.subject_pki.raw;
    // rcgen's own view of the public key agrees with the certificate.
    ensure!(spki_der == rcgen::PublicKeyData::subject_public_key_info(&leaf.key).as_slice());

    let id = item["id"].as_str().context("id")?;
    ensure!(id.starts_with("cert_") && id.len() > "cert_".len(), "id: {id}");
    ensure!(item["name"] == "billing_api", "{item:#}");
    ensure!(item["environments"] == serde_json::json!(["development", "production"]), "{item:#}");
    ensure!(item["enabled"] == true, "{item:#}");
    let subject = item["subject"].as_str().context("subject")?;
    ensure!(subject.contains("CN=billing client") && subject.contains("O=Acme Test"), "subject: {subject}");
    ensure!(subject == parsed.subject().to_string(), "subject: {subject}");
    let issuer = item["issuer"].as_str().context("issuer")?;
    ensure!(issuer.contains("CN=Round Trip CA") && issuer.contains("O=Acme Test"), "issuer: {issuer}");
    ensure!(issuer == parsed.issuer().to_string(), "issuer: {issuer}");

    let listed_not_after = item["not_after"].as_str().context("not_after")?;
    let listed_not_after =
        OffsetDateTime::parse(listed_not_after, &Rfc3339).with_context(|| format!("not_after is not RFC 3339: {listed_not_after}"))?;
    ensure!(listed_not_after == not_after, "not_after {listed_not_after} != {not_after}");
    let days_left = item["days_left"].as_i64().context("days_left")?;
    ensure!((89..=90).contains(&days_left), "days_left: {days_left}");
    ensure!(item["expiry_status"] == "valid", "{item:#}");

    let expected_pin = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, spki_der))
    };
    ensure!(item["spki_sha256"] == expected_pin.as_str(), "spki_sha256 {} != {expected_pin}", item["spki_sha256"]);
    ensure!(item["key_type"] == "ECDSA P-256", "{item:#}");
    ensure!(item["key_bits"] == 256, "{item:#}");
    ensure!(item["chain_length"] == 2, "{item:#}");
    let fingerprint: String = ring::digest::digest(&ring::digest::SHA256, &leaf_der).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    ensure!(item["fingerprint_sha256"] == fingerprint.as_str(), "{item:#}");

    // show --json (by name and by id) reports the same record.
    // `show` adds what its issuer says of revocation (this certificate names no CRL).
    let mut shown = sandbox.show_json("billing_api")?;
    let revocation = shown.as_object_mut().and_then(|object| object.remove("revocation"));
    ensure!(revocation.is_some_and(|r| r["status"] == "not-published"), "{shown:#}");
    ensure!(&shown == item, "show by name differs from list");
    let mut shown = sandbox.show_json(id)?;
    shown.as_object_mut().and_then(|object| object.remove("revocation"));
    ensure!(&shown == item, "show by id differs from list");

    // --env filters the listing.
    let out = sandbox.ok(["cert", "list", "--json", "--env", "preview"])?;
    ensure!(serde_json::from_str::<serde_json::Value>(&out)? == serde_json::json!([]), "{out}");
    let out = sandbox.ok(["cert", "list", "--json", "--env", "production"])?;
    ensure!(serde_json::from_str::<serde_json::Value>(&out)?.as_array().map(Vec::len) == Some(1), "{out}");
    Ok(())
}

#[test]
fn show_accepts_a_name_or_an_id() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let leaf = TestCa::new("Show CA")?.client("shown")?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "shown")?;
    sandbox.ok(sandbox.create_args("shown", &cert, Some(&key), &[]))?;
    let id = sandbox.list_json()?[0]["id"].as_str().context("id")?.to_string();

    for reference in ["shown", id.as_str()] {
        let out = sandbox.ok(["cert", "show", reference])?;
        ensure!(out.contains("name:         shown"), "{out}");
        ensure!(out.contains(&format!("id:           {id}")), "{out}");
        ensure!(out.contains("environments: development"), "{out}");
        ensure!(out.contains(&pin(&leaf.spki_der()?)), "{out}");
        let json = sandbox.show_json(reference)?;
        ensure!(json["id"] == id.as_str() && json["name"] == "shown", "{json:#}");
    }
    sandbox.fails(["cert", "show", "nope"], "no certificate named or with id 'nope'")?;
    Ok(())
}

#[test]
fn private_key_is_never_stored_in_clear() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Secret CA")?;
    let leaf = ca.client("secret")?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "secret")?;
    sandbox.ok(sandbox.create_args("secret", &cert, Some(&key), &[]))?;
    // A bundle (key in the cert file) and a SEC1 key take other paths through the importer.
    let bundled = ca.client("bundled")?;
    let bundle = sandbox.write("bundle.pem", format!("{}{}", bundled.chain_pem(), bundled.key_pkcs8_pem()))?;
    sandbox.ok(sandbox.create_args("bundled", &bundle, None, &[]))?;
    // Use it, so the store is read again after the writes.
    sandbox.ok(["cert", "show", "secret"])?;

    let mut stored = Vec::new();
    for entry in std::fs::read_dir(&sandbox.store)? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with("store.db") {
            stored.extend(std::fs::read(&path)?);
        }
    }
    ensure!(!stored.is_empty());
    let contains = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    for leaf in [&leaf, &bundled] {
        let pem_text = leaf.key_pkcs8_pem();
        let body = pem_body(&pem_text);
        ensure!(!contains(body.as_bytes()), "the key's PEM base64 appears in the store");
        for line in pem_text.lines().filter(|l| !l.starts_with("-----") && l.len() >= 32) {
            ensure!(!contains(line.as_bytes()), "a line of the key's PEM appears in the store");
        }
        let der = leaf.key_pkcs8_der();
        ensure!(!contains(&der), "the PKCS#8 DER key appears in the store");
        let inner = pkcs8_inner_key(&der)?;
        ensure!(!contains(&inner), "the SEC1 form of the key appears in the store");
        // The certificate, on the other hand, is stored.
        ensure!(contains(pem_body(&leaf.cert.pem()).get(..64).unwrap_or_default().as_bytes()), "the certificate is not in the store");
    }
    Ok(())
}

#[test]
fn update_replaces_environments() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let leaf = TestCa::new("Update CA")?.client("update")?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "update")?;
    sandbox.ok(sandbox.create_args("updated", &cert, Some(&key), &[]))?;
    let before = sandbox.show_json("updated")?;

    let out = sandbox.ok(["cert", "update", "updated", "--env", "production", "--env", "staging"])?;
    ensure!(out.contains("is now scoped to preview, production"), "{out}");
    let after = sandbox.show_json("updated")?;
    ensure!(after["environments"] == serde_json::json!(["preview", "production"]), "{after:#}");
    ensure!(after["id"] == before["id"] && after["spki_sha256"] == before["spki_sha256"]);

    // By id, with the --environment-type alias.
    let id = after["id"].as_str().context("id")?;
    sandbox.ok(["cert", "update", id, "--environment-type", "dev"])?;
    ensure!(sandbox.show_json("updated")?["environments"] == serde_json::json!(["development"]));

    sandbox.fails(["cert", "update", "nope", "--env", "dev"], "no certificate named or with id 'nope'")?;
    Ok(())
}

#[test]
fn environment_type_is_an_alias_of_env_on_create() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let leaf = TestCa::new("Alias CA")?.client("alias")?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "alias")?;
    sandbox.ok(sandbox.create_args("aliased", &cert, Some(&key), &["--environment-type", "preview", "--env", "production"]))?;
    ensure!(sandbox.show_json("aliased")?["environments"] == serde_json::json!(["preview", "production"]));
    // Without any environment, clap refuses.
    let mut args = sandbox.create_args("no_env", &cert, Some(&key), &["--env", "x"]);
    args.truncate(args.len() - 2);
    sandbox.refused(args, "--env")?;
    Ok(())
}

#[test]
fn disable_and_enable() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let leaf = TestCa::new("Toggle CA")?.client("toggle")?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "toggle")?;
    sandbox.ok(sandbox.create_args("toggle", &cert, Some(&key), &[]))?;

    let out = sandbox.ok(["cert", "disable", "toggle"])?;
    ensure!(out.contains("disabled"), "{out}");
    ensure!(by_name(&sandbox.list_json()?, "toggle")?["enabled"] == false);
    let out = sandbox.ok(["cert", "list"])?;
    ensure!(out.contains("disabled"), "{out}");

    let id = sandbox.show_json("toggle")?["id"].as_str().context("id")?.to_string();
    let out = sandbox.ok(["cert", "enable", &id])?;
    ensure!(out.contains("enabled"), "{out}");
    ensure!(by_name(&sandbox.list_json()?, "toggle")?["enabled"] == true);

    sandbox.fails(["cert", "disable", "nope"], "no certificate named or with id 'nope'")?;
    Ok(())
}

#[test]
fn delete_needs_a_disabled_certificate_and_confirmation() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let leaf = TestCa::new("Delete CA")?.client("delete")?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "delete")?;
    sandbox.ok(sandbox.create_args("doomed", &cert, Some(&key), &[]))?;

    let stderr = sandbox.refused(["cert", "delete", "doomed", "--yes"], "disable it first")?;
    ensure!(stderr.contains("edgemtls cert disable doomed"), "{stderr}");
    sandbox.refused(["cert", "delete", "doomed"], "disable it first")?;

    sandbox.ok(["cert", "disable", "doomed"])?;
    // Standard input is not a terminal (it is /dev/null): no prompt, no deletion.
    sandbox.refused(["cert", "delete", "doomed"], "standard input is not a terminal; pass --yes")?;
    // Even with "y" piped in.
    let mut command = sandbox.command(["cert", "delete", "doomed"]);
    command.stdin(std::process::Stdio::piped());
    let mut child = command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn()?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("stdin")?;
        let _ = stdin.write_all(b"y\n");
    }
    let out = child.wait_with_output()?;
    ensure!(!out.status.success(), "delete with piped 'y' succeeded");
    ensure!(by_name(&sandbox.list_json()?, "doomed").is_ok(), "deleted without --yes");

    let id = sandbox.show_json("doomed")?["id"].as_str().context("id")?.to_string();
    let out = sandbox.ok(["cert", "delete", "doomed", "--yes"])?;
    ensure!(out.contains(&format!("deleted certificate 'doomed' ({id})")), "{out}");
    ensure!(sandbox.list_json()?.is_empty());
    sandbox.fails(["cert", "show", "doomed"], "no certificate named or with id 'doomed'")?;
    sandbox.fails(["cert", "delete", &id, "--yes"], "no certificate named or with id")?;

    // The name is free again.
    sandbox.ok(sandbox.create_args("doomed", &cert, Some(&key), &[]))?;
    Ok(())
}

#[test]
fn a_different_master_key_is_a_clear_error() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Master Key CA")?;
    sandbox.with_existing_cert(&ca)?;
    ensure!(sandbox.store.join("master.key").exists(), "no master.key beside the store");
    #[cfg(unix)]
    ensure!(mode(&sandbox.store.join("master.key"))? == 0o600, "master.key is not 0600");

    let other_key = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    };
    let leaf = ca.client("second")?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "second")?;
    for args in [vec!["cert".to_string(), "list".into()], sandbox.create_args("second", &cert, Some(&key), &[])] {
        let mut command = sandbox.command(&args);
        command.env("EDGEMTLS_MASTER_KEY", &other_key);
        let stderr = sandbox.refused_command(command, "does not match the store")?;
        ensure!(stderr.contains("EDGEMTLS_MASTER_KEY"), "the message should name the key's source: {stderr}");
    }

    // A malformed key is named too.
    let mut command = sandbox.command(["cert", "list"]);
    command.env("EDGEMTLS_MASTER_KEY", "c2hvcnQ=");
    sandbox.refused_command(command, "EDGEMTLS_MASTER_KEY must decode to 32 bytes")?;

    // The right key (from the file) still works.
    ensure!(sandbox.list_json()?.len() == 1);
    Ok(())
}

#[test]
fn read_commands_never_create_a_store() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let out = sandbox.ok(["cert", "list"])?;
    ensure!(out.contains("no certificates"), "{out}");
    sandbox.ok(["cert", "status"])?;
    sandbox.fails(["cert", "show", "x"], "no certificate store in")?;
    sandbox.fails(["cert", "disable", "x"], "no certificate store in")?;
    sandbox.fails(["cert", "update", "x", "--env", "preview"], "no certificate store in")?;
    ensure!(!sandbox.path("store").exists(), "a read command created the store");
    Ok(())
}

/// `edgemtls cert show NAME | true`: the reader is gone before anything is written. The
/// command ends quietly, as SIGPIPE would end a C tool, and never panics.
#[test]
fn a_closed_pipe_ends_output_quietly() -> Result<()> {
    let sandbox = Sandbox::new()?;
    sandbox.with_existing_cert(&TestCa::new("Pipe CA")?)?;
    let name = sandbox.list_json()?[0]["name"].as_str().context("a name")?.to_string();
    for args in [vec!["cert", "show", name.as_str()], vec!["cert", "list"], vec!["cert", "list", "--json"]] {
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let mut command = sandbox.command(&args);
        command.stdout(writer).stderr(std::process::Stdio::piped());
        let out = command.output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        ensure!(out.status.code() == Some(141), "{args:?}: {:?} {stderr}", out.status);
    }
    Ok(())
}

#[test]
fn control_characters_in_a_certificate_are_shown_escaped_not_obeyed() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Escape CA")?;
    let now = OffsetDateTime::now_utc();
    let forged = "evil\nforged_row  cert_0000  production  enabled\u{1b}[2J";
    let leaf = ca.sign(&client_params(forged, now - Duration::days(1), now + Duration::days(30))?, rcgen::KeyPair::generate()?)?;
    let (cert, key) = leaf.write_pem_split(&sandbox, "evil")?;
    sandbox.ok(sandbox.create_args("evil", &cert, Some(&key), &[]))?;

    let listed = sandbox.ok(["cert", "list"])?;
    ensure!(listed.lines().count() == 2, "the subject forged a row:\n{listed}");
    ensure!(!listed.contains('\u{1b}') && listed.contains("\\n") && listed.contains("\\u{1b}"), "{listed}");
    let shown = sandbox.ok(["cert", "show", "evil"])?;
    ensure!(!shown.contains('\u{1b}') && !shown.contains("evil\nforged"), "{shown}");
    Ok(())
}

/// Runs the binary as `nobody` (needs root and setpriv); `None` when that is not possible.
fn as_nobody(args: &[&str]) -> Option<std::process::Output> {
    let root = std::process::Command::new("id").arg("-u").output().ok().is_some_and(|o| o.stdout == b"0\n");
    if !root {
        return None;
    }
    std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", env!("CARGO_BIN_EXE_edgemtls")])
        .args(args)
        .env_remove("EDGEMTLS_MASTER_KEY")
        .current_dir("/")
        .output()
        .ok()
}

#[test]
fn a_store_that_cannot_be_written_is_still_read_and_says_why_writes_fail() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Read Only CA")?;
    let (cert, key) = ca.client("reader")?.write_pem_split(&sandbox, "reader")?;
    sandbox.ok(sandbox.create_args("reader", &cert, Some(&key), &[]))?;
    // World-readable, nobody-writable: as another user, this store is read-only.
    use std::os::unix::fs::PermissionsExt;
    let tmp_dir = sandbox.dir();
    std::fs::set_permissions(tmp_dir, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&sandbox.store, std::fs::Permissions::from_mode(0o555))?;
    for entry in std::fs::read_dir(&sandbox.store)? {
        std::fs::set_permissions(entry?.path(), std::fs::Permissions::from_mode(0o444))?;
    }
    let store = text(&sandbox.store);
    let Some(listed) = as_nobody(&["--store", &store, "cert", "list"]) else {
        crate::cli::peers::missing_peer("this test needs root and setpriv to act as another user");
        return Ok(());
    };
    let out = String::from_utf8_lossy(&listed.stdout);
    ensure!(listed.status.success() && out.contains("reader"), "{out}{}", String::from_utf8_lossy(&listed.stderr));
    let disabled = as_nobody(&["--store", &store, "cert", "disable", "reader"]).context("setpriv")?;
    let err = String::from_utf8_lossy(&disabled.stderr);
    ensure!(!disabled.status.success() && err.contains("is read-only here"), "{err}");

    // A store this user cannot even look into is not "no certificates".
    std::fs::set_permissions(&sandbox.store, std::fs::Permissions::from_mode(0o700))?;
    let hidden = as_nobody(&["--store", &store, "cert", "list"]).context("setpriv")?;
    let err = String::from_utf8_lossy(&hidden.stderr);
    ensure!(!hidden.status.success() && err.contains("permission denied: this user may not open it") && !err.contains("os error"), "{err}");
    Ok(())
}

#[test]
fn a_suggested_command_is_safe_to_paste_into_a_shell() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Shell CA")?;
    let (cert, key) = ca.client("dollar")?.write_pem_split(&sandbox, "dollar")?;
    sandbox.ok(sandbox.create_args("$ok", &cert, Some(&key), &[]))?;
    let stderr = sandbox.fails(["cert", "delete", "$ok"], "disable it first")?;
    ensure!(stderr.contains("(edgemtls cert disable '$ok')"), "{stderr}");

    // The suggestion, pasted into a real shell (with the binary for `edgemtls`), disables it.
    let suggestion = stderr.split("(edgemtls ").nth(1).and_then(|rest| rest.split(')').next()).context("no suggestion")?;
    let mut shell = std::process::Command::new("sh");
    shell
        .arg("-c")
        .arg(format!("\"$EDGEMTLS_BIN\" {suggestion}"))
        .env("EDGEMTLS_BIN", env!("CARGO_BIN_EXE_edgemtls"))
        .env("EDGEMTLS_STORE", &sandbox.store)
        .env("ok", "someone_else")
        .current_dir(sandbox.dir());
    let out = expect_success(shell)?;
    ensure!(out.contains("disabled"), "{out}");
    ensure!(by_name(&sandbox.list_json()?, "$ok")?["enabled"] == false, "the suggestion did not disable '$ok'");
    Ok(())
}

#[test]
fn a_certificate_imported_without_its_ca_that_names_no_revocation_says_none() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Leaf Only CA")?;
    let leaf = ca.client("leaf only")?;
    // cert.pem + key.pem as Zuplo keeps them: the leaf alone, no CA beside it.
    let cert = sandbox.write("cert.pem", leaf.cert.pem())?;
    let key = sandbox.write("key.pem", leaf.key_pkcs8_pem())?;
    sandbox.ok(sandbox.create_args("leaf_only", &cert, Some(&key), &[]))?;
    let shown = sandbox.show_json("leaf_only")?;
    ensure!(shown["chain_length"] == 1, "{shown:#}");
    ensure!(shown["revocation"]["status"] == "not-published", "{shown:#}");
    let text = sandbox.ok(["cert", "show", "leaf_only"])?;
    ensure!(text.contains("revocation:   none"), "{text}");
    Ok(())
}

#[test]
fn store_copy_keeps_the_ids_and_refuses_an_id_the_destination_gives_another_name() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Copy Ids CA")?;
    for name in ["billing", "legacy"] {
        let (cert, key) = ca.client(name)?.write_pem_split(&sandbox, name)?;
        sandbox.ok(sandbox.create_args(name, &cert, Some(&key), &[]))?;
    }
    sandbox.ok(["cert", "disable", "legacy"])?;
    let copy = sandbox.path("copy");
    let out = sandbox.ok(["store", "copy", "--from", &text(&sandbox.store), "--to", &text(&copy)])?;
    ensure!(out.contains("copied 2 certificates"), "{out}");

    // The binary on another store than the sandbox's.
    let on_store = |store: &std::path::Path, args: &[&str]| -> Result<String> {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_edgemtls"));
        command
            .arg("--store")
            .arg(store)
            .args(args)
            .env_remove("EDGEMTLS_MASTER_KEY")
            .env_remove("EDGEMTLS_STORE")
            .current_dir(sandbox.dir());
        expect_success(command)
    };
    let ids = |store: &std::path::Path| -> Result<Vec<(String, String)>> {
        let out = on_store(store, &["cert", "list", "--json"])?;
        let value: serde_json::Value = serde_json::from_str(&out)?;
        Ok(value
            .as_array()
            .context("not a list")?
            .iter()
            .map(|c| (c["name"].as_str().unwrap_or_default().to_string(), c["id"].as_str().unwrap_or_default().to_string()))
            .collect())
    };
    let (source, copied) = (ids(&sandbox.store)?, ids(&copy)?);
    ensure!(source.len() == 2 && source == copied, "the copy has other ids:\n{source:?}\n{copied:?}");
    // A config naming a certificate by id reaches it in the copy.
    let billing_id = &source.iter().find(|(name, _)| name == "billing").context("billing")?.1;
    let shown = on_store(&copy, &["cert", "show", billing_id])?;
    ensure!(shown.contains("billing"), "{shown}");

    // The destination holds billing's id under another name (written behind edgemtls's back,
    // since nothing renames): a copy would give one id to two certificates, and is refused.
    let database = rusqlite::Connection::open(copy.join("store.db"))?;
    database.execute("UPDATE certificates SET name = 'renamed' WHERE name = 'billing'", [])?;
    drop(database);
    let stderr = sandbox.fails(
        ["store", "copy", "--from", &text(&sandbox.store), "--to", &text(&copy)],
        &format!("'billing' (its id {billing_id} is certificate 'renamed' there)"),
    )?;
    ensure!(stderr.contains("nothing was copied"), "{stderr}");
    Ok(())
}
