// The hello-mtls example in TypeScript, written as a Zuplo request handler: fetches the
// route's `url` option, presenting the client certificate named by the `mtlsCertificate`
// option, or else by the environment's BACKEND_MTLS_CERT variable, and returns the
// upstream's answer. An empty name sends no certificate.
//
//   edgemtls build plugins/hello-mtls-js/handler.ts -o hello-mtls-js.wasm
//
// Code written for Zuplo imports from "@zuplo/runtime"; that import works here as it is.
import { environment, options, CertificateError } from "edgemtls";

export default async function (request: Request): Promise<Response> {
  const url = options.get("url");
  if (!url) {
    return new Response("hello-mtls-js: the route has no 'url' option\n", { status: 500 });
  }
  const certificate = options.get("mtlsCertificate") ?? environment.BACKEND_MTLS_CERT ?? "";
  try {
    const upstream = await fetch(url, { zuplo: { mtlsCertificate: certificate } });
    const headers = new Headers({ "x-edgemtls-certificate": certificate });
    const kind = upstream.headers.get("content-type");
    if (kind) headers.set("content-type", kind);
    return new Response(upstream.body, { status: upstream.status, headers });
  } catch (error) {
    if (error instanceof CertificateError) {
      // Which of the five it is (not found, disabled, not in this environment, expired,
      // not yet valid), in the answer.
      const body = { error: error.name, kind: error.kind, certificate: error.certificate, detail: error.message };
      return new Response(JSON.stringify(body), { status: 502, headers: { "content-type": "application/json" } });
    }
    const body = { error: "upstream-failed", detail: String(error) };
    return new Response(JSON.stringify(body), { status: 502, headers: { "content-type": "application/json" } });
  }
}
