#!/usr/bin/env python3
"""edgemtls benchmarks against nginx, `wasmtime serve` and a native hyper+rustls proxy.

One command builds everything, starts every peer on 127.0.0.1, runs the scenarios with wrk,
checks correctness while it measures (status codes, body sizes, which client certificate
the upstream saw) and writes bench/results/latest.{md,json} with ratios. It fails loudly
instead of reporting a number from a broken run. See bench/README.md.

    python3 bench/run.py            # full run (release build, minutes)
    python3 bench/run.py --smoke    # a few seconds per scenario, debug build (CI)
"""

import argparse
import base64
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
CLIENT_CN = "bench-client"
# The JSON document the HTTP/1.1 upstream serves for the JavaScript handler that rewrites it.
H1_JSON = {"items": [{"id": i, "name": f"item {i}", "ok": True} for i in range(20)]}
# The S3 upstream edgemtls reaches with `tls_versions = ["1.2"]`.
TLS12_UPSTREAM = "resumption-tls12"
# The busy work the calibration row adds to each request of the native proxy, in µs.
CALIBRATION_SPIN_US = 12
# SoftHSM2, the PKCS#11 token of the token-key rows, and the PIN of the bench's throwaway token.
SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_PIN = "bench-pin-1234"


class Postgres:
    """A throwaway PostgreSQL from the Debian package (as the postgres user when root)."""

    PASSWORD = "edgemtls-bench"

    def __init__(self, workdir, bindir, port):
        self.workdir, self.bindir, self.port = workdir, bindir, port

    @classmethod
    def start(cls, workdir):
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
        if not found:
            return None
        bindir = found[-1].parent
        root = workdir / "postgres"
        data, sockets = root / "data", root / "sockets"
        for d in (data, sockets):
            d.mkdir(parents=True)
        (root / "password").write_text(cls.PASSWORD)
        as_postgres = os.geteuid() == 0
        if as_postgres:
            os.chmod(workdir, 0o755)
            os.chmod(root, 0o755)
            for path in (data, sockets, root / "password"):
                shutil.chown(path, "postgres")
        pg = cls(workdir, bindir, free_port())
        pg.as_postgres, pg.data, pg.sockets = as_postgres, data, sockets
        pg.run("initdb", "-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
               "--pwfile", root / "password", "-E", "UTF8", "--no-sync")
        pg.run("pg_ctl", "-D", data, "-l", sockets / "server.log", "-w", "-o",
               f"-c listen_addresses=127.0.0.1 -p {pg.port} -k {sockets}", "start")
        return pg

    def run(self, program, *args):
        cmd = [str(self.bindir / program), *[str(a) for a in args]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, cwd="/")
        if done.returncode != 0:
            said = (done.stderr or done.stdout).decode(errors="replace").strip()
            raise BenchError(f"PostgreSQL's {program} failed (exit {done.returncode}): {said}")

    def create_database(self, name):
        subprocess.run([str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                        "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True, env={**os.environ, "PGPASSWORD": self.PASSWORD})
        return f"postgres://postgres:{self.PASSWORD}@127.0.0.1:{self.port}/{name}"

    def stop(self):
        self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")


class BenchError(Exception):
    """A broken run: never report its numbers."""


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"process {proc.args[0]} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def forward_route(path, upstream_port, certificate, handler="url-forward", extra=""):
    """A `[[routes]]` entry that forwards `path` to the upstream on `upstream_port`, presenting
    `certificate`; `extra` holds more route keys, one per line."""
    return f"""
[[routes]]
path = "{path}"
handler = "{handler}"
{extra}[routes.options]
baseUrl = "https://localhost:{upstream_port}"
mtlsCertificate = "{certificate}"
"""


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads)."""
    user, system = cpu_split(pid)
    return user + system


def cpu_split(pid):
    """User and system CPU time of a process (all its threads), apart."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def nginx_head(d):
    """The start of an nginx.conf for one process in one worker (all its CPU time in one PID),
    with its pid, logs and temporary files under `d`; the `http {` block is left open."""
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
"""


def http_get(port, path, headers=None):
    """A plain HTTP/1.1 GET (no client library); returns (status, body bytes)."""
    headers = headers or {}
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        decoded, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2:]
        body = decoded
    return status, body


class Processes:
    """Starts processes and stops them all at the end."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def start(self, name, cmd, port=None, env=None, cwd=None):
        log_file = open(self.workdir / f"{name}.log", "w")
        proc = subprocess.Popen(
            [str(c) for c in cmd], stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, cwd=cwd or self.workdir, start_new_session=True,
        )
        proc.name = name
        self.procs.append(proc)
        if port is not None:
            try:
                wait_port(port, proc)
            except BenchError:
                log_file.flush()
                raise BenchError(f"{name} did not start: {(self.workdir / f'{name}.log').read_text()[-2000:]}")
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self):
        for proc in list(self.procs):
            self.stop(proc)


WRK_SCRIPT = r"""
local threads = {}
local expected = tonumber(os.getenv("BENCH_EXPECT_BYTES") or "-1")
local fanout = tonumber(os.getenv("BENCH_FANOUT") or "0")
local target = os.getenv("BENCH_TARGET") or ""
local style = os.getenv("BENCH_STYLE") or ""
local counter = 0
bad_bodies = 0
bad_status = 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  counter = id * 7919
end

function request()
  if fanout > 0 then
    counter = counter + 1
    local i = counter % fanout
    local h = { ["x-expect-cn"] = "id-cn-" .. i }
    if style == "edgemtls" then
      h["x-certificate"] = "id" .. i
      h["x-target"] = target
    else
      h["x-cert"] = "id" .. i
    end
    return wrk.format(nil, nil, h)
  end
  return wrk.format()
end

function response(status, headers, body)
  if status ~= 200 then bad_status = bad_status + 1 end
  if expected >= 0 and #body ~= expected then bad_bodies = bad_bodies + 1 end
end

function done(summary, latency, requests)
  local bodies, statuses = 0, 0
  for _, t in ipairs(threads) do
    bodies = bodies + t:get("bad_bodies")
    statuses = statuses + t:get("bad_status")
  end
  io.write(string.format("BENCH_BAD_BODIES %d\nBENCH_BAD_STATUS %d\n", bodies, statuses))
  io.write(string.format("BENCH_P50_US %d\nBENCH_P99_US %d\n", latency:percentile(50), latency:percentile(99)))
end
"""


class Bench:
    def __init__(self, args):
        self.args = args
        self.smoke = args.smoke
        self.duration = args.duration or (1 if self.smoke else 8)
        self.connections = args.connections
        # Threads each system serves with: nginx runs one worker process (master_process off),
        # so edgemtls (--workers), the native proxy and wasmtime serve (TOKIO_WORKER_THREADS)
        # get as many.
        self.workers = getattr(args, "workers", 1)
        self.profile = "debug" if self.smoke else "release"
        self.workdir = Path(tempfile.mkdtemp(prefix="edgemtls-bench-"))
        self.procs = Processes(self.workdir)
        self.results = {"scenarios": [], "notes": []}
        self.token_env = None
        self.bin = ROOT / "target" / self.profile
        self.guests = ROOT / "target" / "wasm32-wasip2" / "release"
        self.wrk_script = self.workdir / "check.lua"
        self.wrk_script.write_text(WRK_SCRIPT)

    # ---------------------------------------------------------------- setup

    def build(self):
        profile_flag = [] if self.profile == "debug" else ["--release"]
        log(f"building ({self.profile})")
        subprocess.run(["cargo", "build", "-q", *profile_flag, "-p", "edgemtls", "-p", "edgemtls-bench"], cwd=ROOT, check=True)
        subprocess.run(["cargo", "build", "-q", "--release", "--target", "wasm32-wasip2", "-p", "bench-constant", "-p", "mtls-probe",
                        "-p", "url-forward"], cwd=ROOT, check=True)
        self.build_js()

    def build_js(self):
        """The JavaScript twin of mtls-probe, built with `edgemtls build` (needs Node.js)."""
        self.js_probe = None
        self.js_handlers = {}
        if not (shutil.which("node") and shutil.which("npm")):
            self.results["notes"].append("JavaScript rows: Node.js is not installed here, so the JS handler was not built")
            return
        output = self.workdir / "js_probe.wasm"
        started = time.perf_counter()
        subprocess.run([str(self.bin / "edgemtls"), "build", str(ROOT / "bench" / "guests-js" / "probe.ts"), "-o", str(output)],
                       check=True, capture_output=True, text=True)
        self.results["js_component"] = {"size_mib": output.stat().st_size / 1048576,
                                        "build_seconds": time.perf_counter() - started}
        self.js_probe = output
        # The handlers of the HTTP/1.1 rows: fetch-and-return as Zuplo's guide writes it, one
        # that reads and rewrites the JSON answer, and one that does nothing (the floor).
        self.js_handlers = {}
        for name in ["forward", "json", "empty"]:
            built = self.workdir / f"js_{name}.wasm"
            subprocess.run([str(self.bin / "edgemtls"), "build", str(ROOT / "bench" / "guests-js" / f"{name}.ts"), "-o", str(built)],
                           check=True, capture_output=True, text=True)
            self.js_handlers[name] = built

    def edgemtls(self, *args, store=None):
        cmd = [self.bin / "edgemtls"]
        if store:
            cmd += ["--store", store]
        return subprocess.run([str(c) for c in cmd + list(args)], cwd=self.workdir, check=True, capture_output=True, text=True).stdout

    def make_pki(self):
        pki = self.workdir / "pki"
        self.edgemtls("pki", "init", "--out", pki)
        self.edgemtls("pki", "issue", "--ca", pki, "--cn", CLIENT_CN, "--out", pki)
        self.edgemtls("pki", "issue", "--ca", pki, "--cn", "localhost", "--server", "--san", "localhost", "--out", pki)
        self.pki = pki
        self.store = self.workdir / "store"
        self.edgemtls("cert", "create", "--name", "bench_client", "--cert", pki / f"{CLIENT_CN}.pem",
                      "--key", pki / f"{CLIENT_CN}.key", "--env", "production", store=self.store)
        count = 16 if self.smoke else 1024
        self.fanout_files = self.workdir / "identities"
        out = subprocess.run([str(self.bin / "bench-tool"), "populate", "--store", str(self.store), "--ca", str(pki),
                              "--count", str(count), "--prefix", "id", "--write-files", str(self.fanout_files)],
                             check=True, capture_output=True, text=True).stdout
        log(f"identities: {out.strip()}")
        self.fanout_count = count
        self.make_token()

    def make_token(self):
        """The client certificate once more as `bench_token`, its key held in a SoftHSM2 token
        (PKCS#11): the same certificate, so the same upstream checks confirm it, signing each
        handshake through the token."""
        self.token_env = None
        util = shutil.which("softhsm2-util")
        if not util or not Path(SOFTHSM_MODULE).is_file():
            self.results["notes"].append("SoftHSM2 is not installed: the PKCS#11 token rows did not run.")
            return
        d = self.workdir / "softhsm"
        (d / "tokens").mkdir(parents=True, exist_ok=True)
        conf = d / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
        env = {"SOFTHSM2_CONF": str(conf), "EDGEMTLS_PKCS11_PIN": TOKEN_PIN}

        def run(*args):
            subprocess.run([str(a) for a in args], check=True, capture_output=True, env={**os.environ, **env})
        run(util, "--init-token", "--free", "--label", "bench", "--pin", TOKEN_PIN, "--so-pin", TOKEN_PIN)
        run(util, "--import", self.pki / f"{CLIENT_CN}.key", "--token", "bench", "--label", "client", "--id", "01", "--pin", TOKEN_PIN)
        run(self.bin / "edgemtls", "--store", self.store, "cert", "create", "--name", "bench_token",
            "--cert", self.pki / f"{CLIENT_CN}.pem", "--key", "pkcs11:token=bench;object=client", "--env", "production")
        self.token_env = env

    def start_upstreams(self):
        """S1 keep-alive, S2 new connection + full handshake per request, S3 resumption; S3's
        twin for edgemtls on TLS 1.2, which takes its own `[[upstreams]]` entry."""
        self.upstreams = {}
        for name, flags in [("keepalive", []), ("handshake", ["--close", "--no-resumption"]), ("resumption", ["--close"]),
                            (TLS12_UPSTREAM, ["--close"])]:
            port, stats = free_port(), free_port()
            self.procs.start(f"upstream-{name}", [self.bin / "bench-upstream", "--client-ca", self.pki / "ca.pem",
                                                  "--cert", self.pki / "localhost.pem", "--key", self.pki / "localhost.key",
                                                  "--listen", f"127.0.0.1:{port}", "--stats-listen", f"127.0.0.1:{stats}", *flags],
                             port=stats)
            self.upstreams[name] = (port, stats)
        self.start_h1_upstream()

    def start_h1_upstream(self):
        """What most mTLS backends are: an nginx that requires client certificates and speaks
        only HTTP/1.1 (no h2 by ALPN). `/h1/b?bytes=N` answers N bytes from a file, and 403
        unless the certificate's CN is the `x-expect-cn` the load generator sent (`/h1-file/` too, for
        url-forward served from its file), so every
        answer the harness accepts (200, N bytes) proves the identity too."""
        self.h1_port = None
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if not nginx:
            self.results["notes"].append("nginx is not installed: the HTTP/1.1 upstream rows did not run.")
            return
        d = self.workdir / "nginx-h1"
        (d / "logs").mkdir(parents=True, exist_ok=True)
        files = d / "files"
        files.mkdir(exist_ok=True)
        for size in [0, 1024, 64 * 1024, 1024 * 1024]:
            (files / str(size)).write_bytes(b"x" * size)
        # What the JavaScript JSON handler reads and rewrites (`?bytes=json`).
        (files / "json").write_text(json.dumps(H1_JSON, separators=(",", ":")))
        port = free_port()
        (d / "nginx.conf").write_text(f"""
{nginx_head(d)}    map $ssl_client_s_dn $client_cn {{ ~CN=(?<cn>[^,/]+) $cn; default ""; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {self.pki}/localhost.pem;
        ssl_certificate_key {self.pki}/localhost.key;
        ssl_client_certificate {self.pki}/ca.pem;
        ssl_verify_client on;
        keepalive_requests 1000000;
        location ~ ^/h1(-file)?/ {{
            if ($http_x_expect_cn != $client_cn) {{ return 403; }}
            root {files};
            try_files /$arg_bytes =404;
        }}
    }}
}}
""")
        self.procs.start("nginx-h1-upstream", [nginx, "-c", d / "nginx.conf", "-p", d], port=port)
        self.h1_port = port

    def upstream_stats(self, name):
        status, body = http_get(self.upstreams[name][1], "/stats")
        if status != 200:
            raise BenchError(f"upstream stats: {status}")
        return json.loads(body)

    def start_edgemtls(self, binary=None, name="edgemtls"):
        """edgemtls with the bench routes; `binary` and `name` let bench/ab.py run two."""
        port = free_port()
        routes = []
        for name, (up, _) in self.upstreams.items():
            routes.append(forward_route(f"/{name}", up, "bench_client"))
        routes.append(f"""
[[routes]]
path = "/const"
handler = "{self.guests / 'bench_constant.wasm'}"
max_requests_per_instance = 1000

[[routes]]
path = "/const-fresh"
handler = "{self.guests / 'bench_constant.wasm'}"
max_requests_per_instance = 1

[[routes]]
path = "/fanout"
handler = "{self.guests / 'mtls_probe.wasm'}"
max_requests_per_instance = 1000

[[routes]]
path = "/sdk-rust"
handler = "{self.guests / 'mtls_probe.wasm'}"
max_requests_per_instance = 1000
""")
        if self.js_probe:
            routes.append(f"""
[[routes]]
path = "/sdk-js"
handler = "{self.js_probe}"
max_requests_per_instance = 1000

[[routes]]
path = "/sdk-js-fresh"
handler = "{self.js_probe}"
max_requests_per_instance = 1
""")
        if self.h1_port:
            # url-forward built in (reused instance) and from its component file with the
            # default a file gets: a fresh instance per request.
            routes.append(forward_route("/h1", self.h1_port, "bench_client"))
            routes.append(forward_route("/h1-file", self.h1_port, "bench_client", handler=self.guests / "url_forward.wasm",
                                        extra='certificates = ["bench_client"]\n'))
        if self.token_env:
            for name in ["keepalive", "handshake"]:
                routes.append(forward_route(f"/token-{name}", self.upstreams[name][0], "bench_token"))
        if self.h1_port and self.js_handlers:
            # The JavaScript handlers against the HTTP/1.1 upstream: instances reused (the
            # default for what `edgemtls build` makes) and fresh.
            for path, name, reuse in [("/js-h1", "forward", 1000), ("/js-h1-fresh", "forward", 1), ("/js-h1-json", "json", 1000)]:
                routes.append(f"""
[[routes]]
path = "{path}"
handler = "{self.js_handlers[name]}"
max_requests_per_instance = {reuse}
[routes.options]
url = "https://localhost:{self.h1_port}/h1/b"
mtlsCertificate = "bench_client"
""")
            for path, reuse in [("/js-floor", 1000), ("/js-floor-fresh", 1)]:
                routes.append(f'[[routes]]\npath = "{path}"\nhandler = "{self.js_handlers["empty"]}"\nmax_requests_per_instance = {reuse}\n')
        hosts = ", ".join(f'"localhost:{up}"' for name, (up, _) in self.upstreams.items() if name != TLS12_UPSTREAM)
        if self.h1_port:
            hosts += f', "localhost:{self.h1_port}"'
        config = self.workdir / "edgemtls.toml"
        config.write_text("".join(routes) + f"""
[[upstreams]]
hosts = [{hosts}]
ca_bundle = "{self.pki / 'ca.pem'}"

[[upstreams]]
hosts = ["localhost:{self.upstreams[TLS12_UPSTREAM][0]}"]
ca_bundle = "{self.pki / 'ca.pem'}"
tls_versions = ["1.2"]
""")
        proc = self.procs.start(name, [binary or self.bin / "edgemtls", "--store", self.store, "serve", "--config", config,
                                       "--env", "production", "--listen", f"127.0.0.1:{port}", "--workers", self.workers],
                                port=port, env={"RUST_LOG": "warn", **(self.token_env or {})})
        return port, proc

    def start_edgemtls_tls(self):
        """A second edgemtls whose listener requires callers' certificates (inbound mTLS)."""
        port = free_port()
        config = self.workdir / "edgemtls-tls.toml"
        config.write_text(f"""
[tls]
cert = "{self.pki / 'localhost.pem'}"
key = "{self.pki / 'localhost.key'}"
client_auth = "required"
client_ca = ["{self.pki / 'ca.pem'}"]

[[routes]]
path = "/const"
handler = "{self.guests / 'bench_constant.wasm'}"
max_requests_per_instance = 1000
""")
        proc = self.procs.start("edgemtls-tls", [self.bin / "edgemtls", "--store", self.store, "serve", "--config", config,
                                                 "--env", "production", "--listen", f"127.0.0.1:{port}", "--workers", self.workers],
                                port=port, env={"RUST_LOG": "warn"})
        return port, proc

    def start_native(self):
        natives = {}
        for name, (up, _) in self.upstreams.items():
            if name == TLS12_UPSTREAM:
                continue  # the native proxy has no TLS version setting
            natives[name] = self.start_native_proxy(f"native-{name}", up)
        if self.h1_port:
            natives["h1"] = self.start_native_proxy("native-h1", self.h1_port)
            # The same proxy made slower in user space by a fixed amount of busy work: what
            # that costs it in the kernel too (the calibration row in h1_rows).
            natives["h1-spin"] = self.start_native_proxy("native-h1-spin", self.h1_port, spin_us=CALIBRATION_SPIN_US)
        return natives

    def start_native_proxy(self, name, upstream_port, spin_us=0):
        """The native proxy towards 127.0.0.1:`upstream_port` with the bench client's
        certificate, on a free port; returns (port, process)."""
        port = free_port()
        proc = self.procs.start(name, [self.bin / "native-proxy", "--listen", f"127.0.0.1:{port}",
                                       "--upstream", f"https://localhost:{upstream_port}",
                                       "--cert", self.pki / f"{CLIENT_CN}.pem",
                                       "--key", self.pki / f"{CLIENT_CN}.key", "--ca", self.pki / "ca.pem",
                                       "--spin-us", str(spin_us)],
                                port=port, env={"TOKIO_WORKER_THREADS": str(self.workers)})
        return port, proc

    def start_nginx(self):
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if not nginx:
            self.results["notes"].append("nginx is not installed: (b) did not take part (apt-get install nginx).")
            return None, None
        port = free_port()
        self.nginx_tls_port = free_port()
        d = self.workdir / "nginx"
        (d / "logs").mkdir(parents=True, exist_ok=True)
        pki = self.pki
        blocks, locations = [], []
        for name, (up, _) in self.upstreams.items():
            blocks.append(f"upstream up_{name} {{ server 127.0.0.1:{up}; keepalive 64; }}")
            locations.append(f"""
        location /{name} {{
            proxy_pass https://up_{name};
            proxy_ssl_certificate {pki}/{CLIENT_CN}.pem;
            proxy_ssl_certificate_key {pki}/{CLIENT_CN}.key;
        }}""")
            # Debian's nginx 1.22 speaks TLS 1.2 to upstreams unless told (TLS 1.3 joined
            # proxy_ssl_protocols' default in 1.23.4); edgemtls and the native proxy speak
            # TLS 1.3. /NAME-tls13 is nginx on the same protocol, with its own upstream{} so
            # the sessions it keeps are its own.
            blocks.append(f"upstream up_{name}_tls13 {{ server 127.0.0.1:{up}; keepalive 64; }}")
            locations.append(f"""
        location /{name}-tls13 {{
            proxy_pass https://up_{name}_tls13;
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_certificate {pki}/{CLIENT_CN}.pem;
            proxy_ssl_certificate_key {pki}/{CLIENT_CN}.key;
        }}""")
        if self.h1_port:
            # The HTTP/1.1-only nginx upstream, as nginx users proxy to it.
            blocks.append(f"upstream up_h1 {{ server 127.0.0.1:{self.h1_port}; keepalive 64; }}")
            locations.append(f"""
        location /h1 {{
            proxy_pass https://up_h1;
            proxy_ssl_certificate {pki}/{CLIENT_CN}.pem;
            proxy_ssl_certificate_key {pki}/{CLIENT_CN}.key;
        }}""")
        # Fan-out: one upstream{{}} (and so one keep-alive pool) per identity, chosen by map.
        # Each keeps up to 64 idle connections, like the others: with fewer than the 32
        # concurrent requests (it was 4), N=1 made a new connection and handshake for most.
        fan_up = self.upstreams["keepalive"][0]
        maps, maps_h1 = [], []
        for i in range(self.fanout_count):
            blocks.append(f"upstream id{i} {{ server 127.0.0.1:{fan_up}; keepalive 64; }}")
            maps.append(f"        id{i} id{i};")
            if self.h1_port:
                # The same, against the HTTP/1.1 upstream (S4 over HTTP/1.1).
                blocks.append(f"upstream h1id{i} {{ server 127.0.0.1:{self.h1_port}; keepalive 64; }}")
                maps_h1.append(f"        id{i} h1id{i};")
        conf = f"""
{nginx_head(d)}    map_hash_bucket_size 128;
    map_hash_max_size 8192;
    {chr(10).join('    ' + b for b in blocks)}
    map $http_x_cert $fan_backend {{
        default "";
{chr(10).join(maps)}
    }}
    map $http_x_cert $fan_backend_h1 {{
        default "";
{chr(10).join(maps_h1)}
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate {pki}/ca.pem;
        proxy_ssl_name localhost;
        proxy_ssl_server_name on;
        proxy_ssl_session_reuse on;
        proxy_buffering off;
{''.join(locations)}
        location /const {{ return 200 "ok\\n"; }}
        location /fanout {{
            if ($fan_backend = "") {{ return 400; }}
            proxy_pass https://$fan_backend;
            proxy_ssl_certificate {self.fanout_files}/$fan_backend.pem;
            proxy_ssl_certificate_key {self.fanout_files}/$fan_backend.key;
        }}
        location /fanout-h1/ {{
            if ($fan_backend_h1 = "") {{ return 400; }}
            rewrite ^/fanout-h1/(.*)$ /h1/$1 break;
            proxy_pass https://$fan_backend_h1;
            proxy_ssl_certificate {self.fanout_files}/$fan_backend.pem;
            proxy_ssl_certificate_key {self.fanout_files}/$fan_backend.key;
        }}
    }}
    # Inbound mTLS: callers must present a certificate from the dev CA.
    server {{
        listen 127.0.0.1:{self.nginx_tls_port} ssl;
        ssl_certificate {pki}/localhost.pem;
        ssl_certificate_key {pki}/localhost.key;
        ssl_verify_client on;
        ssl_client_certificate {pki}/ca.pem;
        keepalive_requests 1000000;  # edgemtls sets no limit; nginx's default 1000 would add handshakes
        location /const {{ return 200 "ok\n"; }}
    }}
}}
"""
        (d / "nginx.conf").write_text(conf)
        version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
        self.results["nginx"] = version
        proc = self.procs.start("nginx", [nginx, "-c", d / "nginx.conf", "-p", d], port=port)
        return port, proc

    def start_wasmtime(self):
        """`wasmtime serve` at its best for this component: the pooling allocator with memory,
        tables and stacks kept resident and PAGEMAP_SCAN resets (FACTS-wasmtime48.md), as two
        processes: one reusing instances (as edgemtls' /const), one with a fresh instance per
        request (its p2 default, as /const-fresh). Returns {"reused": (port, proc), "fresh": ...}."""
        wasmtime = shutil.which("wasmtime")
        if not wasmtime:
            self.results["notes"].append(
                "wasmtime-cli is not installed: (c) did not take part (cargo install wasmtime-cli --version 48.0.8 --locked).")
            return {}
        version = subprocess.run([wasmtime, "--version"], capture_output=True, text=True).stdout.strip()
        self.results["wasmtime"] = version
        pooling = ("pooling-allocator=y,pooling-memory-keep-resident=2097152,pooling-table-keep-resident=1048576,"
                   "pooling-async-stack-keep-resident=1048576,pooling-pagemap-scan=auto")
        started = {}
        for name, reuse in [("reused", "1000"), ("fresh", "1")]:
            port = free_port()
            proc = self.procs.start(f"wasmtime-{name}", [wasmtime, "serve", "--addr", f"127.0.0.1:{port}", "-Scli", "-O", pooling,
                                                         "--max-instance-reuse-count", reuse, "--idle-instance-timeout", "10s",
                                                         self.guests / "bench_constant.wasm"], port=port,
                                   env={"TOKIO_WORKER_THREADS": str(self.workers)})
            started[name] = (port, proc)
        return started

    # ---------------------------------------------------------------- measuring

    def wrk(self, port, path, proc, expect_bytes, env=None, stats_upstream=None, expect_cn=CLIENT_CN, headers=None):
        """Runs wrk against one system; returns rps, latency and CPU per request, after
        checking that every response was 200 with the right body and identity."""
        extra = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
        headers = (["-H", f"x-expect-cn: {expect_cn}"] if expect_cn else []) + extra
        # Warm up first, unmeasured: instances, connection pools and caches, so the first
        # cell of a run is not charged for them.
        if not self.smoke:
            subprocess.run(["wrk", "-t1", f"-c{self.connections}", "-d1s", *headers, f"http://127.0.0.1:{port}{path}"],
                           capture_output=True, text=True, env={**os.environ, **(env or {})})
        before = self.upstream_stats(stats_upstream) if stats_upstream else None
        user_before, system_before = cpu_split(proc.pid)
        out = subprocess.run(
            ["wrk", "-t1", f"-c{self.connections}", f"-d{self.duration}s", "--latency", "-s", str(self.wrk_script),
             *headers, f"http://127.0.0.1:{port}{path}"],
            capture_output=True, text=True, env={**os.environ, "BENCH_EXPECT_BYTES": str(expect_bytes), **(env or {})},
        )
        user_after, system_after = cpu_split(proc.pid)
        user, system = user_after - user_before, system_after - system_before
        cpu = user + system
        if out.returncode != 0:
            raise BenchError(f"wrk failed: {out.stderr}")
        text = out.stdout
        requests = int(re.search(r"(\d+) requests in", text).group(1))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
        bad_bodies = int(re.search(r"BENCH_BAD_BODIES (\d+)", text).group(1))
        bad_status = int(re.search(r"BENCH_BAD_STATUS (\d+)", text).group(1))
        errors = re.search(r"Socket errors: (.*)", text)
        problems = []
        if requests == 0:
            problems.append("no requests completed")
        if bad_status:
            problems.append(f"{bad_status} responses were not 200")
        if bad_bodies:
            problems.append(f"{bad_bodies} bodies were not {expect_bytes} bytes")
        if errors and re.search(r"(read|write|timeout) [1-9]", errors.group(1)):
            problems.append(f"socket errors: {errors.group(1)}")
        if stats_upstream:
            after = self.upstream_stats(stats_upstream)
            mismatched = after["mismatched"] - before["mismatched"]
            matched = after["matched"] - before["matched"]
            if mismatched:
                problems.append(f"{mismatched} requests reached the upstream with another identity's certificate")
            if matched < requests * 0.99:
                problems.append(f"the upstream confirmed only {matched} of {requests} requests")
            handshakes = after["handshakes"] - before["handshakes"]
        if problems:
            raise BenchError(f"{path} on :{port}: " + "; ".join(problems) + f"\n{text}")
        return {
            "rps": rps,
            "p50_ms": int(re.search(r"BENCH_P50_US (\d+)", text).group(1)) / 1000,
            "p99_ms": int(re.search(r"BENCH_P99_US (\d+)", text).group(1)) / 1000,
            "cpu_us_per_request": cpu * 1e6 / requests,
            # Apart: the kernel's share holds the loopback delivery to the peers and their
            # wake-ups, which grow as user space gets slower (the calibration row).
            "user_cpu_us_per_request": user * 1e6 / requests,
            "system_cpu_us_per_request": system * 1e6 / requests,
            "requests": requests,
            # What the upstream saw of this system's TLS handshakes: how many per request,
            # and what share resumed a session or settled on TLS 1.2.
            **({"handshakes_per_request": handshakes / requests,
                "resumed_share": (after["resumed_handshakes"] - before["resumed_handshakes"]) / handshakes,
                "tls12_share": (after["tls12_handshakes"] - before["tls12_handshakes"]) / handshakes}
               if stats_upstream and handshakes else {}),
        }

    def sdk_rows(self, e_port, e_proc, n_port, n_proc):
        """Handlers users write: the Rust SDK's (mtls-probe, reused instances) and the
        JavaScript SDK's (fresh instances), each fetching upstream with a named certificate,
        against nginx proxying the same upstream."""
        upstream = self.upstreams["keepalive"][0]
        for size in [0, 64 * 1024]:
            headers = {"x-target": f"https://localhost:{upstream}/b?bytes={size}", "x-certificate": "bench_client"}
            nginx = (lambda: self.wrk(n_port, f"/keepalive/b?bytes={size}", n_proc, size, stats_upstream="keepalive")) if n_port else None
            self.scenario(f"Rust SDK handler (reused), S1 {size} B", {
                "a": lambda: self.wrk(e_port, "/sdk-rust", e_proc, size, stats_upstream="keepalive", headers=headers),
                "b": nginx,
            }, {"c": "wasmtime serve cannot reach an mTLS upstream", "d": "the native proxy runs no handlers"})
            # The same handler passing the request on with the SDK's `forward`: the host
            # forwards (edgemtls:mtls/forward), as the built-in url-forward does.
            forwarding = {**headers, "x-mode": "forward"}
            self.scenario(f"Rust SDK handler with forward (reused), S1 {size} B", {
                "a": lambda: self.wrk(e_port, "/sdk-rust", e_proc, size, stats_upstream="keepalive", headers=forwarding),
                "b": nginx,
            }, {"c": "wasmtime serve cannot reach an mTLS upstream", "d": "the native proxy runs no handlers"})
            if self.js_probe:
                for label, path in [("reused", "/sdk-js"), ("fresh instance per request", "/sdk-js-fresh")]:
                    self.scenario(f"JavaScript SDK handler ({label}), S1 {size} B", {
                        "a": lambda: self.wrk(e_port, path, e_proc, size, stats_upstream="keepalive", headers=headers),
                        "b": nginx,
                    }, {"c": "wasmtime serve cannot reach an mTLS upstream", "d": "the native proxy runs no handlers"})
        if self.js_probe:
            # How long a host takes to start with the 12 MiB component (compiling it), against
            # the same host with the Rust probe alone.
            for label, handler in [("rust", self.guests / "mtls_probe.wasm"), ("js", self.js_probe)]:
                config = self.workdir / f"load-{label}.toml"
                config.write_text(f'[[routes]]\npath = "/"\nhandler = "{handler}"\n')
                port = free_port()
                started = time.perf_counter()
                proc = self.procs.start(f"load-{label}", [self.bin / "edgemtls", "--store", self.store, "serve", "--config", config,
                                                          "--env", "production", "--listen", f"127.0.0.1:{port}"], port=port)
                self.results["js_component"][f"serve_start_seconds_{label}"] = time.perf_counter() - started
                self.procs.stop(proc)

    def h1_rows(self, e_port, e_proc, n_port, n_proc, natives):
        """The paths users take, against the upstream most of them have: nginx requiring client
        certificates and speaking only HTTP/1.1. Each system at one worker (run.py --workers),
        answers checked for status, size and the certificate nginx saw (403 otherwise)."""
        if not self.h1_port:
            return
        # The HTTP/1.1 upstream's identity check must be able to fail: a CN it did not
        # see is refused, the one it saw is answered.
        for label, port in [("edgemtls", e_port), ("native", natives["h1"][0]), ("nginx", n_port)]:
            if port is None:
                continue
            status, body = http_get(port, "/h1/b?bytes=1024", {"x-expect-cn": CLIENT_CN})
            if status != 200 or len(body) != 1024:
                raise BenchError(f"{label}: the HTTP/1.1 upstream answered {status} with {len(body)} bytes: {body[:300]!r}")
            status, _ = http_get(port, "/h1/b?bytes=1024", {"x-expect-cn": "someone-else"})
            if status != 403:
                raise BenchError(f"{label}: the HTTP/1.1 upstream did not check the certificate's CN (answered {status})")
        no_certs = "wasmtime serve cannot reach an mTLS upstream"
        sizes = [0, 1024] if self.smoke else [0, 1024, 64 * 1024]
        for size in sizes:
            path = f"/h1/b?bytes={size}"
            self.scenario(f"S1 HTTP/1.1 upstream (nginx), {size} B", {
                "a": lambda: self.wrk(e_port, path, e_proc, size),
                "b": (lambda: self.wrk(n_port, path, n_proc, size)) if n_port else None,
                "d": lambda: self.wrk(natives["h1"][0], path, natives["h1"][1], size),
            }, {"c": no_certs})
        nginx_0 = (lambda: self.wrk(n_port, "/h1/b?bytes=0", n_proc, 0)) if n_port else None
        self.scenario("S1 HTTP/1.1 upstream, 0 B, url-forward from its component file (fresh instance per request, the default)", {
            "a": lambda: self.wrk(e_port, "/h1-file/b?bytes=0", e_proc, 0),
            "b": nginx_0,
        }, {"c": no_certs, "d": "the native proxy runs no handlers"})
        handlers = "the native proxy runs no handlers"
        for size in [0, 64 * 1024]:
            nginx = (lambda: self.wrk(n_port, f"/h1/b?bytes={size}", n_proc, size)) if n_port else None
            headers = {"x-target": f"https://localhost:{self.h1_port}/h1/b?bytes={size}", "x-certificate": "bench_client"}
            self.scenario(f"S1 HTTP/1.1 upstream, {size} B, Rust SDK handler fetching in the guest (reused)", {
                "a": lambda: self.wrk(e_port, "/sdk-rust", e_proc, size, headers=headers),
                "b": nginx,
            }, {"c": no_certs, "d": handlers})
            if not self.js_handlers:
                continue
            # `return await fetch(url, { zuplo: { mtlsCertificate } })`: the body stays in the host.
            for label, path in [("reused", "/js-h1"), ("fresh instance per request", "/js-h1-fresh")]:
                self.scenario(f"S1 HTTP/1.1 upstream, {size} B, JavaScript fetch-and-return handler ({label})", {
                    "a": lambda: self.wrk(e_port, f"{path}?bytes={size}", e_proc, size),
                    "b": nginx,
                }, {"c": no_certs, "d": handlers})
        # S4 against this upstream: each request names one of N certificates, and nginx
        # answers only when the certificate it saw has the CN the request expects.
        fanouts = [1, 16] if self.smoke else [1, 16, 256, 1024]
        target = f"https://localhost:{self.h1_port}/h1/b?bytes=0"
        for n in fanouts:
            env = {"BENCH_FANOUT": str(n), "BENCH_TARGET": target}
            self.scenario(f"S4 identity fan-out over the HTTP/1.1 upstream, 0 B, N={n}", {
                "a": lambda: self.wrk(e_port, "/fanout", e_proc, 0, env={**env, "BENCH_STYLE": "edgemtls"}, expect_cn=None),
                "b": (lambda: self.wrk(n_port, "/fanout-h1/b?bytes=0", n_proc, 0, env={**env, "BENCH_STYLE": "nginx"},
                                       expect_cn=None)) if n_port else None,
            }, {"c": no_certs, "d": "the native proxy has one identity by design"})
        # The floors, against nginx's whole proxied request: what a request costs here before
        # its handler does anything (a constant answer from a Rust component, and a
        # JavaScript handler that answers at once, each reused and fresh). A target below a floor
        # cannot be met by any handler code.
        # The native proxy answers /const itself: what its own serving costs, beside its whole
        # proxied request in the S1 row.
        self.scenario("Floor: constant answer from a reused Rust component, no upstream (against nginx's proxied 0 B request)", {
            "a": lambda: self.wrk(e_port, "/const", e_proc, 3, expect_cn=None),
            "b": nginx_0,
            "d": lambda: self.wrk(natives["h1"][0], "/const", natives["h1"][1], 3, expect_cn=None),
        }, {"c": no_certs})
        self.scenario("Floor: constant answer from a Rust component, fresh instance per request, no upstream (against nginx's proxied 0 B request)", {
            "a": lambda: self.wrk(e_port, "/const-fresh", e_proc, 3, expect_cn=None),
            "b": nginx_0,
        }, {"c": no_certs, "d": "the native proxy runs no handlers"})
        # Calibration: the native proxy with a fixed amount of busy work per request. On one
        # machine the kernel's share of each request (loopback delivery to the peers, and
        # waking them) grows as user space gets slower, since the peers sleep between
        # requests that come further apart: this row measures how much, so the other rows'
        # kernel time can be read as what it is.
        self.scenario(f"Calibration: the native proxy with {CALIBRATION_SPIN_US} µs of busy work per request (d), HTTP/1.1 upstream, 0 B", {
            "a": lambda: self.wrk(e_port, "/h1/b?bytes=0", e_proc, 0),
            "b": nginx_0,
            "d": lambda: self.wrk(natives["h1-spin"][0], "/h1/b?bytes=0", natives["h1-spin"][1], 0),
        }, {"c": no_certs})
        if self.js_handlers:
            for label, path in [("reused", "/js-floor"), ("fresh instance per request", "/js-floor-fresh")]:
                self.scenario(f"Floor: JavaScript handler answering at once, no fetch ({label}; against nginx's proxied 0 B request)", {
                    "a": lambda: self.wrk(e_port, path, e_proc, 0, expect_cn=None),
                    "b": nginx_0,
                }, {"c": no_certs, "d": handlers})
        if self.js_handlers:
            rewritten = len(json.dumps({**H1_JSON, "seenBy": "edgemtls"}, separators=(",", ":")))
            self.scenario(f"S1 HTTP/1.1 upstream, JavaScript handler reading and rewriting a JSON answer ({rewritten} B, reused)", {
                "a": lambda: self.wrk(e_port, "/js-h1-json?bytes=json", e_proc, rewritten),
                "b": (lambda: self.wrk(n_port, "/h1/b?bytes=json", n_proc, rewritten - len(',"seenBy":"edgemtls"'))) if n_port else None,
            }, {"c": no_certs, "d": handlers})

    def tls_load(self, port, proc, handshake_per_request):
        """Like wrk(), over HTTPS with the bench client's certificate (bench-tool tls-load)."""
        def load(seconds):
            cmd = [self.bin / "bench-tool", "tls-load", "--url", f"https://localhost:{port}/const",
                   "--connect", f"127.0.0.1:{port}", "--ca", self.pki / "ca.pem",
                   "--cert", self.pki / f"{CLIENT_CN}.pem", "--key", self.pki / f"{CLIENT_CN}.key",
                   "--connections", self.connections, "--seconds", seconds, "--expect-bytes", 3]
            if handshake_per_request:
                cmd.append("--handshake-per-request")
            out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
            if out.returncode != 0:
                raise BenchError(f"tls-load on :{port} failed: {out.stderr}")
            return json.loads(out.stdout)
        if not self.smoke:
            load(1)
        cpu_before = cpu_seconds(proc.pid)
        result = load(self.duration)
        cpu = cpu_seconds(proc.pid) - cpu_before
        if result["failures"] or not result["requests"]:
            raise BenchError(f"tls-load on :{port}: {result['requests']} requests, failures: {result['failures']}")
        return {
            "rps": result["rps"],
            "p50_ms": result["p50_us"] / 1000,
            "p99_ms": result["p99_us"] / 1000,
            "cpu_us_per_request": cpu * 1e6 / result["requests"],
            "requests": result["requests"],
        }

    def refuses_without_certificate(self, label, port):
        """Inbound verification is on: a caller without a certificate must not get a 200."""
        context = ssl.create_default_context(cafile=str(self.pki / "ca.pem"))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    context.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"GET /const HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                answer = s.recv(100)
        except (ssl.SSLError, ConnectionError):
            return
        if answer.startswith(b"HTTP/1.1 200"):
            raise BenchError(f"{label} answered 200 to a caller without a client certificate: {answer!r}")

    def scenario(self, name, systems, unavailable=None):
        """systems: {label: callable -> result dict}; unavailable: {label: reason}."""
        row = {"scenario": name, "results": {}, "unavailable": dict(unavailable or {})}
        for label, run in systems.items():
            if run is None:
                continue
            log(f"{name}: {label}")
            row["results"][label] = run()
        self.results["scenarios"].append(row)
        self.write()

    # ---------------------------------------------------------------- scenarios

    def run_store_scale(self):
        self.build()
        self.make_pki()
        self.store_scale()
        self.write()

    def run_sdk(self):
        """Only the rows of handlers users write (Rust and JavaScript SDKs) against nginx."""
        self.build()
        self.make_pki()
        self.start_upstreams()
        e_port, e_proc = self.start_edgemtls()
        n_port, n_proc = self.start_nginx()
        self.sdk_rows(e_port, e_proc, n_port, n_proc)
        self.procs.stop_all()
        self.write()

    def run_h1(self):
        """Only the rows against the HTTP/1.1-only nginx upstream."""
        self.build()
        self.make_pki()
        self.start_upstreams()
        e_port, e_proc = self.start_edgemtls()
        natives = self.start_native()
        n_port, n_proc = self.start_nginx()
        self.h1_rows(e_port, e_proc, n_port, n_proc, natives)
        self.procs.stop_all()
        self.write()

    def token_rows(self, e_port, e_proc, n_port, n_proc, natives, with_software=False):
        """S2 and S1 0 B presenting the client certificate whose key is in a PKCS#11 token
        (SoftHSM2): each full handshake signs through the token; over kept-alive connections
        it should not show. `with_software` adds the same rows with the key in memory, for a
        run of these rows alone."""
        if not self.token_env:
            return
        no_certs = "wasmtime serve cannot reach an mTLS upstream"
        for label, upstream in [("S2 full mTLS handshake per request", "handshake"), ("S1 keep-alive, 0 B", "keepalive")]:
            nginx_path = f"/{upstream}-tls13/b?bytes=0" if upstream == "handshake" else f"/{upstream}/b?bytes=0"
            keys = [("key in a PKCS#11 token (SoftHSM2); nginx and native: key file", f"/token-{upstream}/b?bytes=0")]
            if with_software:
                keys.insert(0, ("key in memory (from its file)", f"/{upstream}/b?bytes=0"))
            for key, path in keys:
                self.scenario(f"{label}, client {key}", {
                    "a": lambda: self.wrk(e_port, path, e_proc, 0, stats_upstream=upstream),
                    "b": (lambda: self.wrk(n_port, nginx_path, n_proc, 0, stats_upstream=upstream)) if n_port else None,
                    "d": lambda: self.wrk(natives[upstream][0], f"/{upstream}/b?bytes=0", natives[upstream][1], 0,
                                          stats_upstream=upstream),
                }, {"c": no_certs})

    def run_token(self):
        """Only the PKCS#11 token rows, beside the same rows with the key in memory."""
        self.build()
        self.make_pki()
        if not self.token_env:
            raise BenchError("SoftHSM2 is not installed (apt-get install softhsm2): no token rows to run")
        self.start_upstreams()
        e_port, e_proc = self.start_edgemtls()
        natives = self.start_native()
        n_port, n_proc = self.start_nginx()
        self.token_rows(e_port, e_proc, n_port, n_proc, natives, with_software=True)
        self.procs.stop_all()
        self.write()

    def run(self):
        self.build()
        self.make_pki()
        self.start_upstreams()
        e_port, e_proc = self.start_edgemtls()
        natives = self.start_native()
        n_port, n_proc = self.start_nginx()
        wasmtimes = self.start_wasmtime()
        no_certs = "wasmtime serve has no client certificates and trusts only public roots: it cannot reach an mTLS upstream"

        # Correctness first: one request through each, with the body and identity checked.
        for label, port in [("edgemtls", e_port), ("native", natives["keepalive"][0]), ("nginx", n_port)]:
            if port is None:
                continue
            status, body = http_get(port, "/keepalive/x?bytes=1000", {"x-expect-cn": CLIENT_CN})
            if status != 200 or len(body) != 1000:
                raise BenchError(f"{label}: first request answered {status} with {len(body)} bytes: {body[:300]!r}")
        stats = self.upstream_stats("keepalive")
        if stats["mismatched"] or stats["matched"] < 2:
            raise BenchError(f"the upstream did not confirm the client certificate: {stats}")

        sizes = [0, 1024] if self.smoke else [0, 1024, 64 * 1024, 1024 * 1024]
        for size in sizes:
            path = f"/keepalive/b?bytes={size}"
            self.scenario(f"S1 keep-alive, {size} B", {
                "a": lambda: self.wrk(e_port, path, e_proc, size, stats_upstream="keepalive"),
                "b": (lambda: self.wrk(n_port, path, n_proc, size, stats_upstream="keepalive")) if n_port else None,
                "d": lambda: self.wrk(natives["keepalive"][0], path, natives["keepalive"][1], size, stats_upstream="keepalive"),
            }, {"c": no_certs})

        self.h1_rows(e_port, e_proc, n_port, n_proc, natives)

        rate = json.loads(subprocess.run([str(self.bin / "bench-tool"), "handshake-rate", "--ca", str(self.pki / "ca.pem"),
                                          "--client-cert", str(self.pki / f"{CLIENT_CN}.pem"),
                                          "--client-key", str(self.pki / f"{CLIENT_CN}.key"),
                                          "--server-cert", str(self.pki / "localhost.pem"),
                                          "--server-key", str(self.pki / "localhost.key"),
                                          "--seconds", str(self.duration)],
                                         check=True, capture_output=True, text=True).stdout)
        self.results["rustls_client_auth_handshakes_per_second"] = rate["per_second"]
        for label, upstream in [("S2 full mTLS handshake per request", "handshake"), ("S3 resumption, no keep-alive", "resumption")]:
            # Each twice: against nginx as Debian ships it (TLS 1.2 to upstreams), then against
            # nginx on TLS 1.3, the protocol the others speak.
            for suffix, nginx_path in [("", f"/{upstream}/b?bytes=0"), (", nginx on TLS 1.3", f"/{upstream}-tls13/b?bytes=0")]:
                path = f"/{upstream}/b?bytes=0"
                self.scenario(label + suffix, {
                    "a": lambda: self.wrk(e_port, path, e_proc, 0, stats_upstream=upstream),
                    "b": (lambda: self.wrk(n_port, nginx_path, n_proc, 0, stats_upstream=upstream)) if n_port else None,
                    "d": lambda: self.wrk(natives[upstream][0], path, natives[upstream][1], 0, stats_upstream=upstream),
                }, {"c": no_certs})
        self.token_rows(e_port, e_proc, n_port, n_proc, natives)
        # And both on TLS 1.2, nginx's default: edgemtls told so by `tls_versions = ["1.2"]`.
        path = f"/{TLS12_UPSTREAM}/b?bytes=0"
        self.scenario("S3 resumption, no keep-alive, edgemtls on TLS 1.2 (tls_versions)", {
            "a": lambda: self.wrk(e_port, path, e_proc, 0, stats_upstream=TLS12_UPSTREAM),
            "b": (lambda: self.wrk(n_port, path, n_proc, 0, stats_upstream=TLS12_UPSTREAM)) if n_port else None,
        }, {"c": no_certs, "d": "the native proxy has no TLS version setting"})

        fanouts = [1, 16] if self.smoke else [1, 16, 256, 1024]
        target = f"https://localhost:{self.upstreams['keepalive'][0]}/fan"
        for n in fanouts:
            env = {"BENCH_FANOUT": str(n), "BENCH_TARGET": target}
            # The probe is a component file built with the guest SDK that fetches upstream naming
            # a certificate per request: N=1 is the row for handlers users write.
            self.scenario(f"S4 identity fan-out, N={n}", {
                # The edgemtls probe handler picks the name from x-certificate.
                "a": lambda: self.wrk(e_port, "/fanout", e_proc, -1, env={**env, "BENCH_STYLE": "edgemtls"},
                                      stats_upstream="keepalive", expect_cn=None),
                "b": (lambda: self.wrk(n_port, "/fanout", n_proc, -1, env={**env, "BENCH_STYLE": "nginx"},
                                       stats_upstream="keepalive", expect_cn=None)) if n_port else None,
            }, {"c": no_certs, "d": "the native proxy has one identity by design"})

        self.sdk_rows(e_port, e_proc, n_port, n_proc)

        self.scenario("per-request WebAssembly overhead, fresh instance per request (max_requests_per_instance = 1)", {
            "a": lambda: self.wrk(e_port, "/const-fresh", e_proc, 3, expect_cn=None),
            "b": (lambda: self.wrk(n_port, "/const", n_proc, 3, expect_cn=None)) if n_port else None,
            "c": (lambda: self.wrk(wasmtimes["fresh"][0], "/", wasmtimes["fresh"][1], 3, expect_cn=None)) if wasmtimes else None,
        })
        self.scenario("per-request WebAssembly overhead (constant answer, reused instances)", {
            "a": lambda: self.wrk(e_port, "/const", e_proc, 3, expect_cn=None),
            "b": (lambda: self.wrk(n_port, "/const", n_proc, 3, expect_cn=None)) if n_port else None,
            "c": (lambda: self.wrk(wasmtimes["reused"][0], "/", wasmtimes["reused"][1], 3, expect_cn=None)) if wasmtimes else None,
            "d": lambda: self.wrk(natives["keepalive"][0], "/const", natives["keepalive"][1], 3, expect_cn=None),
        })

        t_port, t_proc = self.start_edgemtls_tls()
        self.refuses_without_certificate("edgemtls", t_port)
        if n_port:
            self.refuses_without_certificate("nginx", self.nginx_tls_port)
        no_listener = "the native proxy has no TLS listener"
        for label, per_request in [("inbound mTLS, keep-alive (constant answer)", False),
                                   ("inbound mTLS, full handshake per request (constant answer)", True)]:
            self.scenario(label, {
                "a": lambda: self.tls_load(t_port, t_proc, per_request),
                "b": (lambda: self.tls_load(self.nginx_tls_port, n_proc, per_request)) if n_port else None,
            }, {"c": "wasmtime serve has no TLS listener", "d": no_listener})
        self.procs.stop_all()
        self.store_scale()
        self.write()

    def store_scale(self):
        """10,000 certificates in each backend: cert list, serve start, RSS, how soon a change is
        served, and lookup, against a small store of the same backend."""
        big = 200 if self.smoke else 10_000
        backends = {"sqlite": lambda label: str(self.workdir / f"store-{label}")}
        postgres = Postgres.start(self.workdir)
        if postgres:
            self.postgres = postgres
            backends["postgres"] = lambda label: postgres.create_database(f"scale_{label}")
        else:
            self.results["notes"].append("store scale: PostgreSQL is not installed here, so only SQLite was measured")
        env = {"EDGEMTLS_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
        out = {}
        try:
            for backend, location in backends.items():
                out[backend] = {}
                for label, count in [("small", 10), ("large", big)]:
                    log(f"store scale: {backend}, {count} certificates")
                    out[backend][label] = self.store_scale_one(location(label), count, env)
        finally:
            if postgres:
                postgres.stop()
        self.results["store_scale"] = out

    def store_scale_one(self, store, count, env):
        run = lambda *cmd: subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True,
                                          env={**os.environ, **env}, cwd=self.workdir).stdout
        started = time.perf_counter()
        run(self.bin / "bench-tool", "populate", "--store", store, "--ca", self.pki, "--count", count, "--prefix", "s")
        populate_seconds = time.perf_counter() - started
        times = []
        for _ in range(3):
            started = time.perf_counter()
            listing = run(self.bin / "edgemtls", "--store", store, "cert", "list", "--json")
            times.append(time.perf_counter() - started)
        if len(json.loads(listing)) != count:
            raise BenchError(f"cert list returned the wrong number of certificates for {count}")
        config = self.workdir / "scale.toml"
        admin = free_port()
        config.write_text(f'admin_listen = "127.0.0.1:{admin}"\n[[routes]]\npath = "/"\nhandler = "{self.guests / "bench_constant.wasm"}"\n')
        port = free_port()
        started = time.perf_counter()
        proc = self.procs.start(f"scale-{count}", [self.bin / "edgemtls", "--store", store, "serve", "--config", config,
                                                    "--env", "production", "--listen", f"127.0.0.1:{port}"], port=port, env=env)
        start_seconds = time.perf_counter() - started
        wait_port(admin, proc)
        rss = rss_kib(proc.pid)
        # A change made by the CLI, until the running host's snapshot has it (a reload of the
        # whole store: every record is read again, only changed keys are unsealed).
        healthz = lambda: json.loads(http_get(admin, "/healthz")[1])
        before = healthz()["certificates"]
        run(self.bin / "bench-tool", "populate", "--store", store, "--ca", self.pki, "--count", 1, "--prefix", "late")
        committed = time.perf_counter()
        while healthz()["certificates"] <= before:
            if time.perf_counter() - committed > 30:
                raise BenchError(f"a new certificate did not reach the host within 30 s ({store})")
        change_seconds = time.perf_counter() - committed
        rss_after = rss_kib(proc.pid)
        self.procs.stop(proc)
        lookup = json.loads(run(self.bin / "bench-tool", "lookup", "--store", store))
        return {"certificates": count, "populate_seconds": populate_seconds, "cert_list_seconds": statistics.median(times),
                "serve_start_seconds": start_seconds, "serve_rss_mib": rss / 1024, "serve_rss_after_reload_mib": rss_after / 1024,
                "change_served_seconds": change_seconds, "resolve_ns": lookup["resolve_ns"], "hashmap_ns": lookup["hashmap_ns"],
                "resolve_vs_hashmap": lookup["ratio"]}

    # ---------------------------------------------------------------- output

    def write(self):
        results_dir = Path(self.args.out)
        results_dir.mkdir(parents=True, exist_ok=True)
        self.results["machine"] = {
            "cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "profile": self.profile, "duration_s": self.duration, "connections": self.connections,
            "workers": self.workers,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        (results_dir / "latest.json").write_text(json.dumps(self.results, indent=2))
        (results_dir / "latest.md").write_text(render_markdown(self.results))


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "–"


def render_store_scale(scale):
    # Runs before the PostgreSQL store kept one backend's sizes at the top level.
    backends = scale if "sqlite" in scale else {"sqlite": scale}
    lines = ["", "| store | certificates | cert list s | serve start s | serve RSS MiB | RSS after a reload MiB | change served after s | resolve ns | HashMap ns | resolve/HashMap |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for backend, sizes in backends.items():
        for label in ["small", "large"]:
            x = sizes[label]
            change = x.get("change_served_seconds")
            after = x.get("serve_rss_after_reload_mib")
            lines.append(f"| {backend}, {label} | {x['certificates']} | {x['cert_list_seconds']:.3f} | {x['serve_start_seconds']:.2f} | "
                         f"{x['serve_rss_mib']:.1f} | {f'{after:.1f}' if after else '–'} | {f'{change:.3f}' if change else '–'} | "
                         f"{x['resolve_ns']:.0f} | {x['hashmap_ns']:.0f} | {x['resolve_vs_hashmap']:.1f} |")
    if "postgres" in backends:
        p, q = backends["postgres"]["large"], backends["sqlite"]["large"]
        lines.append(f"| postgres/sqlite, large | | {ratio(p['cert_list_seconds'], q['cert_list_seconds'])} | "
                     f"{ratio(p['serve_start_seconds'], q['serve_start_seconds'])} | {ratio(p['serve_rss_mib'], q['serve_rss_mib'])} | "
                     f"{ratio(p['serve_rss_after_reload_mib'], q['serve_rss_after_reload_mib'])} | "
                     f"{ratio(p['change_served_seconds'], q['change_served_seconds'])} | {ratio(p['resolve_ns'], q['resolve_ns'])} | | |")
    lines += ["", "A change is a certificate added by another process; SQLite hosts poll every 250 ms, PostgreSQL hosts "
              "are woken by NOTIFY (and poll every 2 s as a safety net)."]
    return lines


def render_markdown(results):
    m = results["machine"]
    lines = [f"Run {m['date']}, {m['cpus']} cores, kernel {m['kernel']}, {m['profile']} build, "
             f"wrk -t1 -c{m['connections']} for {m['duration_s']} s per cell, "
             f"{m.get('workers', 'default')} worker thread(s) per system (nginx: one worker process).",
             "", "a = edgemtls (url-forward), b = nginx, c = wasmtime serve, d = native hyper+rustls proxy. "
             "Ratios are of requests/s (> 1: a is faster) and of CPU time per request (< 1: a is cheaper).", "",
             "| scenario | a req/s | b req/s | c req/s | d req/s | a/b req/s | a/d req/s | a/c req/s | a p50/p99 ms | b p50/p99 ms | c p50/p99 ms | d p50/p99 ms | a CPU µs/req | b CPU µs/req | c CPU µs/req | d CPU µs/req | a/b CPU | a/d CPU | a/c CPU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    if not results["scenarios"]:
        lines = lines[:1]
    for row in results["scenarios"]:
        r = row["results"]
        get = lambda k, f: r[k][f] if k in r else None
        cell = lambda k: f"{r[k]['rps']:.0f}" if k in r else ("n/a" if k in row["unavailable"] else "–")
        lat = lambda k: f"{r[k]['p50_ms']:.2f}/{r[k]['p99_ms']:.2f}" if k in r else "–"
        cpu = lambda k: f"{r[k]['cpu_us_per_request']:.0f}" if k in r else "–"
        lines.append(f"| {row['scenario']} | {cell('a')} | {cell('b')} | {cell('c')} | {cell('d')} | "
                     f"{ratio(get('a', 'rps'), get('b', 'rps'))} | {ratio(get('a', 'rps'), get('d', 'rps'))} | "
                     f"{ratio(get('a', 'rps'), get('c', 'rps'))} | {lat('a')} | {lat('b')} | {lat('c')} | {lat('d')} | "
                     f"{cpu('a')} | {cpu('b')} | {cpu('c')} | {cpu('d')} | "
                     f"{ratio(get('a', 'cpu_us_per_request'), get('b', 'cpu_us_per_request'))} | "
                     f"{ratio(get('a', 'cpu_us_per_request'), get('d', 'cpu_us_per_request'))} | "
                     f"{ratio(get('a', 'cpu_us_per_request'), get('c', 'cpu_us_per_request'))} |")
    split = lambda r, k: (f"{r[k]['user_cpu_us_per_request']:.1f} + {r[k]['system_cpu_us_per_request']:.1f}"
                          if "user_cpu_us_per_request" in r.get(k, {}) else "–")
    split_rows = [row for row in results["scenarios"] if any("user_cpu_us_per_request" in v for v in row["results"].values())]
    if split_rows:
        lines += ["", "CPU µs per request apart, user + kernel (the kernel's share holds the loopback delivery to the "
                  "peers and their wake-ups, which grow as user space gets slower: see the calibration row):", "",
                  "| scenario | a | b | c | d |", "|---|---|---|---|---|"]
        lines += [f"| {row['scenario']} | {split(row['results'], 'a')} | {split(row['results'], 'b')} | "
                  f"{split(row['results'], 'c')} | {split(row['results'], 'd')} |" for row in split_rows]
    handshakes = []
    for row in results["scenarios"]:
        seen = [f"{k} {r['resumed_share']:.0%} resumed on TLS {'1.2' if r['tls12_share'] > 0.5 else '1.3'}"
                for k, r in sorted(row["results"].items()) if r.get("handshakes_per_request", 0) > 0.5]
        if seen:
            handshakes.append(f"- {row['scenario']}: {', '.join(seen)}")
    if handshakes:
        lines += ["", "Handshakes the upstream counted, where there was one per request:"] + handshakes
    unavailable = {}
    for row in results["scenarios"]:
        for k, reason in row["unavailable"].items():
            unavailable.setdefault(reason, []).append(f"{k} in {row['scenario']}")
    if unavailable:
        lines += ["", "Could not take part:"]
        lines += [f"- {', '.join(where)}: {reason}" for reason, where in unavailable.items()]
    if "rustls_client_auth_handshakes_per_second" in results:
        lines += ["", f"S2 ceiling: rustls alone completes {results['rustls_client_auth_handshakes_per_second']:.0f} "
                      "client-auth handshakes/s in process (client and server in one thread, no I/O)."]
    if "js_component" in results:
        js = results["js_component"]
        lines += ["", f"JavaScript handler component (bench/guests-js/probe.ts): {js['size_mib']:.1f} MiB, built by "
                      f"`edgemtls build` in {js['build_seconds']:.1f} s; a host serving it starts in "
                      f"{js.get('serve_start_seconds_js', 0):.2f} s (it compiles the component) against "
                      f"{js.get('serve_start_seconds_rust', 0):.2f} s with the Rust probe."]
    if "store_scale" in results:
        lines += render_store_scale(results["store_scale"])
    for note in results["notes"]:
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few seconds per scenario, debug build (CI)")
    parser.add_argument("--duration", type=int, help="seconds per cell (default 8; smoke 1)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--workers", type=int, default=1,
                        help="threads of edgemtls, the native proxy and wasmtime serve (default 1, as nginx's one worker)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="results directory")
    parser.add_argument("--render", action="store_true", help="only re-render latest.md from latest.json")
    parser.add_argument("--store-scale-only", action="store_true", help="only the store-scale rows (both backends)")
    parser.add_argument("--sdk-only", action="store_true", help="only the SDK handler rows (Rust and JavaScript) against nginx")
    parser.add_argument("--h1-only", action="store_true", help="only the rows against the HTTP/1.1-only nginx upstream")
    parser.add_argument("--token-only", action="store_true", help="only the rows with the client key in a PKCS#11 token (SoftHSM2)")
    args = parser.parse_args()
    if args.render:
        results = json.loads((Path(args.out) / "latest.json").read_text())
        (Path(args.out) / "latest.md").write_text(render_markdown(results))
        print((Path(args.out) / "latest.md").read_text())
        return
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    bench = Bench(args)
    try:
        if args.store_scale_only:
            bench.run_store_scale()
        elif args.sdk_only:
            bench.run_sdk()
        elif args.h1_only:
            bench.run_h1()
        elif args.token_only:
            bench.run_token()
        else:
            bench.run()
    except BenchError as error:
        print(f"BENCHMARK FAILED: {error}", file=sys.stderr)
        print(f"logs: {bench.workdir}", file=sys.stderr)
        sys.exit(1)
    finally:
        bench.procs.stop_all()
    print((Path(args.out) / "latest.md").read_text())
    if not args.smoke:
        shutil.rmtree(bench.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
