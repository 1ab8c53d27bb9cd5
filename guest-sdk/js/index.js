// The edgemtls SDK for JavaScript and TypeScript handlers, compiled into the handler's
// component by `edgemtls build` (componentize-js). See index.d.ts for the API.
//
// JavaScript's built-in fetch takes no certificate name and StarlingMonkey passes no unknown
// init member to the host, so a request that names a certificate goes like this: the host
// resolves the name now (`next-request.present`, which fails with why it cannot be used),
// the built-in fetch sends the request synchronously, and that send takes the certificate;
// `clear` right after makes sure no later request can. No header is involved, so nobody who
// calls a route can choose a certificate.

import { present, clear } from "edgemtls:mtls/next-request@0.1.0";
import { get as getOption, getAll as getAllOptions } from "wasi:config/store@0.2.0-rc.1";
import { getEnvironment } from "wasi:cli/environment@0.2.10";
import { Fields, IncomingBody, OutgoingBody, OutgoingResponse, ResponseOutparam } from "wasi:http/types@0.2.10";

const builtinFetch = globalThis.fetch;

/** Why a named certificate could not be used; nothing was sent. */
export class CertificateError extends Error {
  constructor(kind, certificate, message) {
    super(message);
    this.name = new.target.name;
    this.kind = kind;
    this.certificate = certificate;
  }
}
export class CertificateNotFoundError extends CertificateError {}
export class CertificateDisabledError extends CertificateError {}
export class CertificateNotInEnvironmentError extends CertificateError {}
export class CertificateExpiredError extends CertificateError {}
export class CertificateNotYetValidError extends CertificateError {}

const KINDS = {
  "not-found": [CertificateNotFoundError, (name) => `no certificate named '${name}' (edgemtls cert list shows the names)`],
  "disabled": [CertificateDisabledError, (name) => `certificate '${name}' is disabled (edgemtls cert enable ${name})`],
  "not-in-environment": [CertificateNotInEnvironmentError, (name) => `certificate '${name}' is not scoped to this environment`],
  "expired": [CertificateExpiredError, (name) => `certificate '${name}' has expired`],
  "not-yet-valid": [CertificateNotYetValidError, (name) => `certificate '${name}' is not valid yet`],
};

function certificateError(thrown, name) {
  // componentize-js throws a result's error value as `payload` (a variant: { tag, val }).
  const variant = thrown && typeof thrown === "object" && "payload" in thrown ? thrown.payload : thrown;
  const entry = variant && KINDS[variant.tag];
  if (!entry) return thrown;
  const [Type, describe] = entry;
  const certificate = typeof variant.val === "string" ? variant.val : name;
  return new Type(variant.tag, certificate, describe(certificate));
}

/** The certificate name an init names: `mtlsCertificate`, or Zuplo's `zuplo.mtlsCertificate`. */
function certificateName(init) {
  if (!init || typeof init !== "object") return undefined;
  if (init.mtlsCertificate !== undefined) return init.mtlsCertificate;
  return init.zuplo && typeof init.zuplo === "object" ? init.zuplo.mtlsCertificate : undefined;
}

function withoutCertificate(init) {
  if (!init || typeof init !== "object") return init;
  const { mtlsCertificate, zuplo, ...rest } = init;
  if (zuplo && typeof zuplo === "object") {
    const { mtlsCertificate: _, ...otherZuplo } = zuplo;
    if (Object.keys(otherZuplo).length > 0) rest.zuplo = otherZuplo;
  }
  return rest;
}

/**
 * `fetch`, presenting the client certificate `init.mtlsCertificate` (or
 * `init.zuplo.mtlsCertificate`) names; without a name (or with ""), none.
 */
export function fetch(input, init) {
  const name = certificateName(init);
  const rest = withoutCertificate(init);
  if (name === undefined || name === null || name === "") return builtinFetch(input, rest);
  if (typeof name !== "string") {
    return Promise.reject(new TypeError(`mtlsCertificate must be a certificate name (a string), not ${typeof name}`));
  }
  try {
    present(name);
  } catch (thrown) {
    return Promise.reject(certificateError(thrown, name));
  }
  try {
    return builtinFetch(input, rest);
  } finally {
    clear();
  }
}

/** The running environment's variables (`[environments.<env>.vars]`), read when asked. */
export const environment = new Proxy(
  {},
  {
    get(_, key) {
      if (typeof key !== "string") return undefined;
      const found = getEnvironment().find(([name]) => name === key);
      return found ? found[1] : undefined;
    },
    has(_, key) {
      return typeof key === "string" && getEnvironment().some(([name]) => name === key);
    },
    ownKeys() {
      return getEnvironment().map(([name]) => name);
    },
    getOwnPropertyDescriptor(_, key) {
      const found = typeof key === "string" ? getEnvironment().find(([name]) => name === key) : undefined;
      return found ? { value: found[1], enumerable: true, configurable: true, writable: false } : undefined;
    },
  },
);

/** The route's options (`[routes.options]`), read when asked. */
export const options = {
  get(name) {
    const value = getOption(name);
    return value === null ? undefined : value;
  },
  all() {
    return Object.fromEntries(getAllOptions());
  },
};

/** What a handler gets beside the request. */
function contextFor(request) {
  return { environment, options, request, waitUntil() {} };
}

/**
 * An RFC 9457 problem+json response in the shape the host and the Rust SDK write:
 * `type` is `urn:edgemtls:problem:<reason>`, and `reason` repeats the short form.
 */
function problem(status, reason, title, detail, extra) {
  const body = { type: `urn:edgemtls:problem:${reason}`, title, status, detail, reason, ...extra };
  return new Response(JSON.stringify(body) + "\n", {
    status,
    headers: { "content-type": "application/problem+json" },
  });
}

/**
 * Serves `handler` for every request: a function `(request, context)` (Zuplo's request
 * handler), or an object with `fetch(request, env, context)` (Cloudflare's module worker).
 * A CertificateError the handler lets through answers 502 and names the kind.
 */
export function serve(handler) {
  addEventListener("fetch", (event) => event.respondWith(dispatch(handler, event.request)));
}

async function dispatch(handler, request) {
  try {
    if (typeof handler === "function") return await handler(request, contextFor(request));
    return await handler.fetch(request, environment, contextFor(request));
  } catch (error) {
    if (error instanceof CertificateError) {
      return problem(502, `certificate-${error.kind}`, "Client certificate cannot be used", error.message, {
        certificate: error.certificate,
      });
    }
    return problem(500, "handler-error", "Handler failed", `the handler failed: ${error && error.message ? error.message : String(error)}`);
  }
}

/** Zuplo's code calls the global fetch with `zuplo.mtlsCertificate`: make that one ours. */
export function installGlobalFetch() {
  globalThis.fetch = fetch;
}

// ---------------------------------------------------------------------------------------
// Serving without the engine's fetch event. StarlingMonkey's fetch event is one global
// object per instance ("respondWith can't be called twice on the same event"), so an
// instance that used it cannot serve a second request. `edgemtls build` exports
// `incomingHandler` instead: each `wasi:http/incoming-handler.handle` call becomes a standard
// Request, and the handler's Response is written back, so the host can reuse the instance.

const dispose = (resource) => resource[Symbol.dispose || Symbol.for("dispose")]();
const decoder = new TextDecoder();
const encoder = new TextEncoder();
/** Headers wasi:http refuses in a response (hop-by-hop); the host sets its own. */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "http2-settings", "te", "host"]);
const READ_CHUNK = 65536n;
const WRITE_CHUNK = 4096;

function methodOf(incoming) {
  const method = incoming.method();
  return method.tag === "other" ? method.val : method.tag.toUpperCase();
}

function toRequest(incoming) {
  const method = methodOf(incoming);
  const scheme = incoming.scheme();
  const protocol = !scheme ? "http" : scheme.tag === "other" ? scheme.val : scheme.tag.toLowerCase();
  const authority = incoming.authority() ?? "localhost";
  const path = incoming.pathWithQuery() ?? "/";
  const fields = incoming.headers();
  const headers = new Headers();
  for (const [name, value] of fields.entries()) headers.append(name, decoder.decode(value));
  dispose(fields);
  let body = null;
  if (method !== "GET" && method !== "HEAD") {
    const incomingBody = incoming.consume();
    const stream = incomingBody.stream();
    body = new ReadableStream({
      pull(controller) {
        try {
          controller.enqueue(stream.blockingRead(READ_CHUNK));
        } catch (error) {
          dispose(stream);
          dispose(IncomingBody.finish(incomingBody));
          if (error && error.payload && error.payload.tag === "closed") controller.close();
          else controller.error(new TypeError("the request body could not be read"));
        }
      },
    });
  }
  return new Request(`${protocol}://${authority}${path}`, { method, headers, body, duplex: "half" });
}

async function send(response, responseOut) {
  const list = [];
  for (const [name, value] of response.headers) {
    if (!HOP_BY_HOP.has(name.toLowerCase())) list.push([name, encoder.encode(value)]);
  }
  const outgoing = new OutgoingResponse(Fields.fromList(list));
  outgoing.setStatusCode(response.status);
  const outgoingBody = outgoing.body();
  ResponseOutparam.set(responseOut, { tag: "ok", val: outgoing });
  const stream = outgoingBody.write();
  if (response.body) {
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      for (let offset = 0; offset < value.length; offset += WRITE_CHUNK) {
        stream.blockingWriteAndFlush(value.subarray(offset, offset + WRITE_CHUNK));
      }
    }
  }
  dispose(stream);
  OutgoingBody.finish(outgoingBody, undefined);
}

/** The `wasi:http/incoming-handler` export that serves `handler` request after request. */
export function incomingHandlerFor(handler) {
  return {
    async handle(incoming, responseOut) {
      const request = toRequest(incoming);
      const response = await dispatch(handler, request);
      await send(response, responseOut);
    },
  };
}
