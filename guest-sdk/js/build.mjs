// Builds a JavaScript or TypeScript handler into a WebAssembly component:
//   node build.mjs HANDLER.(js|ts) OUTPUT.wasm
// `edgemtls build` runs it from its toolchain directory (this file beside index.js and wit/,
// with esbuild and componentize-js installed one level up). esbuild compiles TypeScript and
// bundles the handler with this SDK into one module; componentize-js turns that into a
// component for the `handler` world in wit/.

import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error("usage: node build.mjs HANDLER.(js|ts) OUTPUT.wasm");
  process.exit(2);
}

const { build } = await import("esbuild");
const { componentize } = await import("@bytecodealliance/componentize-js");

const work = mkdtempSync(join(tmpdir(), "edgemtls-build-"));
try {
  const entry = join(work, "entry.js");
  // The handler's default export is served (a Zuplo function or a Cloudflare-style object);
  // a module without one registers its own `fetch` listener. Code written for Zuplo calls
  // the global fetch with `zuplo.mtlsCertificate`, so the global fetch is the SDK's.
  // With a default export, the SDK serves it through its own `incomingHandler` export, which
  // lets the host reuse the instance; a module without one uses the engine's fetch event.
  const probe = await build({ entryPoints: [resolve(input)], bundle: true, write: false, metafile: true, format: "esm",
    platform: "neutral", logLevel: "silent", external: ["*"] });
  const exported = Object.values(probe.metafile.outputs).flatMap((o) => o.exports);
  writeFileSync(
    entry,
    `import { installGlobalFetch, incomingHandlerFor } from "edgemtls";\n` +
      `import * as handler from ${JSON.stringify(resolve(input))};\n` +
      `installGlobalFetch();\n` +
      (exported.includes("default") ? `export const incomingHandler = incomingHandlerFor(handler.default);\n` : ""),
  );
  const bundled = join(work, "handler.js");
  const sdk = join(here, "index.js");
  await build({
    entryPoints: [entry],
    outfile: bundled,
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    logLevel: "error",
    // The host's interfaces are imports of the component, not modules to bundle.
    external: ["edgemtls:*", "wasi:*"],
    alias: { edgemtls: sdk, "@edgemtls/sdk": sdk, "@zuplo/runtime": sdk },
  });
  const started = Date.now();
  const { component } = await componentize({
    sourcePath: bundled,
    witPath: join(here, "wit"),
    worldName: "handler",
  });
  writeFileSync(output, component);
  const mib = (statSync(output).size / 1048576).toFixed(1);
  console.log(`built ${output} (${mib} MiB) from ${input} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
