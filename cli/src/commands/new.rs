//! `edgemtls new NAME --lang ts|js|rust`: a handler project that builds and serves as it is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// The language of a new handler.
#[derive(Clone, Copy, ValueEnum)]
pub enum Lang {
    /// TypeScript, built with `edgemtls build`.
    Ts,
    /// JavaScript, built with `edgemtls build`.
    Js,
    /// Rust, built with cargo for wasm32-wasip2.
    Rust,
}

/// Makes a handler project: the handler, an edgemtls.toml that serves it, and how to build.
#[derive(Args)]
pub struct NewCommand {
    /// The project's name (a new directory of that name).
    name: String,
    /// The handler's language.
    #[arg(long, value_enum, default_value = "ts")]
    lang: Lang,
}

impl NewCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let valid = !self.name.is_empty()
            && self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && self.name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if !valid {
            bail!("'{}' is not a usable project name: use letters, digits, '-' and '_', starting with a letter", self.name);
        }
        let dir = PathBuf::from(&self.name);
        if dir.exists() {
            bail!("'{}' already exists; pick another name or remove it (nothing was written)", dir.display());
        }
        let wasm = match self.lang {
            Lang::Ts | Lang::Js => "handler.wasm".to_string(),
            Lang::Rust => format!("target/wasm32-wasip2/release/{}.wasm", self.name.replace('-', "_")),
        };
        let mut files: Vec<(PathBuf, String)> = vec![(dir.join("edgemtls.toml"), config(&wasm))];
        let handler_file = match self.lang {
            Lang::Ts => "handler.ts",
            Lang::Js => "handler.js",
            Lang::Rust => "src/lib.rs",
        };
        let build = match self.lang {
            Lang::Ts => {
                files.push((dir.join("handler.ts"), HANDLER_TS.to_string()));
                files.push((dir.join("tsconfig.json"), TSCONFIG.to_string()));
                files.push((dir.join("types/edgemtls/index.d.ts"), super::build::SDK_TYPES.to_string()));
                "edgemtls build handler.ts -o handler.wasm".to_string()
            }
            Lang::Js => {
                files.push((dir.join("handler.js"), HANDLER_TS.replace(": Request", "").replace(": Promise<Response>", "")));
                "edgemtls build handler.js -o handler.wasm".to_string()
            }
            Lang::Rust => {
                files.push((dir.join("Cargo.toml"), cargo_toml(&self.name)));
                files.push((dir.join("src/lib.rs"), HANDLER_RS.to_string()));
                "cargo build --target wasm32-wasip2 --release".to_string()
            }
        };
        files.push((dir.join("README.md"), readme(&self.name, handler_file, &build)));
        for (path, contents) in &files {
            write(path, contents)?;
        }
        say!(
            "created {}/ ({} handler). Next:",
            dir.display(),
            match self.lang {
                Lang::Ts => "TypeScript",
                Lang::Js => "JavaScript",
                Lang::Rust => "Rust",
            }
        );
        say!("  cd {}", dir.display());
        say!("  {build}");
        say!("  edgemtls serve --config edgemtls.toml --env development");
        say!("  curl http://127.0.0.1:8080/hello");
        say!(
            "edgemtls.toml points the handler at https://localhost:8443/ with certificate 'billing_dev'; change them to yours (README.md says how to add certificates)."
        );
        Ok(ExitCode::SUCCESS)
    }
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating '{}'", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing '{}'", path.display()))
}

/// The project's README: build, store the certificate, serve, and how to use more certificates.
fn readme(name: &str, handler_file: &str, build: &str) -> String {
    format!(
        r#"# {name}

An edgemtls handler ({handler_file}): it calls the route's `url` option over mutual TLS,
presenting the certificate the stage's `BACKEND_MTLS_CERT` variable names.

```sh
{build}
edgemtls cert create --name billing_dev --cert client.pem --key client.key --env development
edgemtls serve --config edgemtls.toml --env development
curl http://127.0.0.1:8080/hello
```

## Certificates

A route lists the certificates its handler presents in `certificates` (edgemtls.toml):

```toml
certificates = ["$env(BACKEND_MTLS_CERT)"]
```

`edgemtls serve` and `edgemtls check` refuse to start when one of them is missing, disabled,
expired or not scoped to the environment, and `edgemtls cert disable`, `update` and `delete`
refuse to take one away while this handler serves. To present another certificate, store it
(`edgemtls cert create --name NAME ...`), name it in the handler (`mtlsCertificate`, or a
variable under `[environments.<stage>.vars]`), and add it to the route's list:

```toml
certificates = ["$env(BACKEND_MTLS_CERT)", "$env(REPORTS_MTLS_CERT)"]
```

A name left out of the list is not protected: it can be disabled while the handler serves,
and the handler's next request with it fails.
"#
    )
}

fn config(wasm: &str) -> String {
    // A component file gets a fresh instance per request unless its route says otherwise;
    // these handlers keep no state between requests, and a JavaScript one (12 MiB of
    // SpiderMonkey) costs several times more per request when it is not reused.
    format!(
        r#"# Serve with: edgemtls serve --config edgemtls.toml --env development
listen = "127.0.0.1:8080"

# The certificate each stage presents upstream (edgemtls cert list shows the names).
[environments.development.vars]
BACKEND_MTLS_CERT = "billing_dev"

[environments.production.vars]
BACKEND_MTLS_CERT = "billing_prod"

[[routes]]
path = "/hello"
handler = "{wasm}"
# The certificates this handler presents: checked when it starts, and `edgemtls cert disable`
# refuses them while it serves. A handler that presents more lists them all here.
certificates = ["$env(BACKEND_MTLS_CERT)"]
max_requests_per_instance = 1000
[routes.options]
url = "https://localhost:8443/"

# The upstream's CA, when it is not a public one:
# [[upstreams]]
# hosts = ["localhost:8443"]
# ca_bundle = "pki/ca.pem"
"#
    )
}

const HANDLER_TS: &str = r#"// An edgemtls handler: fetches the route's `url` option, presenting the client certificate
// the stage's BACKEND_MTLS_CERT variable names, and returns the upstream's answer.
import { environment, options, CertificateError } from "edgemtls";

export default async function (request: Request): Promise<Response> {
  const url = options.get("url") ?? "https://localhost:8443/";
  try {
    const upstream = await fetch(url, { mtlsCertificate: environment.BACKEND_MTLS_CERT });
    return new Response(upstream.body, { status: upstream.status, headers: upstream.headers });
  } catch (error) {
    if (error instanceof CertificateError) {
      return new Response(`${error.message}\n`, { status: 502 });
    }
    throw error;
  }
}
"#;

const TSCONFIG: &str = r#"{
  "compilerOptions": {
    "target": "es2022",
    "module": "es2022",
    "moduleResolution": "bundler",
    "strict": true,
    "noEmit": true,
    "lib": ["es2022", "dom"],
    "paths": { "edgemtls": ["./types/edgemtls/index.d.ts"] }
  },
  "include": ["*.ts"]
}
"#;

const HANDLER_RS: &str = r#"//! An edgemtls handler: fetches the route's `url` option, presenting the client certificate
//! the stage's BACKEND_MTLS_CERT variable names, and returns the upstream's answer.

use edgemtls_guest::{IncomingRequest, Request, Response};

struct Handler;

impl edgemtls_guest::Handler for Handler {
    fn handle(_request: IncomingRequest) -> Response {
        let url = edgemtls_guest::config("url").unwrap_or_else(|| "https://localhost:8443/".into());
        let certificate = std::env::var("BACKEND_MTLS_CERT").unwrap_or_default();
        match Request::get(&url).mtls_certificate(&certificate).send() {
            Ok(upstream) => Response::new(upstream.status).with_body(upstream.body),
            Err(error) => error.into_response(),
        }
    }
}

edgemtls_guest::handler!(Handler);
"#;

fn cargo_toml(name: &str) -> String {
    // The guest SDK is not on crates.io yet: point at the copy this edgemtls was built from.
    let sdk = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("guest-sdk");
    let sdk = std::fs::canonicalize(&sdk).unwrap_or(sdk);
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
edgemtls-guest = {{ path = "{}" }}

[profile.release]
opt-level = "s"
"#,
        sdk.display()
    )
}
