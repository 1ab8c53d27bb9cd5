#!/usr/bin/env python3
"""Interleaved A/B of two edgemtls binaries on the small-request cells, beside nginx.

On these VMs uninterleaved runs of one binary move by up to 2x within minutes, so a change
to the per-request path is judged only by runs that alternate: nginx, A, B, A, B, ...

    cp target/release/edgemtls /tmp/edgemtls-a      # before the change
    cargo build --release -p edgemtls               # after
    python3 bench/ab.py /tmp/edgemtls-a target/release/edgemtls --rounds 3

Uses run.py's peers (bench-upstream, nginx, the probe components), which `python3
bench/run.py` builds. Prints CPU µs per request for each cell, and its ratio to nginx's; the native hyper+rustls
proxy takes part in the proxying cell.
"""

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="the first edgemtls binary")
    parser.add_argument("b", help="the second edgemtls binary")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="threads per system, as run.py (default 1)")
    parser.add_argument("--js", action="store_true", help="also the JavaScript SDK handler (reused), built with `edgemtls build`")
    parser.add_argument("--connections-per-request", action="store_true",
                        help="also S2 and S3 (a new upstream connection per request)")
    args = parser.parse_args()
    bench = run.Bench(argparse.Namespace(smoke=False, duration=args.duration, connections=args.connections,
                                         workers=args.workers, out="/tmp"))
    bench.js_probe = None
    try:
        if args.js:
            bench.build_js()
        bench.make_pki()
        bench.start_upstreams()
        n_port, n_proc = bench.start_nginx()
        natives = bench.start_native()
        hosts = {}
        for label, binary in [("a", args.a), ("b", args.b)]:
            hosts[label] = bench.start_edgemtls(Path(binary).resolve(), name=f"edgemtls-{label}")
        cells = [("S1 0 B", "/keepalive/b?bytes=0", 0, run.CLIENT_CN), ("constant", "/const", 3, None),
                 ("SDK fetch", "/sdk-rust", 0, run.CLIENT_CN)]
        if bench.js_probe:
            cells.append(("JS SDK", "/sdk-js", 0, run.CLIENT_CN))
        if args.connections_per_request:
            cells += [("S2", "/handshake/b?bytes=0", 0, run.CLIENT_CN), ("S3", "/resumption/b?bytes=0", 0, run.CLIENT_CN)]
        seen = {}
        for _ in range(args.rounds):
            for cell, path, size, cn in cells:
                stats = "keepalive" if cn else None
                upstream = path.split("/")[1]
                stats = upstream if upstream in bench.upstreams else stats
                native = natives.get(upstream, natives["keepalive"])
                peers = [("nginx", (n_port, n_proc)), ("native", native)] if cn else [("nginx", (n_port, n_proc))]
                if path in ("/sdk-js", "/sdk-rust"):
                    peers = []
                headers = None
                if path in ("/sdk-js", "/sdk-rust"):
                    headers = {"x-target": f"https://localhost:{bench.upstreams['keepalive'][0]}/b?bytes=0", "x-certificate": "bench_client"}
                for label, (port, proc) in [*peers, *hosts.items()]:
                    result = bench.wrk(port, path, proc, size, stats_upstream=stats, expect_cn=cn, headers=headers)
                    seen.setdefault((cell, label), []).append(result["cpu_us_per_request"])
        for cell, *_ in cells:
            nginx = statistics.median(seen.get((cell, "nginx"), [float("nan")]))
            for label in ["nginx", "native", "a", "b"]:
                values = seen.get((cell, label))
                if not values:
                    continue
                print(f"{cell:10} {label:6} " + " ".join(f"{v:6.1f}" for v in values)
                      + f"   median {statistics.median(values):6.1f} µs  {statistics.median(values) / nginx:5.2f}x nginx")
    except run.BenchError as error:
        print(f"A/B FAILED: {error}", file=sys.stderr)
        sys.exit(1)
    finally:
        bench.procs.stop_all()


if __name__ == "__main__":
    main()
