// The JavaScript handler the CLI tests build and serve: one path per thing they check.
// The upstream is the route's `url` option (edgemtls dev-upstream, which reports the client
// certificate's CN). A test handler may take a certificate name from the query: it stands
// for handler code that chooses one.
import {
  environment,
  options,
  CertificateError,
  CertificateNotFoundError,
  CertificateDisabledError,
  CertificateNotInEnvironmentError,
  CertificateExpiredError,
  CertificateNotYetValidError,
} from "edgemtls";

/** Lives as long as the instance: an instance serves request after request. */
let served = 0;

const json = (value: unknown, status = 200) =>
  new Response(JSON.stringify(value), { status, headers: { "content-type": "application/json" } });

export default {
  async fetch(request: Request, env: Record<string, string | undefined>): Promise<Response> {
    const url = new URL(request.url);
    const upstream = options.get("url") ?? "";
    const cert = url.searchParams.get("cert") ?? undefined;
    switch (url.pathname) {
      case "/js/named": {
        const answer = await fetch(upstream, { mtlsCertificate: cert });
        return new Response(answer.body, { status: answer.status, headers: answer.headers });
      }
      case "/js/none": {
        const answer = await fetch(upstream);
        return new Response(answer.body, { status: answer.status, headers: answer.headers });
      }
      case "/js/zuplo": {
        // As Zuplo code is written: the global fetch, the name from the stage's variables.
        const answer = await fetch(upstream, { zuplo: { mtlsCertificate: environment.BACKEND_MTLS_CERT } });
        return new Response(answer.body, { status: answer.status, headers: answer.headers });
      }
      case "/js/env": {
        return json({ sdk: environment.BACKEND_MTLS_CERT ?? null, cloudflare: env.BACKEND_MTLS_CERT ?? null });
      }
      case "/js/error": {
        try {
          await fetch(upstream, { mtlsCertificate: cert });
          return json({ error: null });
        } catch (error) {
          const types = {
            CertificateNotFoundError,
            CertificateDisabledError,
            CertificateNotInEnvironmentError,
            CertificateExpiredError,
            CertificateNotYetValidError,
          };
          const matches = Object.entries(types).filter(([, type]) => error instanceof type).map(([name]) => name);
          return json({
            error: error instanceof Error ? error.name : String(error),
            certificate_error: error instanceof CertificateError,
            instance_of: matches,
            kind: error instanceof CertificateError ? error.kind : null,
            certificate: error instanceof CertificateError ? error.certificate : null,
            message: error instanceof Error ? error.message : null,
          });
        }
      }
      case "/js/unhandled": {
        // A certificate error the handler does not catch: the SDK answers 502, naming it.
        await fetch(upstream, { mtlsCertificate: cert });
        return json({ error: null });
      }
      case "/js/big": {
        // Streams both ways: the caller's body goes upstream as it arrives, the upstream's
        // `bytes`-long answer comes back the same way.
        const size = url.searchParams.get("bytes") ?? "0";
        const answer = await fetch(`${upstream}?bytes=${size}`, {
          method: "POST",
          body: request.body,
          // @ts-ignore: duplex is part of fetch for streamed request bodies
          duplex: "half",
          mtlsCertificate: cert,
        });
        const headers = new Headers();
        headers.set("x-upstream-received", answer.headers.get("x-received-bytes") ?? "");
        headers.set("x-upstream-cn", answer.headers.get("x-client-cn") ?? "none");
        return new Response(answer.body, { status: answer.status, headers });
      }
      case "/js/pass": {
        // Zuplo's guide: return what fetch answered, as it is (the host streams the body).
        const name = url.searchParams.get("cert") ?? undefined;
        const to = url.searchParams.get("to") ?? upstream + (url.searchParams.get("path") ?? "/");
        return await fetch(to, { zuplo: { mtlsCertificate: name } } as RequestInit);
      }
      case "/js/rewrap": {
        // The body passed on in a new Response, with a header added.
        const answer = await fetch(upstream + (url.searchParams.get("path") ?? "/"), { mtlsCertificate: cert });
        const headers = new Headers(answer.headers);
        headers.set("x-rewrapped", "yes");
        return new Response(answer.body, { status: answer.status, headers });
      }
      case "/js/json": {
        // Reads the answer and changes it.
        const answer = await fetch(upstream + (url.searchParams.get("path") ?? "/"), { mtlsCertificate: cert });
        const value = await answer.json();
        value.changed = true;
        return json(value, answer.status);
      }
      case "/js/held": {
        // A body the handler holds, with repeated headers and a wrong length: one host call.
        return new Response("held \u2713\n", {
          status: 201,
          headers: [["set-cookie", "a=1; Path=/"], ["set-cookie", "b=2; Path=/"], ["x-kind", "held"], ["content-length", "999"]],
        });
      }
      case "/js/streamed": {
        // A body that streams in three chunks: written as it comes.
        const chunks = ["one,", "two,", "three"];
        const encoder = new TextEncoder();
        const body = new ReadableStream({
          pull(controller) {
            const next = chunks.shift();
            if (next === undefined) controller.close();
            else controller.enqueue(encoder.encode(next));
          },
        });
        return new Response(body, { status: 202, headers: { "x-kind": "streamed" } });
      }
      case "/js/empty": {
        return new Response(null, { status: 204, headers: { "x-kind": "empty" } });
      }
      case "/js/served": {
        served += 1;
        return json({ served });
      }
      default:
        return new Response("not found\n", { status: 404 });
    }
  },
};
