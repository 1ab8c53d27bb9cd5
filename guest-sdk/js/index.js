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
import { handle as sendWithCertificate } from "edgemtls:mtls/outgoing@0.1.0";
import { respond as respondInHost } from "edgemtls:mtls/pass-through@0.1.0";
import {
  head as requestHead,
  send as sendInOneCall,
  wait as waitForAnswer,
  respond as respondWhole,
} from "edgemtls:mtls/js-requests@0.1.0";
import { get as getOption, getAll as getAllOptions } from "wasi:config/store@0.2.0-rc.1";
import { getEnvironment } from "wasi:cli/environment@0.2.10";
import {
  Fields,
  IncomingBody,
  OutgoingBody,
  OutgoingRequest,
  OutgoingResponse,
  ResponseOutparam,
} from "wasi:http/types@0.2.10";

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
 *
 * A URL with a body the SDK can write itself (none, a string, bytes, or a body the host
 * still holds) is sent through `edgemtls:mtls/outgoing.handle`, which resolves the name and
 * sends in one host call; its answer's body stays in the host until the handler reads it,
 * and a handler that returns it unread has the host copy it to the caller. Anything else
 * (a `Request`, a `FormData` or `Blob` body, `redirect: "follow"` asked for, a `signal`)
 * goes through the engine's fetch.
 */
export function fetch(input, init) {
  const name = certificateName(init);
  if (name !== undefined && name !== null && typeof name !== "string") {
    return Promise.reject(new TypeError(`mtlsCertificate must be a certificate name (a string), not ${typeof name}`));
  }
  const certificate = name ?? "";
  const direct = directRequest(input, init);
  if (direct) return sendDirect(direct, certificate);
  const rest = withoutCertificate(init);
  if (certificate === "") return builtinFetch(input, rest);
  try {
    present(certificate);
  } catch (thrown) {
    return Promise.reject(certificateError(thrown, certificate));
  }
  try {
    return builtinFetch(input, rest);
  } finally {
    clear();
  }
}

/**
 * The running environment's variables (`[environments.<env>.vars]`), read from the host the
 * first time one is asked for: they are fixed for an instance's life.
 */
let variables;
const lookup = () => (variables ??= new Map(getEnvironment()));
export const environment = new Proxy(
  {},
  {
    get(_, key) {
      return typeof key === "string" ? lookup().get(key) : undefined;
    },
    has(_, key) {
      return typeof key === "string" && lookup().has(key);
    },
    ownKeys() {
      return [...lookup().keys()];
    },
    getOwnPropertyDescriptor(_, key) {
      const found = typeof key === "string" ? lookup().get(key) : undefined;
      return found !== undefined ? { value: found, enumerable: true, configurable: true, writable: false } : undefined;
    },
  },
);

/**
 * The route's options (`[routes.options]`). They are the same for every request an instance
 * serves (a reload makes new instances), so they are read from the host once: each host call
 * from JavaScript costs tens of microseconds. A route parameter (`params.NAME`) is the
 * request's own, read when asked.
 */
let routeOptions;
export const options = {
  get(name) {
    if (String(name).startsWith("params.")) {
      const value = getOption(name);
      return value === null ? undefined : value;
    }
    routeOptions ??= new Map(getAllOptions().filter(([key]) => !key.startsWith("params.")));
    return routeOptions.get(name);
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

const dispose = (resource) => resource[Symbol.dispose || Symbol.for("dispose")]();
const decoder = new TextDecoder();
const encoder = new TextEncoder();
/** Headers wasi:http refuses in a response (hop-by-hop); the host sets its own. */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "http2-settings", "te", "host"]);
/** How much one read of a body takes into JavaScript; bodies cross in large chunks or not at all. */
const READ_CHUNK = 1048576n;
/** How much one host-side copy (a splice) may move; the host streams it without the guest. */
const SPLICE_CHUNK = 1048576n;
const WRITE_CHUNK = 4096;
const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]);

const isClosed = (error) => error && error.payload && error.payload.tag === "closed";

// ---------------------------------------------------------------------------------------
// Bodies kept in the host. A body the handler got from the host (its request's, an
// upstream answer's) is a `HostBody`: the host's stream, read into JavaScript only when the
// handler reads it. Passed on unread (to `fetch`, or returned), the host copies it.

/** A body still in the host, and whether JavaScript has started reading it. */
class HostBody {
  constructor(open, owner) {
    // `open()` takes the body from its owner: [incoming-body, input-stream]. `owner` (an
    // upstream's incoming-response) is let go of with the body.
    this.open = open;
    this.owner = owner;
    this.opened = null;
    this.started = false;
  }

  /** The body's stream, taken from its owner the first time. */
  input() {
    if (!this.opened) this.opened = this.open();
    return this.opened[1];
  }

  /** Reads the next chunk into JavaScript; undefined at the end. */
  read() {
    this.started = true;
    try {
      return this.input().blockingRead(READ_CHUNK);
    } catch (error) {
      this.close();
      if (isClosed(error)) return undefined;
      throw new TypeError("the body could not be read: the connection it came on failed");
    }
  }

  /** Reads the rest into one buffer. */
  readAll() {
    const chunks = [];
    let length = 0;
    for (let chunk = this.read(); chunk !== undefined; chunk = this.read()) {
      chunks.push(chunk);
      length += chunk.length;
    }
    if (chunks.length === 1) return chunks[0];
    const all = new Uint8Array(length);
    let offset = 0;
    for (const chunk of chunks) {
      all.set(chunk, offset);
      offset += chunk.length;
    }
    return all;
  }

  /** Copies the rest into `output` in the host; the bytes never enter JavaScript. */
  spliceInto(output) {
    this.started = true;
    const input = this.input();
    try {
      for (;;) output.blockingSplice(input, SPLICE_CHUNK);
    } catch (error) {
      this.close();
      if (!isClosed(error)) throw new TypeError("the body could not be passed on: the connection it came on failed");
    }
  }

  /** The upstream response this body is still part of, taken to be passed on whole. */
  takeOwner() {
    if (this.opened || this.started || !this.owner) return undefined;
    const owner = this.owner;
    this.owner = null;
    this.started = true;
    return owner;
  }

  close() {
    if (!this.opened) return;
    const [body, input] = this.opened;
    this.opened = [null, null];
    if (input) dispose(input);
    if (body) dispose(IncomingBody.finish(body));
    if (this.owner) dispose(this.owner);
    this.owner = null;
  }

  /** A ReadableStream over this body that reads only when pulled. */
  stream() {
    const stream = new ReadableStream(
      {
        pull: (controller) => {
          try {
            const chunk = this.read();
            if (chunk === undefined) controller.close();
            else controller.enqueue(chunk);
          } catch (error) {
            controller.error(error);
          }
        },
      },
      // No read ahead: a body nobody reads stays in the host.
      { highWaterMark: 0 },
    );
    hostBodies.set(stream, this);
    return stream;
  }
}

/** The HostBody behind a ReadableStream the SDK made, to pass it on unread. */
const hostBodies = new WeakMap();

function unreadHostBody(stream) {
  const body = stream ? hostBodies.get(stream) : undefined;
  return body && !body.started ? body : undefined;
}

// ---------------------------------------------------------------------------------------
// Sending. `directRequest` says whether the SDK can send a fetch itself (else the engine's
// fetch does), `sendDirect` sends it through `edgemtls:mtls/outgoing.handle`.

function directRequest(input, init) {
  let url;
  if (typeof input === "string") url = input;
  else if (input instanceof URL) url = input.href;
  else return undefined;
  const options = init && typeof init === "object" ? init : {};
  if (options.redirect !== undefined && options.redirect !== "manual") return undefined;
  if (options.signal) return undefined;
  const body = options.body;
  if (body !== undefined && body !== null && typeof body !== "string" && !(body instanceof Uint8Array) &&
    !(body instanceof ArrayBuffer) && !unreadHostBody(body)) {
    return undefined;
  }
  const match = /^(https?):\/\/([^/?#]+)([^#]*)/i.exec(url);
  if (!match) return undefined;
  const method = options.method === undefined ? "GET" : String(options.method);
  return { url, scheme: match[1].toLowerCase(), authority: match[2], path: match[3] || "/", method, headers: options.headers, body };
}

/** `init.headers` (an object, a Headers, or pairs) as wasi:http fields. */
function fieldsOf(headers, extra) {
  const list = [];
  if (headers instanceof Headers) {
    for (const [name, value] of headers) list.push([name, encoder.encode(value)]);
  } else if (Array.isArray(headers)) {
    for (const [name, value] of headers) list.push([String(name).toLowerCase(), encoder.encode(String(value))]);
  } else if (headers && typeof headers === "object") {
    for (const name of Object.keys(headers)) list.push([name.toLowerCase(), encoder.encode(String(headers[name]))]);
  }
  if (extra) list.push(extra);
  return Fields.fromList(list);
}

function methodVariant(method) {
  const upper = method.toUpperCase();
  return METHODS.has(upper) ? { tag: upper.toLowerCase() } : { tag: "other", val: method };
}

/** `init.headers` (an object, a Headers, or pairs) as name and value strings. */
function headerPairs(headers) {
  if (headers instanceof Headers) return [...headers];
  if (Array.isArray(headers)) return headers.map(([name, value]) => [String(name).toLowerCase(), String(value)]);
  if (headers && typeof headers === "object") return Object.keys(headers).map((name) => [name.toLowerCase(), String(headers[name])]);
  return [];
}

function sendDirect(request, certificate) {
  if (request.body === undefined || request.body === null) {
    // No body: built and sent in one host call.
    let future;
    try {
      future = sendInOneCall(request.method, request.url, headerPairs(request.headers), certificate);
    } catch (thrown) {
      return Promise.reject(sendError(thrown, certificate));
    }
    return Promise.resolve().then(() => receive(future));
  }
  let bytes;
  if (typeof request.body === "string") bytes = encoder.encode(request.body);
  else if (request.body instanceof ArrayBuffer) bytes = new Uint8Array(request.body);
  else if (request.body instanceof Uint8Array) bytes = request.body;
  const passedOn = bytes === undefined ? unreadHostBody(request.body) : undefined;
  let outgoing;
  try {
    const headers = request.headers;
    const hasLength = bytes !== undefined && !(headers instanceof Headers ? headers.has("content-length") : false);
    outgoing = new OutgoingRequest(fieldsOf(headers, hasLength ? ["content-length", encoder.encode(String(bytes.length))] : undefined));
    outgoing.setMethod(methodVariant(request.method));
    outgoing.setScheme({ tag: request.scheme === "https" ? "HTTPS" : "HTTP" });
    outgoing.setAuthority(request.authority);
    outgoing.setPathWithQuery(request.path);
  } catch (error) {
    return Promise.reject(new TypeError(`the request could not be built: ${error && error.message ? error.message : String(error)}`));
  }
  const outgoingBody = outgoing.body();
  let future;
  try {
    // Resolves the name and sends in one host call.
    future = sendWithCertificate(outgoing, undefined, certificate);
  } catch (thrown) {
    dispose(outgoingBody);
    return Promise.reject(sendError(thrown, certificate));
  }
  try {
    if (bytes !== undefined || passedOn) {
      const output = outgoingBody.write();
      if (passedOn) passedOn.spliceInto(output);
      else for (let offset = 0; offset < bytes.length; offset += WRITE_CHUNK) output.blockingWriteAndFlush(bytes.subarray(offset, offset + WRITE_CHUNK));
      dispose(output);
    }
    OutgoingBody.finish(outgoingBody, undefined);
  } catch (error) {
    dispose(future);
    return Promise.reject(error instanceof TypeError ? error : new TypeError("NetworkError when attempting to fetch resource (the request body could not be sent)"));
  }
  // Sent now; waited for when the caller awaits, so requests started together run together.
  return Promise.resolve().then(() => receive(future));
}

/** What `outgoing.handle` (or `send`) threw, as fetch rejects with it. */
function sendError(thrown, certificate) {
  const error = thrown && thrown.payload;
  if (error && error.tag === "certificate") return certificateError({ payload: error.val }, certificate);
  const code = error && error.val ? error.val : undefined;
  const why = code && code.tag === "internal-error" && code.val ? code.val : code ? code.tag : "failed";
  return new TypeError(`NetworkError when attempting to fetch resource (${why})`);
}

/** Waits for the upstream's answer, in one host call. */
function receive(future) {
  let answer;
  try {
    answer = waitForAnswer(future);
  } catch (thrown) {
    const why = thrown && typeof thrown.payload === "string" ? thrown.payload : "the request failed";
    throw new TypeError(`NetworkError when attempting to fetch resource: ${why}`);
  }
  return new UpstreamResponse(answer[1], answer[0]);
}

/**
 * A Response from the host: its headers become JavaScript only when asked for, its body
 * only when read. Returned as it is, or its body in a new Response, the host streams it.
 */
class UpstreamResponse extends Response {
  #incoming;
  #headers;
  #body;
  #stream;
  #copy;

  constructor(incoming, status) {
    super(null, { status });
    this.#incoming = incoming;
    this.#body = new HostBody(() => {
      const body = incoming.consume();
      return [body, body.stream()];
    }, incoming);
  }

  get headers() {
    if (!this.#headers) {
      const headers = new Headers();
      const fields = this.#incoming.headers();
      for (const [name, value] of fields.entries()) headers.append(name, decoder.decode(value));
      dispose(fields);
      this.#headers = headers;
    }
    return this.#headers;
  }

  get body() {
    if (this.#copy) return this.#copy.body;
    if (this.#stream === undefined) this.#stream = this.#body.stream();
    return this.#stream;
  }

  get bodyUsed() {
    return this.#copy ? this.#copy.bodyUsed : this.#body.started;
  }

  arrayBuffer() {
    return this.bytes().then((bytes) => (bytes.buffer.byteLength === bytes.length ? bytes.buffer : bytes.slice().buffer));
  }

  bytes() {
    if (this.#copy) return this.#copy.arrayBuffer().then((buffer) => new Uint8Array(buffer));
    if (this.#body.started) return Promise.reject(new TypeError("the body was already read"));
    try {
      return Promise.resolve(this.#body.readAll());
    } catch (error) {
      return Promise.reject(error);
    }
  }

  text() {
    return this.bytes().then((bytes) => decoder.decode(bytes));
  }

  json() {
    return this.text().then((text) => JSON.parse(text));
  }

  blob() {
    return this.bytes().then((bytes) => new Blob([bytes], { type: this.headers.get("content-type") ?? "" }));
  }

  formData() {
    return this.bytes().then((bytes) => new Response(bytes, { headers: this.headers }).formData());
  }

  clone() {
    // The body is read once, into a copy for each side; this response reads its copy.
    const bytes = this.#copy ? undefined : this.#body.readAll();
    if (bytes !== undefined) this.#copy = new Response(bytes, { status: this.status, headers: this.headers });
    return this.#copy.clone();
  }

  /**
   * Answers `responseOut` with this response in the host, if its body is still unread: with
   * the upstream's headers unless the handler looked at them (and so may have changed them).
   */
  respondInHost(responseOut) {
    if (this.#copy) return false;
    const incoming = this.#body.takeOwner();
    if (!incoming) return false;
    respondInHost(incoming, undefined, this.#headers ? responseFields(this.#headers) : undefined, responseOut);
    return true;
  }
}

// ---------------------------------------------------------------------------------------
// Serving without the engine's fetch event. StarlingMonkey's fetch event is one global
// object per instance ("respondWith can't be called twice on the same event"), so an
// instance that used it cannot serve a second request. `edgemtls build` exports
// `incomingHandler` instead: each `wasi:http/incoming-handler.handle` call becomes a standard
// Request, and the handler's Response is written back, so the host can reuse the instance.

/** The caller's request; its body stays in the host until the handler reads or passes it on. */
function toRequest(incoming) {
  // Method, URL and headers in one host call.
  const { method, url, headers } = requestHead(incoming);
  let body = null;
  if (method !== "GET" && method !== "HEAD") {
    body = new HostBody(() => {
      const incomingBody = incoming.consume();
      return [incomingBody, incomingBody.stream()];
    }).stream();
  }
  return new Request(url, { method, headers, body, duplex: "half" });
}

/** Headers as the fields a response goes out with, hop-by-hop ones left out. */
function responseFields(headers) {
  const list = [];
  for (const [name, value] of headers) {
    if (!HOP_BY_HOP.has(name.toLowerCase())) list.push([name, encoder.encode(value)]);
  }
  return Fields.fromList(list);
}

/**
 * Headers as one block of `name:value` lines, hop-by-hop ones left out: one string crosses to
 * the host for a few microseconds, a list costs about ten per header.
 */
function headerBlock(headers) {
  let block = "";
  for (const [name, value] of headers) {
    if (!HOP_BY_HOP.has(name.toLowerCase())) block += `${name}:${value}\n`;
  }
  return block;
}

const NO_BYTES = new Uint8Array(0);

async function send(response, responseOut) {
  // An upstream's answer returned with its body unread goes from the upstream to the caller
  // in the host: as it is, or in a new Response with other status and headers.
  if (response instanceof UpstreamResponse && response.respondInHost(responseOut)) return;
  const hostBody = unreadHostBody(response.body);
  const upstream = hostBody && hostBody.takeOwner();
  if (upstream) {
    respondInHost(upstream, response.status, responseFields(response.headers), responseOut);
    return;
  }
  // A body JavaScript holds (a string's, an array's) comes as one chunk: with the head, it
  // goes out in one call, instead of nine through wasi:http.
  const reader = !hostBody && response.body ? response.body.getReader() : undefined;
  const first = reader ? await reader.read() : { done: true };
  const next = first.done ? first : await reader.read();
  if (!hostBody && next.done) {
    respondWhole(response.status, headerBlock(response.headers), first.done ? NO_BYTES : first.value, responseOut);
    return;
  }
  const outgoing = new OutgoingResponse(responseFields(response.headers));
  outgoing.setStatusCode(response.status);
  const outgoingBody = outgoing.body();
  ResponseOutparam.set(responseOut, { tag: "ok", val: outgoing });
  const stream = outgoingBody.write();
  const write = (value) => {
    for (let offset = 0; offset < value.length; offset += WRITE_CHUNK) {
      stream.blockingWriteAndFlush(value.subarray(offset, offset + WRITE_CHUNK));
    }
  };
  if (hostBody) {
    // The caller's own body, sent back: copied in the host.
    hostBody.spliceInto(stream);
  } else {
    // A body that streams: what was read already, then the rest as it comes.
    write(first.value);
    for (let chunk = next; !chunk.done; chunk = await reader.read()) write(chunk.value);
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
