#!/usr/bin/env python3
"""Writes deps/ for the JavaScript handler world from the repository's wit/ (`--check`: only
compares, for the tests).

componentize-js 0.23 embeds StarlingMonkey built against WASI 0.2.10, and its fetch-event
only attaches to `wasi:http/incoming-handler@0.2.10`. The host implements 0.2.12, which
wasmtime links to 0.2.10 imports (semver-compatible). WASI 0.2.11 and 0.2.12 changed no
interface the handler world uses; they added `wasi:cli/exit.exit-with-code`, which is left
out here. Run this after updating wit/deps.
"""
import re
import shutil
import sys
import tempfile
from pathlib import Path

here = Path(__file__).resolve().parent
source = here.parent.parent.parent / "wit" / "deps"
check = "--check" in sys.argv[1:]
target = Path(tempfile.mkdtemp()) / "deps" if check else here / "deps"
shutil.rmtree(target, ignore_errors=True)
target.mkdir(parents=True)
for path in sorted(source.glob("*.wit")):
    text = path.read_text().replace("@0.2.12", "@0.2.10").replace("0.2.12;", "0.2.10;")
    # Items newer than 0.2.10: a doc comment, @since(version = 0.2.1x), and the item.
    text = re.sub(r"(\n *///[^\n]*)*\n *@since\(version = 0\.2\.1[1-9]\)\n[^\n]*", "", text)
    (target / path.name).write_text(text)
shutil.copytree(source / "config", target / "config")
mtls = (source.parent / "mtls.wit").read_text()
# The interfaces a JavaScript handler imports, their wasi:http types at the engine's release.
interfaces = [re.search(r"(///[^\n]*\n)*interface " + name + r" \{.*?\n\}\n", mtls, re.S).group(0).replace("@0.2.12", "@0.2.10")
              for name in ("types", "outgoing", "next-request", "pass-through", "js-requests")]
(target / "mtls.wit").write_text(
    "// The part of edgemtls:mtls a JavaScript handler imports (see wit/mtls.wit).\n"
    "package edgemtls:mtls@0.1.0;\n\n" + "\n".join(interfaces))
if check:
    # `--check`: the committed deps/ must be what this script writes from wit/ now.
    def files(root):
        return {p.relative_to(root): p.read_text() for p in root.rglob("*.wit")}
    stale = sorted(str(p) for p in files(here / "deps").keys() | files(target).keys()
                   if files(here / "deps").get(p) != files(target).get(p))
    shutil.rmtree(target.parent, ignore_errors=True)
    if stale:
        sys.exit(f"guest-sdk/js/wit/deps is out of date ({', '.join(stale)}): run python3 guest-sdk/js/wit/make-deps.py")
    print("guest-sdk/js/wit/deps matches wit/")
else:
    print(f"wrote {target}")
