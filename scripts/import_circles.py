#!/usr/bin/env python3
"""Finds import circles in a crate: scripts/import_circles.py host/src (or guest-sdk/src).

Builds the import graph of the crate's files: each file -> the files that define what it
names through `crate::`, `super::`, `self::` and child-module paths (in `use` trees and in
code), with re-exports (`pub use`) followed to the file that defines the item. Test modules
and tests.rs files are left out (a test borrowing a sibling's fixtures is no design edge),
and so are edges between a module file and its own descendants (containment, such as a
child naming its parent's types). Prints every circle (a strongly connected component of
more than one node) per file and per top-level module, and exits 1 when there is one.
It reads text, not Rust's resolver: a path it cannot place (an external crate, a local
name) is left out."""
import os, re, sys

src = sys.argv[1]
files = {}  # module path tuple -> file
for root, _, names in os.walk(src):
    for n in names:
        if not n.endswith('.rs') or n == 'tests.rs' or 'tests' in os.path.relpath(root, src).split('/'):
            continue
        p = os.path.join(root, n)
        parts = tuple(os.path.relpath(p, src)[:-3].split('/'))
        if parts[-1] in ('mod', 'lib', 'main'):
            parts = parts[:-1]
        files[parts] = p

def strip_comments(text):
    text = re.sub(r'//[^\n]*', '', text)
    text = re.sub(r'/\*.*?\*/', '', text, flags=re.S)
    # Test modules are left out: a test borrowing a sibling's fixtures is no design edge.
    m = re.search(r'#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*mod\s+\w+\s*\{', text)
    while m:
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {'{': 1, '}': -1}.get(text[i], 0); i += 1
        text = text[:m.start()] + text[i:]
        m = re.search(r'#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*mod\s+\w+\s*\{', text)
    return text

def expand(tree):
    """`a::{b, c::{d, e as f}}` -> [(path list, alias)]."""
    tree = tree.strip()
    out = []
    depth = 0
    # split top-level path prefix from a brace group
    i = tree.find('{')
    if i == -1:
        m = re.match(r'(.*?)\s+as\s+(\w+)$', tree)
        path, alias = (m.group(1), m.group(2)) if m else (tree, None)
        segs = [s for s in path.strip().split('::') if s]
        return [(segs, alias or (segs[-1] if segs else None))]
    prefix = [s for s in tree[:i].strip().split('::') if s]
    inner = tree[i + 1:tree.rfind('}')]
    items, cur = [], ''
    for c in inner:
        if c == '{': depth += 1
        if c == '}': depth -= 1
        if c == ',' and depth == 0:
            items.append(cur); cur = ''
        else:
            cur += c
    items.append(cur)
    for it in items:
        if not it.strip():
            continue
        for segs, alias in expand(it):
            if segs == ['self']:
                out.append((prefix, prefix[-1] if prefix else None))
            else:
                out.append((prefix + segs, alias))
    return out

def absolute(mod, segs):
    """Turns a path used in module `mod` into an absolute module path, or None (extern)."""
    if not segs:
        return None
    if segs[0] == 'crate':
        return list(segs[1:])
    base = list(mod)
    s = list(segs)
    if s[0] == 'self':
        s = s[1:]
    elif s[0] == 'super':
        while s and s[0] == 'super':
            base = base[:-1]; s = s[1:]
    elif tuple(base + [s[0]]) not in files:
        return None  # an external crate or a local name
    return base + s

uses = {}      # mod -> list of absolute paths
reexports = {} # mod -> {name: absolute path}
for mod, p in files.items():
    text = strip_comments(open(p).read())
    paths = []
    rex = {}
    for m in re.finditer(r'(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);', text):
        for segs, alias in expand(m.group(2)):
            if segs and segs[-1] == '*':
                a = absolute(mod, segs[:-1])
                if a is not None: paths.append(a)
                continue
            a = absolute(mod, segs)
            if a is None:
                continue
            paths.append(a)
            if m.group(1) and alias:
                rex[alias] = a
    for m in re.finditer(r'\b((?:crate|super|self)(?:::\w+)+)', text):
        a = absolute(mod, m.group(1).split('::'))
        if a is not None: paths.append(a)
    uses[mod] = paths
    reexports[mod] = rex

def resolve(path, depth=0):
    for i in range(len(path), -1, -1):
        m = tuple(path[:i])
        if m in files:
            rest = path[i:]
            if rest and depth < 20 and rest[0] in reexports[m] and reexports[m][rest[0]] != list(path):
                return resolve(reexports[m][rest[0]] + rest[1:], depth + 1)
            return m
    return None

edges = {m: set() for m in files}
for mod, paths in uses.items():
    for a in paths:
        t = resolve(a)
        if t is not None and t != mod:
            edges[mod].add(t)

def circles(edges):
    idx, low, stack, on, out, c = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(100000)
    def sc(v):
        idx[v] = low[v] = c[0]; c[0] += 1; stack.append(v); on.add(v)
        for w in edges[v]:
            if w not in idx:
                sc(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(comp)
    for v in edges:
        if v not in idx: sc(v)
    return out

name = lambda m: '::'.join(m) or 'crate'
# A child naming its parent module (`super::*` in tests, an item defined in the parent's
# mod.rs) is containment, not a circle between ideas: the per-file view leaves out edges
# between a module file and its own descendants.
def related(a, b):
    return a[:len(b)] == b or b[:len(a)] == a
file_edges = {m: {t for t in ts if not related(m, t)} for m, ts in edges.items()}
top = {}
for m, ts in edges.items():
    if not m: continue
    top.setdefault(m[:1], set()).update(t[:1] for t in ts if t and t[:1] != m[:1])
found = False
for label, g in (('file', file_edges), ('top-level module', top)):
    cs = circles(g)
    for comp in cs:
        found = True
        print(f'circle ({label}):', sorted(name(c) for c in comp))
        for a in sorted(comp):
            print('   ', name(a), '->', sorted(name(e) for e in g[a] if e in comp))
    if not cs:
        print(f'no circle among {len(g)} {label}s')
sys.exit(1 if found else 0)
