// Types of the edgemtls SDK for JavaScript and TypeScript handlers.

/** What `fetch` takes beyond the standard `RequestInit`. */
export interface MtlsRequestInit extends RequestInit {
  /** The name of the client certificate to present (edgemtls cert list); "" or absent: none. */
  mtlsCertificate?: string;
  /** Zuplo's spelling, so Zuplo handlers run unchanged. */
  zuplo?: { mtlsCertificate?: string };
}

/**
 * The standard `fetch`, presenting the named client certificate. Rejects with a
 * `CertificateError` subclass when the name cannot be used (nothing is sent then).
 * The answer's body stays in the host until it is read; returned unread (as it is, or in
 * `new Response(answer.body, …)`), the host streams it to the caller. A 3xx comes back as
 * it is (an explicit `redirect: "follow"` goes through the engine's own fetch).
 */
export function fetch(input: RequestInfo | URL, init?: MtlsRequestInit): Promise<Response>;

/** Why a named certificate could not be used. */
export class CertificateError extends Error {
  /** "not-found" | "disabled" | "not-in-environment" | "expired" | "not-yet-valid" */
  readonly kind: "not-found" | "disabled" | "not-in-environment" | "expired" | "not-yet-valid";
  /** The name that was asked for. */
  readonly certificate: string;
}
export class CertificateNotFoundError extends CertificateError {}
export class CertificateDisabledError extends CertificateError {}
export class CertificateNotInEnvironmentError extends CertificateError {}
export class CertificateExpiredError extends CertificateError {}
export class CertificateNotYetValidError extends CertificateError {}

/** The running environment's variables (`[environments.<env>.vars]` in edgemtls.toml). */
export const environment: Readonly<Record<string, string | undefined>>;

/** The route's options (`[routes.options]` in edgemtls.toml). */
export const options: {
  get(name: string): string | undefined;
  all(): Record<string, string>;
};

/** What a handler gets beside the request. */
export interface Context {
  environment: Readonly<Record<string, string | undefined>>;
  options: typeof options;
  request: Request;
  waitUntil(promise: Promise<unknown>): void;
}

/** A handler: Zuplo's `(request, context)` function, or Cloudflare's `{ fetch(request, env, ctx) }`. */
export type Handler =
  | ((request: Request, context: Context) => Response | Promise<Response>)
  | { fetch(request: Request, env: Readonly<Record<string, string | undefined>>, context: Context): Response | Promise<Response> };

/** Serves `handler` through the engine's `fetch` event, one request per instance. `edgemtls
 * build` serves a default export with `incomingHandlerFor` instead, which lets instances be
 * reused; `serve` is for a module that registers its handler itself. */
export function serve(handler: Handler): void;

/** The `wasi:http/incoming-handler` export that serves `handler` request after request on one
 * instance (`edgemtls build` exports it for a module's default export). */
export function incomingHandlerFor(handler: Handler): { handle(request: unknown, responseOut: unknown): Promise<void> };

/** Makes the global `fetch` this SDK's (`edgemtls build` does it, for code written for Zuplo). */
export function installGlobalFetch(): void;

/** Zuplo's names for the request and context types, so `import { ZuploRequest }` keeps compiling. */
export type ZuploRequest = Request;
export type ZuploContext = Context;
