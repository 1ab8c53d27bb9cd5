//! `edgemtls build`: a JavaScript or TypeScript handler into a WebAssembly component.
//!
//! The SDK (guest-sdk/js: the `edgemtls` module, its WIT world and the build script) is
//! compiled into this binary and written to a toolchain directory, where npm installs
//! componentize-js and esbuild once. Node is needed to build, never to serve.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};
use clap::Args;

/// The npm packages the build runs, pinned: a handler builds the same way every time.
const PACKAGES: &[&str] = &["@bytecodealliance/componentize-js@0.23.0", "esbuild@0.25.12"];
/// Where the toolchain lives when `EDGEMTLS_JS_TOOLCHAIN` does not say.
const TOOLCHAIN_ENV: &str = "EDGEMTLS_JS_TOOLCHAIN";
/// Bumped when [`PACKAGES`] change, so an old toolchain is never used by mistake.
const TOOLCHAIN_NAME: &str = "js-toolchain-1";
/// The oldest Node that runs componentize-js.
const MIN_NODE_MAJOR: u32 = 18;

/// The SDK's files, as the toolchain directory holds them under `sdk/`.
const SDK_FILES: &[(&str, &str)] = &[
    ("package.json", include_str!("../../../guest-sdk/js/package.json")),
    ("index.js", include_str!("../../../guest-sdk/js/index.js")),
    ("index.d.ts", include_str!("../../../guest-sdk/js/index.d.ts")),
    ("build.mjs", include_str!("../../../guest-sdk/js/build.mjs")),
    ("wit/world.wit", include_str!("../../../guest-sdk/js/wit/world.wit")),
    ("wit/deps/mtls.wit", include_str!("../../../guest-sdk/js/wit/deps/mtls.wit")),
    ("wit/deps/cli.wit", include_str!("../../../guest-sdk/js/wit/deps/cli.wit")),
    ("wit/deps/clocks.wit", include_str!("../../../guest-sdk/js/wit/deps/clocks.wit")),
    ("wit/deps/filesystem.wit", include_str!("../../../guest-sdk/js/wit/deps/filesystem.wit")),
    ("wit/deps/http.wit", include_str!("../../../guest-sdk/js/wit/deps/http.wit")),
    ("wit/deps/io.wit", include_str!("../../../guest-sdk/js/wit/deps/io.wit")),
    ("wit/deps/random.wit", include_str!("../../../guest-sdk/js/wit/deps/random.wit")),
    ("wit/deps/sockets.wit", include_str!("../../../guest-sdk/js/wit/deps/sockets.wit")),
    ("wit/deps/config/store.wit", include_str!("../../../guest-sdk/js/wit/deps/config/store.wit")),
    ("wit/deps/config/world.wit", include_str!("../../../guest-sdk/js/wit/deps/config/world.wit")),
];

/// The TypeScript declarations of the `edgemtls` module (for `edgemtls new`).
pub const SDK_TYPES: &str = include_str!("../../../guest-sdk/js/index.d.ts");

/// Builds a JavaScript or TypeScript handler into a component `serve` runs.
#[derive(Args)]
pub struct BuildCommand {
    /// The handler: a .js, .mjs, .ts or .mts module (its default export is served).
    handler: PathBuf,
    /// Where to write the component.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

impl BuildCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let extension = self.handler.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if !matches!(extension, "js" | "mjs" | "ts" | "mts") {
            bail!(
                "'{}' is not a JavaScript or TypeScript module (.js, .mjs, .ts, .mts); a Rust handler builds with \
                 `cargo build --target wasm32-wasip2 --release`",
                self.handler.display()
            );
        }
        if !self.handler.is_file() {
            bail!("'{}' does not exist", self.handler.display());
        }
        let handler = std::fs::canonicalize(&self.handler).with_context(|| format!("reading '{}'", self.handler.display()))?;
        let output = absolute(&self.output)?;
        let toolchain = Toolchain::ready()?;
        let status = Command::new("node")
            .arg(toolchain.dir.join("sdk").join("build.mjs"))
            .arg(&handler)
            .arg(&output)
            .current_dir(handler.parent().unwrap_or(Path::new(".")))
            .stdin(Stdio::null())
            .status()
            .context("running node")?;
        if !status.success() {
            bail!("building '{}' failed (the reason is above)", self.handler.display());
        }
        mark_reusable(&output)?;
        precompile(&output);
        Ok(ExitCode::SUCCESS)
    }
}

/// Marks the component as one that serves request after request on an instance (the SDK's
/// incoming handler), so that routes reuse its instances by default.
fn mark_reusable(component: &Path) -> anyhow::Result<()> {
    let built = std::fs::read(component).with_context(|| format!("reading '{}'", component.display()))?;
    let Some(marked) = edgemtls_host::config::with_reuse_mark(&built) else {
        bail!("'{}' is not a WebAssembly component: componentize-js wrote something else", component.display());
    };
    std::fs::write(component, marked).with_context(|| format!("writing '{}'", component.display()))
}

/// Compiles the component once, as `serve` would, so that the compile cache holds its code
/// and the first `serve` loads it instead of compiling some 12 MiB of JavaScript engine
/// (tens of seconds on a debug build). The component is already built: a failure here only
/// means `serve` compiles it itself, so it is a note, not an error.
fn precompile(component: &Path) {
    let started = std::time::Instant::now();
    let compiled = edgemtls_host::runtime::Runtime::new(edgemtls_host::config::Limits::default())
        .map_err(|error| format!("{error:#}"))
        .and_then(|runtime| runtime.load(component).map(drop).map_err(|error| error.to_string()));
    match compiled {
        Ok(()) => println!("compiled it for serve in {:.1} s (kept in the compile cache)", started.elapsed().as_secs_f64()),
        Err(reason) => eprintln!("note: not compiled ahead of serve ({reason}); serve compiles it at start"),
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir().context("the working directory")?.join(path))
}

/// The directory with the SDK and its npm packages, made ready (once) by [`Toolchain::ready`].
struct Toolchain {
    dir: PathBuf,
}

impl Toolchain {
    fn ready() -> anyhow::Result<Self> {
        check_node()?;
        let dir = match std::env::var_os(TOOLCHAIN_ENV) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => edgemtls_host::files::cache_home()
                .ok_or_else(|| anyhow::anyhow!("no HOME to keep the JavaScript toolchain in: set {TOOLCHAIN_ENV} to a directory"))?
                .join("edgemtls")
                .join(TOOLCHAIN_NAME),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating the toolchain directory '{}'", dir.display()))?;
        // One build at a time prepares the directory; others wait here rather than race npm.
        let lock = std::fs::File::create(dir.join(".lock")).with_context(|| format!("locking '{}'", dir.display()))?;
        lock.lock().with_context(|| format!("locking '{}'", dir.display()))?;
        for (path, contents) in SDK_FILES {
            let target = dir.join("sdk").join(path);
            if std::fs::read_to_string(&target).ok().as_deref() != Some(*contents) {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).with_context(|| format!("creating '{}'", parent.display()))?;
                }
                std::fs::write(&target, contents).with_context(|| format!("writing '{}'", target.display()))?;
            }
        }
        let installed = dir.join("node_modules").join("@bytecodealliance").join("componentize-js").join("package.json");
        let esbuild = dir.join("node_modules").join("esbuild").join("package.json");
        if !installed.is_file() || !esbuild.is_file() {
            install(&dir)?;
        }
        Ok(Self { dir })
    }
}

fn check_node() -> anyhow::Result<()> {
    let missing = || {
        anyhow::anyhow!(
            "edgemtls build needs Node.js {MIN_NODE_MAJOR} or later with npm to build JavaScript and TypeScript handlers \
             (serving them does not): install it, for example `apt-get install nodejs npm`"
        )
    };
    let output = Command::new("node").arg("--version").stdin(Stdio::null()).output().map_err(|_| missing())?;
    let version = String::from_utf8_lossy(&output.stdout);
    let major: u32 = version.trim().trim_start_matches('v').split('.').next().and_then(|m| m.parse().ok()).ok_or_else(missing)?;
    if major < MIN_NODE_MAJOR {
        bail!("edgemtls build needs Node.js {MIN_NODE_MAJOR} or later; this one is {}", version.trim());
    }
    Ok(())
}

/// Installs the pinned npm packages into `dir` (once per toolchain version).
fn install(dir: &Path) -> anyhow::Result<()> {
    eprintln!("installing the JavaScript build tools into {} (once): {}", dir.display(), PACKAGES.join(", "));
    std::fs::write(dir.join("package.json"), "{\"private\": true, \"type\": \"module\"}\n")
        .with_context(|| format!("writing '{}'", dir.join("package.json").display()))?;
    let mut child = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel", "error"])
        .args(PACKAGES)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|_| anyhow::anyhow!("npm is missing: install Node.js with npm (for example `apt-get install nodejs npm`)"))?;
    let mut errors = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut errors);
    }
    if !child.wait().context("waiting for npm")?.success() {
        let tail: Vec<&str> = errors.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect();
        bail!(
            "npm could not install {}:\n{}\nrun `npm install {}` in {} yourself, or point {TOOLCHAIN_ENV} at a directory where they are installed",
            PACKAGES.join(", "),
            tail.join("\n"),
            PACKAGES.join(" "),
            dir.display()
        );
    }
    eprintln!("installed the JavaScript build tools in {}", dir.display());
    Ok(())
}
