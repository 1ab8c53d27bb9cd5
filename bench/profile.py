#!/usr/bin/env python3
"""Where the CPU of a profiled edgemtls goes, by the leaf frame of each sample.

    perf record -F 999 -g -p "$(pgrep -f 'edgemtls.*serve')" -o perf.data -- sleep 6   # under load
    perf script -i perf.data -F comm,tid,ip,sym,dso > perf.txt
    python3 bench/profile.py perf.txt

Prints a Markdown table of shares. Guest code compiled by wasmtime has no symbols: a sample
whose stack holds a frame from the JIT map (perf-PID.map) counts as the guest's. Release
builds keep no frame pointers, so stacks are short: classify by the leaf, not the caller.
"""

import collections
import re
import sys

RULES = [
    ("allocator", r"je_|_rjem|jemalloc|\bmalloc\b|\bfree\b|_int_malloc|_int_free|cfree"),
    ("tokio", r"tokio::"),
    ("hyper (server and client)", r"hyper|h2::|http::|httparse"),
    ("TLS (rustls, ring)", r"rustls|ring::|ring_core|aes|gcm|chacha|sha2"),
    ("edgemtls host code", r"^edgemtls|<edgemtls|edgemtls_host"),
    ("memory copies (libc)", r"memmove|memcpy|memset|memcmp"),
]
KERNEL_NET = r"tcp|skb|ip_|_xmit|net_|dev_|sock|writev|sendmsg|recvmsg|inet|loopback|napi|softirq|nf_|__netif"
KERNEL_SCHED = r"sched|switch|futex|epoll|schedule|spin|wake|idle|enqueue|dequeue|hrtimer|tick|update_curr|select_task|pick_next|ttwu"


def classify(frames):
    leaf = frames[0]
    symbol = leaf.split(" ", 1)[1].rsplit(" (", 1)[0] if " " in leaf else leaf
    if "[kernel.kallsyms]" in leaf:
        if re.search(KERNEL_NET, symbol):
            return "kernel TCP/IP (send, receive, loopback)"
        if re.search(KERNEL_SCHED, symbol):
            return "kernel scheduling, futex, epoll"
        return "kernel other (syscall entry and exit, page faults)"
    if any("perf-" in f and ".map" in f for f in frames) or re.search(r"wasmtime|cranelift|wasi|wit_bindgen", symbol):
        return "guest and wasi:http plumbing (wasmtime)"
    for name, pattern in RULES:
        if re.search(pattern, symbol):
            return name
    return "other (libc, std, unresolved)"


def main():
    counts, total = collections.Counter(), 0
    for sample in open(sys.argv[1]).read().split("\n\n"):
        lines = [line.strip() for line in sample.strip().splitlines()]
        if len(lines) < 2:
            continue
        counts[classify(lines[1:])] += 1
        total += 1
    print("| share | where |\n| --- | --- |")
    for name, count in counts.most_common():
        print(f"| {100 * count / total:.0f}% | {name} |")
    print(f"\n{total} samples")


if __name__ == "__main__":
    main()
