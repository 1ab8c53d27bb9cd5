#!/usr/bin/env python3
"""Interleaved A/B/... of edgemtls binaries against nginx, on the upstream users have: an nginx
that requires client certificates and speaks only HTTP/1.1 (or, with UPSTREAM=h2, bench-upstream,
which offers h2). Each binary serves the same route from its own store; nginx proxies the same
upstream; every round measures each system in turn (rotating who goes first), and the medians
of CPU per request and of the per-round ratios to nginx are printed.

    BINS=before=/tmp/edgemtls-a,after=target/release/edgemtls ROUNDS=8 DUR=3 python3 bench/ab_h1.py

HOLD=1 starts every system and keeps it serving (printing its port and pid) for perf.

HANDLER: url-forward (default), hello-mtls (the SDK's in-guest fetch), probe (the Rust SDK probe
of the tests, reused, fetching what its headers name; WASM names its file), file (url-forward
served from its .wasm file, a fresh instance per request; WASM names the file), or js (WASM names
a JavaScript handler built by `edgemtls build`, e.g. bench/guests-js/forward.ts). WASM_<name> gives the
binary called <name> a file of its own (two builds of one handler, side by side). WORKERS sets
edgemtls' worker threads (default 1, as nginx's one worker process).

NATIVE=1 adds the native hyper + rustls proxy; SPIN=12 adds it again with 12 µs of busy work per
request (a proxy slower in user space by exactly that much). SPLIT=1 prints user and kernel CPU
apart; WAKEUPS=1 counts the machine's scheduler wake-ups per request (`perf stat -a -e
sched:sched_wakeup`, so it needs perf): the peers a proxy wakes cost it kernel time."""
import os, subprocess, time, socket, tempfile, re, pathlib, statistics
ROOT = pathlib.Path(__file__).resolve().parent.parent
bins = [b.split("=", 1) for b in os.environ["BINS"].split(",")]
DUR = os.environ.get("DUR", "3"); ROUNDS = int(os.environ.get("ROUNDS", "8"))
w = pathlib.Path(tempfile.mkdtemp(prefix="abn."))
B0 = bins[0][1]
def E(*a, b=B0, store="store"): subprocess.run([b, "--store", str(w/store), *a], check=True, stdout=subprocess.DEVNULL)
def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def wait(p):
    for _ in range(600):
        try: socket.create_connection(("127.0.0.1", p), 0.2).close(); return
        except OSError: time.sleep(0.05)
    raise SystemExit(f"port {p} never opened")
def cpu_split(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) / os.sysconf("SC_CLK_TCK"), int(f[12]) / os.sysconf("SC_CLK_TCK")
E("pki", "init", "--out", str(w/"pki"))
E("pki", "issue", "--ca", str(w/"pki"), "--cn", "client", "--out", str(w/"pki"))
E("pki", "issue", "--ca", str(w/"pki"), "--cn", "localhost", "--server", "--san", "localhost", "--san", "127.0.0.1", "--out", str(w/"pki"))
for name, path in bins:
    E("cert", "create", "--name", "up", "--cert", str(w/"pki/client.pem"), "--key", str(w/"pki/client.key"), "--env", "development", b=path, store=f"store-{name}")
up, proxy = port(), port()
(w/"ng").mkdir(); (w/"ng/logs").mkdir()
temps = " ".join(f"{k}_temp_path {w}/ng/{k};" for k in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])
def nginx_conf(name, server):
    (w/f"ng/{name}.conf").write_text(f"""daemon off; master_process off; worker_processes 1; pid {w}/ng/{name}.pid; error_log {w}/ng/logs/{name}.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; {temps} {server} }}""")
    return subprocess.Popen(["nginx", "-c", str(w/f"ng/{name}.conf"), "-p", str(w/"ng")])
H2 = os.environ.get("UPSTREAM") == "h2"
status = port()  # the HTTP/1.1 upstream's stub_status: how many connections each system opened
upstream = subprocess.Popen([str(ROOT / "target/release/bench-upstream"), "--client-ca", str(w/"pki/ca.pem"), "--cert", str(w/"pki/localhost.pem"), "--key", str(w/"pki/localhost.key"), "--listen", f"127.0.0.1:{up}", "--stats-listen", f"127.0.0.1:{port()}"], stdout=subprocess.DEVNULL) if H2 else nginx_conf("upstream", f"""server {{ listen 127.0.0.1:{up} ssl; ssl_certificate {w}/pki/localhost.pem; ssl_certificate_key {w}/pki/localhost.key;
  ssl_client_certificate {w}/pki/ca.pem; ssl_verify_client on; keepalive_requests 1000000;
  location / {{ return 200 ""; }} }}
server {{ listen 127.0.0.1:{status}; location / {{ stub_status; }} }}""")
peer = nginx_conf("proxy", f"""upstream up {{ server 127.0.0.1:{up}; keepalive 64; }}
server {{ listen 127.0.0.1:{proxy}; location / {{ proxy_pass https://up; proxy_http_version 1.1; proxy_set_header Connection "";
  proxy_ssl_certificate {w}/pki/client.pem; proxy_ssl_certificate_key {w}/pki/client.key; proxy_ssl_trusted_certificate {w}/pki/ca.pem;
  proxy_ssl_verify on; proxy_ssl_name localhost; proxy_ssl_session_reuse on; }} }}""")
mode = os.environ.get("HANDLER", "url-forward")
opts = f'baseUrl = "https://localhost:{up}"' if mode in ("url-forward", "file") else f'url = "https://localhost:{up}/"'
if mode == "file": mode = os.environ.get("WASM", str(ROOT / "target/guests/wasm32-wasip2/release/url_forward.wasm"))
if mode == "js": mode = os.environ["WASM"]  # a JavaScript handler built by `edgemtls build`, reading the `url` option
# The Rust SDK probe (tests/guests/mtls-probe, WASM names the file) fetches what its headers name.
WRK_HEADERS = ["-H", f"x-target: https://localhost:{up}/", "-H", "x-certificate: up"] if mode == "probe" else []
if mode == "probe": mode = os.environ["WASM"]
# FRESH=1: a fresh instance per request whatever the handler's default.
reuse = "max_requests_per_instance = 1\n" if os.environ.get("FRESH") else "max_requests_per_instance = 1000\n" if WRK_HEADERS else ""
systems = []
for name, path in bins:
    p = port()
    cfg = w/f"{name}.toml"
    cfg.write_text(f"""listen = "127.0.0.1:{p}"
[[routes]]
path = "/"
handler = "{os.environ.get(f"WASM_{name}", mode)}"
{reuse}certificates = ["up"]
[routes.options]
{opts}
mtlsCertificate = "up"
[[upstreams]]
hosts = ["localhost:{up}"]
ca_bundle = "{w}/pki/ca.pem"
""")
    proc = subprocess.Popen([path, "--store", str(w/f"store-{name}"), "serve", "--config", str(cfg), "--workers", os.environ.get("WORKERS", "1")], stdout=open(w/f"{name}.log", "w"), stderr=subprocess.STDOUT, env={"RUST_LOG": "warn", **os.environ})
    systems.append((name, p, proc))
for p in [up, proxy] + [s[1] for s in systems]: wait(p)
systems.append(("nginx", proxy, peer))
def native_proxy(spin_us="0"):
    """The native hyper + rustls proxy (hyper-util's pooled client) against the same upstream,
    spending `spin_us` µs of busy work on each request; returns (port, process)."""
    p = port()
    proc = subprocess.Popen([str(ROOT / "target/release/native-proxy"), "--listen", f"127.0.0.1:{p}", "--upstream", f"https://localhost:{up}",
                             "--cert", str(w/"pki/client.pem"), "--key", str(w/"pki/client.key"), "--ca", str(w/"pki/ca.pem"),
                             "--spin-us", spin_us],
                            stdout=subprocess.DEVNULL, env={**os.environ, "TOKIO_WORKER_THREADS": "1"})
    wait(p)
    return p, proc
if os.environ.get("NATIVE"):
    systems.append(("native", *native_proxy()))
if os.environ.get("SPIN"):
    systems.append((f"native+{os.environ['SPIN']}us", *native_proxy(os.environ["SPIN"])))
if os.environ.get("HOLD"):
    # For profiling: keep every system serving and say where, until interrupted.
    for name, p, proc in systems:
        print(f"{name} port {p} pid {proc.pid}", flush=True)
    try:
        time.sleep(1e9)
    finally:
        for s in systems: s[2].terminate()
        upstream.terminate()
def accepted():
    if H2: return 0
    import urllib.request
    return int(re.search(r"server accepts handled requests\s+(\d+)", urllib.request.urlopen(f"http://127.0.0.1:{status}/").read().decode()).group(1))
def measure(p, pid, name=""):
    subprocess.run(["wrk", "-t1", "-c32", "-d1s", *WRK_HEADERS, f"http://127.0.0.1:{p}/"], capture_output=True)
    (u0, s0), a0 = cpu_split(pid), accepted()
    load = subprocess.Popen(["wrk", "-t1", "-c32", f"-d{DUR}s", "--latency", *WRK_HEADERS, f"http://127.0.0.1:{p}/"], stdout=subprocess.PIPE, text=True)
    wakeups = None
    if os.environ.get("WAKEUPS"):
        # Counted over the load's middle (one second in, one before its end), then scaled.
        counted = max(int(DUR) - 2, 1)
        time.sleep(1)
        stat = subprocess.run(["perf", "stat", "-a", "-x,", "-e", "sched:sched_wakeup", "--", "sleep", str(counted)],
                              capture_output=True, text=True).stderr
        wakeups = int(stat.split(",")[0]) * int(DUR) / counted
    out = load.communicate()[0]
    (u1, s1), a1 = cpu_split(pid), accepted()
    c0, c1 = u0 + s0, u1 + s1
    n = int(re.search(r"(\d+) requests in", out).group(1))
    if os.environ.get("SPLIT") or wakeups is not None:
        extra = f" wake-ups/req {wakeups / n:.2f}" if wakeups is not None else ""
        percentile = lambda q: re.search(rf"^ +{q}% +(\S+)", out, re.M).group(1)
        latency = f"p50 {percentile(50)} p99 {percentile(99)}"
        print(f"  {name or p}: user {(u1 - u0) / n * 1e6:.1f} + kernel {(s1 - s0) / n * 1e6:.1f} us/req{extra} {latency}", flush=True)
    if a1 - a0 > 0: print(f"  {p}: the upstream accepted {a1 - a0} connections in {n} requests", flush=True)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad: print("NON-2xx", bad.group(1), flush=True)
    return (c1 - c0) / n * 1e6
res = {s[0]: [] for s in systems}
for r in range(ROUNDS):
    order = systems[r % len(systems):] + systems[:r % len(systems)]
    for name, p, proc in order:
        res[name].append(measure(p, proc.pid, name))
    print(f"round {r}: " + "  ".join(f"{k} {v[-1]:.1f}" for k, v in res.items()), flush=True)
ng = statistics.median(res["nginx"])
for k, v in res.items():
    print(f"{k:10s} median {statistics.median(v):6.1f} us/req  ratio-to-nginx(median of per-round ratios) {statistics.median([a/b for a, b in zip(v, res['nginx'])]):.2f}")
for s in systems: s[2].terminate()
upstream.terminate()
