#!/usr/bin/env python3
"""How long a normal request waits beside guests that compute without end: the price of the
epoch's pace (host/src/runtime/slice.rs). Serves the test probe guest, starts SPINNERS
requests that loop forever (x-mode spin), then times 40 normal requests (x-mode env).

    python3 bench/fairness.py target/release/edgemtls [WORKERS]   # WORKERS: 1 (default)

Build the probe first (cargo build -p edgemtls-e2e --tests builds it into target/guests)."""
import http.client, pathlib, statistics, subprocess, sys, tempfile, threading, time

from run import BenchError, free_port, wait_port

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROBE = ROOT / "target/guests/wasm32-wasip2/release/mtls_probe.wasm"
SPINNERS = 4


def main():
    binary, workers = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "1"
    if not PROBE.is_file():
        sys.exit(f"{PROBE} is missing: build the tests' guests first (cargo build -p edgemtls-e2e --tests)")
    work = pathlib.Path(tempfile.mkdtemp(prefix="edgemtls-fairness-"))
    port = free_port()
    (work / "edgemtls.toml").write_text(f'listen = "127.0.0.1:{port}"\n[limits]\nrequest_timeout_ms = 20000\n'
                                        f'[[routes]]\npath = "/probe"\nhandler = "{PROBE}"\n')
    host = subprocess.Popen([binary, "--store", str(work / "store"), "serve", "--config", str(work / "edgemtls.toml"),
                             "--workers", workers], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        try:
            wait_port(port, host, timeout=60)
        except BenchError as error:
            sys.exit(f"edgemtls did not start: {error}")

        def get(mode):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("GET", "/probe", headers={"x-mode": mode, "x-var": "HOME"})
            response = connection.getresponse()
            response.read()
            return response.status

        for _ in range(3):
            get("env")
        for _ in range(SPINNERS):
            threading.Thread(target=get, args=("spin",), daemon=True).start()
        time.sleep(0.5)  # a measurement, not a wait for a condition: the spinners are under way
        waits = []
        for _ in range(40):
            started = time.perf_counter()
            status = get("env")
            waits.append((time.perf_counter() - started) * 1000)
            if status != 200:
                sys.exit(f"a normal request was answered {status}")
        print(f"{binary}: a normal request beside {SPINNERS} spinning guests ({workers} worker(s)): "
              f"median {statistics.median(waits):.1f} ms, max {max(waits):.1f} ms")
    finally:
        host.kill()


if __name__ == "__main__":
    main()
