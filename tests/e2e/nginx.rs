//! nginx as the upstream: `ssl_verify_client on` with our dev CA.

use std::process::{Child, Command};

use edgemtls_host::Environment;

use crate::harness::*;

fn nginx_binary() -> Option<String> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"].iter().find(|p| std::path::Path::new(p).exists()).map(|p| p.to_string())
}

/// An nginx on 127.0.0.1 that requires client certificates from the world's CA, with the
/// world's upstream certificate; stopped when dropped.
pub struct Nginx {
    child: Child,
    pub addr: std::net::SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Starts nginx with `location` as the body of `location /`; `None` (and a note) when
    /// nginx is not installed.
    pub async fn start(world: &World, location: &str) -> anyhow::Result<Option<Self>> {
        Self::start_with(world, "", location).await
    }

    /// Like [`Nginx::start`], with `listen_extra` after `ssl` on the `listen` line (` http2`).
    pub async fn start_with(world: &World, listen_extra: &str, location: &str) -> anyhow::Result<Option<Self>> {
        let Some(nginx) = nginx_binary() else {
            crate::peers::missing_peer("nginx is not installed (apt-get install nginx; .ci/run installs it)");
            return Ok(None);
        };
        // The server certificate and key nginx presents.
        drop(world.upstream(true).await?); // writes upstream.pem / upstream.key
        let port = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0")?;
            socket.local_addr()?.port()
        };
        let dir = world.path();
        std::fs::create_dir_all(dir.join("nginx/logs"))?;
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx/nginx.pid;
error_log {dir}/nginx/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx/body;
    proxy_temp_path {dir}/nginx/proxy;
    fastcgi_temp_path {dir}/nginx/fastcgi;
    uwsgi_temp_path {dir}/nginx/uwsgi;
    scgi_temp_path {dir}/nginx/scgi;
    server {{
        listen 127.0.0.1:{port} ssl{listen_extra};
        server_name localhost;
        ssl_certificate {dir}/upstream.pem;
        ssl_certificate_key {dir}/upstream.key;
        ssl_client_certificate {dir}/pki/ca.pem;
        ssl_verify_client on;
        # Headers spelled with `_` are kept and fold into `$http_*` like `-` ones, as
        # CGI/WSGI servers read them: a forged `client_cert` would be read as `client-cert`.
        underscores_in_headers on;
        location / {{ {location} }}
    }}
}}
"#,
            dir = dir.display()
        );
        std::fs::write(dir.join("nginx/nginx.conf"), conf)?;
        let child = Command::new(&nginx).arg("-c").arg(dir.join("nginx/nginx.conf")).arg("-p").arg(dir.join("nginx")).spawn()?;
        let nginx = Self { child, addr: format!("127.0.0.1:{port}").parse()? };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(nginx.addr).is_err() {
            anyhow::ensure!(std::time::Instant::now() < deadline, "nginx did not start listening on {}", nginx.addr);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(Some(nginx))
    }
}

#[tokio::test]
async fn nginx_requiring_client_certificates() -> anyhow::Result<()> {
    let world = World::new()?;
    let Some(nginx) = Nginx::start(&world, r#"return 200 "nginx saw $ssl_client_s_dn\n";"#).await? else {
        return Ok(());
    };
    world.add_cert("nginx_client", "nginx-client", &all_envs())?;
    let port = nginx.addr.port();
    let config = world.config(&probe_routes("https://unused.invalid/"), nginx.addr)?;
    let host = world.serve(&config, Environment::Development).await?;
    let target = format!("https://localhost:{port}/");

    let with = host.probe(&target, Some("nginx_client")).await?;
    assert_eq!(with.status, 200, "{}", with.body);
    assert!(with.body.contains("CN=nginx-client"), "{}", with.body);

    let without = host.probe(&target, None).await?;
    assert_eq!(without.status, 400, "nginx answers 400 when no certificate was sent: {}", without.body);
    Ok(())
}

/// Issue 24: against an upstream that speaks only HTTP/1.1 and answers before reading the
/// request body, the SDK's in-guest fetch failed about one request in 500 under load (one in
/// ten on a debug build) with `502 body-error` and `StreamError::Closed` in its detail: it
/// flushed an empty request body that the upstream had stopped reading, and reported that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_guest_fetches_under_concurrency_all_succeed_against_an_http1_upstream() -> anyhow::Result<()> {
    let world = World::new()?;
    let Some(nginx) = Nginx::start(&world, r#"return 200 "nginx saw $ssl_client_s_dn\n";"#).await? else {
        return Ok(());
    };
    world.add_cert("nginx_client", "nginx-client", &all_envs())?;
    let route = format!(
        "[[routes]]\npath = \"/hello\"\nhandler = \"hello-mtls\"\n[routes.options]\nurl = \"https://localhost:{}/\"\nmtlsCertificate = \"nginx_client\"\n",
        nginx.addr.port()
    );
    let config = world.config(&route, nginx.addr)?;
    let host = std::sync::Arc::new(world.serve(&config, Environment::Development).await?);

    // 32 keep-alive callers, 25 requests each, as wrk -c32 would send them.
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for _ in 0..25 {
                    let reply = host.get("/hello", &[]).await?;
                    if reply.status != 200 || reply.body != "nginx saw O=edgemtls development,CN=nginx-client\n" {
                        failures.push(format!("{} {}", reply.status, reply.body));
                    }
                }
                anyhow::Ok(failures)
            })
        })
        .collect();
    let mut failures = Vec::new();
    for caller in callers {
        failures.extend(caller.await??);
    }
    assert!(failures.is_empty(), "{} of 800 in-guest fetches failed, first: {:?}", failures.len(), failures.first());
    Ok(())
}
