//! A directory store whose files are not as the store left them: on a read-only mount, on a
//! full disk, damaged in the middle, or emptied beside its master key. The mounts are real
//! (a read-only bind mount, a small tmpfs filled up), made in a mount namespace of the test's
//! own; without root and `unshare` those tests skip, saying so.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Output, Stdio};

use anyhow::{Context, Result, ensure};

use super::common::*;

/// Every file of a store directory and its bytes.
fn files(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        files.insert(entry.file_name().to_string_lossy().into_owned(), std::fs::read(entry.path())?);
    }
    Ok(files)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Makes the store directory a read-only bind mount of itself, checks that it is, then runs
/// the binary on it with `"$@"`.
const READ_ONLY_MOUNT: &str = r#"
mount --bind "$STORE" "$STORE" && mount -o remount,bind,ro "$STORE" || exit 97
if touch "$STORE/probe" 2>/dev/null; then echo "the mount is writable" >&2; exit 98; fi
exec "$EDGEMTLS" --store "$STORE" "$@"
"#;

fn on_read_only_mount(sandbox: &Sandbox, args: &[&str]) -> Result<Output> {
    let out = in_mount_namespace(sandbox, READ_ONLY_MOUNT, args).output()?;
    ensure!(!matches!(out.status.code(), Some(97 | 98)), "the read-only mount did not work:\n{}", describe(&out));
    Ok(out)
}

#[test]
fn a_store_on_a_read_only_mount_is_read_and_writes_say_it_is_read_only() -> Result<()> {
    let sandbox = Sandbox::new()?;
    if !can_mount(&sandbox, "a_store_on_a_read_only_mount_is_read_and_writes_say_it_is_read_only") {
        return Ok(());
    }
    let ca = TestCa::new("Read Only Mount CA")?;
    for name in ["alpha", "beta"] {
        let (cert, key) = ca.client(name)?.write_pem_split(&sandbox, name)?;
        sandbox.ok(sandbox.create_args(name, &cert, Some(&key), &[]))?;
    }
    let before = files(&sandbox.store)?;

    let listed = on_read_only_mount(&sandbox, &["cert", "list", "--json"])?;
    ensure!(listed.status.success(), "{}", describe(&listed));
    let listing: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout)?;
    let names: Vec<&str> = listing.iter().filter_map(|c| c["name"].as_str()).collect();
    ensure!(names == ["alpha", "beta"], "{names:?}");
    let status = on_read_only_mount(&sandbox, &["cert", "status", "--offline"])?;
    ensure!(status.status.success() && String::from_utf8_lossy(&status.stdout).contains("alpha"), "{}", describe(&status));
    let shown = on_read_only_mount(&sandbox, &["cert", "show", "beta", "--json"])?;
    ensure!(shown.status.success() && String::from_utf8_lossy(&shown.stdout).contains("\"beta\""), "{}", describe(&shown));

    // Writes say the store is read-only, which one, and where to run them.
    let store = text(&sandbox.store);
    let (cert, key) = ca.client("gamma")?.write_pem_split(&sandbox, "gamma")?;
    for args in
        [vec!["cert", "disable", "alpha"], sandbox.create_args("gamma", &cert, Some(&key), &[]).iter().map(String::as_str).collect()]
    {
        let refused = on_read_only_mount(&sandbox, &args)?;
        let err = stderr(&refused);
        ensure!(!refused.status.success(), "{args:?} succeeded on a read-only mount:\n{}", describe(&refused));
        ensure!(
            err.contains(&format!("the store in '{store}' is read-only here"))
                && err.contains("run the command where the store is writable"),
            "{args:?}: {err}"
        );
    }
    ensure!(files(&sandbox.store)? == before, "the store's files changed");
    Ok(())
}

#[test]
fn a_read_only_store_whose_changes_wait_in_its_wal_says_how_to_fold_them() -> Result<()> {
    let mut sandbox = Sandbox::new()?;
    if !can_mount(&sandbox, "a_read_only_store_whose_changes_wait_in_its_wal_says_how_to_fold_them") {
        return Ok(());
    }
    let ca = TestCa::new("Pending WAL CA")?;
    sandbox.with_existing_cert(&ca)?;
    // A copy taken while a writer had a change in the WAL, not yet in store.db, and without
    // the writer's shared-memory index: reading it needs an index SQLite must create.
    let copy = sandbox.path("copy");
    std::fs::create_dir(&copy)?;
    let writer = rusqlite::Connection::open(sandbox.store.join("store.db"))?;
    writer.pragma_update(None, "wal_autocheckpoint", 0)?;
    writer.execute("UPDATE store_meta SET value = value + 1 WHERE key = 'generation'", [])?;
    for file in ["store.db", "store.db-wal", "master.key"] {
        std::fs::copy(sandbox.store.join(file), copy.join(file))?;
    }
    drop(writer);
    ensure!(std::fs::metadata(copy.join("store.db-wal"))?.len() > 0, "the copy has no WAL content");
    sandbox.store = copy;

    let refused = on_read_only_mount(&sandbox, &["cert", "list"])?;
    let err = stderr(&refused);
    ensure!(
        !refused.status.success()
            && err.contains(&format!(
                "the store in '{}' is read-only here and its latest changes are still in store.db-wal",
                text(&sandbox.store)
            ))
            && err.contains("run any edgemtls command on the store once where it is writable"),
        "{}",
        describe(&refused)
    );
    // Done where it is writable, the changes are folded in, and the read-only mount reads it.
    sandbox.ok(["cert", "list"])?;
    ensure!(!sandbox.store.join("store.db-wal").exists(), "the WAL is still there");
    let listed = on_read_only_mount(&sandbox, &["cert", "list"])?;
    ensure!(listed.status.success() && String::from_utf8_lossy(&listed.stdout).contains("existing"), "{}", describe(&listed));
    Ok(())
}

#[test]
fn serve_answers_from_a_store_on_a_read_only_mount() -> Result<()> {
    let sandbox = Sandbox::new()?;
    if !can_mount(&sandbox, "serve_answers_from_a_store_on_a_read_only_mount") {
        return Ok(());
    }
    let (pki, _upstream, upstream_port) = dev_pki_and_upstream(&sandbox, &["reader"])?;
    sandbox.ok([
        "cert",
        "create",
        "--name",
        "reader",
        "--cert",
        &format!("{pki}/reader.pem"),
        "--key",
        &format!("{pki}/reader.key"),
        "--env",
        "development",
    ])?;
    let config = sandbox.path("edgemtls.toml");
    std::fs::write(&config, hello_mtls_config("reader", upstream_port))?;
    let before = files(&sandbox.store)?;
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let log = sandbox.path("serve.log");
    let serve =
        in_mount_namespace(&sandbox, READ_ONLY_MOUNT, &["serve", "--config", &text(&config), "--env", "development", "--listen", &listen])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
    let serve = Running(serve);
    wait_for(port).with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
    let (status, body) = http_get(port, "/hello")?;
    ensure!(status == 200 && body.contains("\"client_cn\":\"reader\""), "{status} {body}");
    drop(serve);
    ensure!(files(&sandbox.store)? == before, "the store's files changed");
    Ok(())
}

/// Puts the store (`disk/store` in the sandbox) on a 1 MiB tmpfs, runs `$PREPARE`, fills the
/// disk to the last block and checks that it is full, then runs the binary with `"$@"` and
/// fails with 99 if `store.db` changed.
const FULL_DISK: &str = r#"
rm -rf disk.orig && cp -a disk disk.orig && mount -t tmpfs -o size=1m tmpfs disk && cp -a disk.orig/. disk/ || exit 97
eval "$PREPARE"
dd if=/dev/zero of=disk/fill bs=4k 2>/dev/null
if [ "$(df --output=avail disk | tail -n 1)" -ne 0 ]; then echo "the disk is not full" >&2; exit 98; fi
"$EDGEMTLS" --store "$STORE" "$@"
status=$?
cmp -s disk/store/store.db disk.orig/store/store.db || { echo "store.db changed" >&2; exit 99; }
exit $status
"#;

fn on_full_disk(sandbox: &Sandbox, prepare: &str, args: &[&str]) -> Result<Output> {
    let out = in_mount_namespace(sandbox, FULL_DISK, args).env("PREPARE", prepare).output()?;
    ensure!(!matches!(out.status.code(), Some(97..=99)), "{}", describe(&out));
    Ok(out)
}

#[test]
fn a_store_on_a_full_disk_is_read_and_writes_say_the_disk_is_full() -> Result<()> {
    let mut sandbox = Sandbox::new()?;
    if !can_mount(&sandbox, "a_store_on_a_full_disk_is_read_and_writes_say_the_disk_is_full") {
        return Ok(());
    }
    sandbox.store = sandbox.path("disk/store");
    let ca = TestCa::new("Full Disk CA")?;
    for name in ["alpha", "beta"] {
        let (cert, key) = ca.client(name)?.write_pem_split(&sandbox, name)?;
        sandbox.ok(sandbox.create_args(name, &cert, Some(&key), &[]))?;
    }
    let (cert, key) = ca.client("gamma")?.write_pem_split(&sandbox, "gamma")?;
    let create = sandbox.create_args("gamma", &cert, Some(&key), &[]);
    let create: Vec<&str> = create.iter().map(String::as_str).collect();
    let full = format!("the disk holding the store in '{}' is full: free some space on it", text(&sandbox.store));

    // An idle store has no shared-memory index, and there is no room to make one: it is
    // read without, and a write says the disk is full (SQLITE_IOERR_SHMSIZE).
    // With the index a crashed writer leaves behind, the write itself finds no room (SQLITE_FULL).
    let crashed_writer_index = "dd if=/dev/zero of=disk/store/store.db-shm bs=32k count=1 2>/dev/null";
    for prepare in ["", crashed_writer_index] {
        let listed = on_full_disk(&sandbox, prepare, &["cert", "list", "--json"])?;
        ensure!(listed.status.success(), "{prepare:?}: {}", describe(&listed));
        let listing: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout)?;
        ensure!(listing.len() == 2, "{prepare:?}: {listing:?}");

        let refused = on_full_disk(&sandbox, prepare, &create)?;
        let err = stderr(&refused);
        ensure!(!refused.status.success() && err.contains(&full) && !err.contains("Error code"), "{prepare:?}: {}", describe(&refused));
    }
    Ok(())
}

/// Overwrites 4 KiB in the middle of `file` (on a page boundary) with bytes no SQLite page has.
fn damage_the_middle(file: &Path) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let length = std::fs::metadata(file)?.len();
    let middle = length / 2 / 4096 * 4096;
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 37 + 11) as u8).collect();
    let mut handle = std::fs::OpenOptions::new().write(true).open(file)?;
    handle.seek(SeekFrom::Start(middle))?;
    handle.write_all(&garbage)?;
    handle.sync_all()?;
    Ok(())
}

#[test]
fn a_damaged_store_refuses_writes_and_changes_nothing() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Damaged Store CA")?;
    let names: Vec<String> = (1..=12).map(|i| format!("client{i}")).collect();
    for name in &names {
        let (cert, key) = ca.client(name)?.write_pem_split(&sandbox, name)?;
        sandbox.ok(sandbox.create_args(name, &cert, Some(&key), &[]))?;
    }
    let database = sandbox.store.join("store.db");
    // Two records to a 4 KiB page: the middle of the file is records, not free space.
    let pages = std::fs::metadata(&database)?.len() / 4096;
    ensure!(pages >= 10, "store.db has only {pages} pages");
    damage_the_middle(&database)?;
    let before = files(&sandbox.store)?;

    let damaged = format!("the store database '{}' is damaged", text(&database));
    let store_copy = format!("edgemtls store copy --from {} --to NEW_DIR", text(&sandbox.store));
    let (cert, key) = ca.client("late")?.write_pem_split(&sandbox, "late")?;
    let create = sandbox.create_args("late", &cert, Some(&key), &[]);
    for attempt in 1..=4 {
        let err = sandbox.fails(&create, &damaged)?;
        ensure!(err.contains("restore it from a backup") && err.contains(&store_copy) && !err.contains("Error code"), "{err}");
        ensure!(files(&sandbox.store)? == before, "attempt {attempt} changed the store's files");
    }
    for args in [vec!["cert", "disable", "client3"], vec!["cert", "update", "client4", "--env", "development", "--env", "preview"]] {
        sandbox.fails(&args, &damaged)?;
    }
    ensure!(files(&sandbox.store)? == before, "the store's files changed");

    // Reads that reach the damaged page say the same in words, not SQLite's code.
    for args in [vec!["cert", "list"], vec!["cert", "status", "--offline"]] {
        let out = sandbox.run(&args)?;
        let err = stderr(&out);
        ensure!(out.status.success() || err.contains(&damaged) && !err.contains("Error code"), "{args:?}: {}", describe(&out));
    }
    Ok(())
}

#[test]
fn an_empty_or_missing_database_beside_its_master_key_is_refused_as_lost() -> Result<()> {
    let sandbox = Sandbox::new()?;
    let ca = TestCa::new("Lost Store CA")?;
    sandbox.with_existing_cert(&ca)?;
    let database = sandbox.store.join("store.db");
    let key_file = sandbox.store.join("master.key");
    let (cert, key) = ca.client("late")?.write_pem_split(&sandbox, "late")?;
    let create = sandbox.create_args("late", &cert, Some(&key), &[]);

    std::fs::write(&database, "")?;
    let before = files(&sandbox.store)?;
    let lost = format!(
        "the store database '{}' is empty (0 bytes), but the master key '{}' beside it shows a store was made here",
        text(&database),
        text(&key_file)
    );
    for args in [vec!["cert", "status", "--offline"], vec!["cert", "list"], vec!["cert", "show", "existing"]] {
        let err = sandbox.fails(&args, &lost)?;
        ensure!(err.contains("restored from a backup"), "{err}");
    }
    sandbox.fails(&create, &lost)?;
    ensure!(files(&sandbox.store)? == before, "the store's files changed");

    std::fs::remove_file(&database)?;
    let missing = format!("the store database '{}' is missing, but the master key", text(&database));
    sandbox.fails(["cert", "status", "--offline"], &missing)?;
    sandbox.fails(["cert", "list"], &missing)?;
    sandbox.fails(&create, &missing)?;
    ensure!(!database.exists(), "a new store.db was made beside the old key");
    Ok(())
}
