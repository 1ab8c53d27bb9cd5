// The bench's fetch-and-return JavaScript handler, written as Zuplo's mTLS guide writes one:
// fetch the route's `url` option (with the request's query) presenting the certificate its
// `mtlsCertificate` option names, and return the upstream's answer. `x-expect-cn` goes along,
// so the upstream can check the certificate it saw. With `x-rewrap`, the answer is returned
// as `new Response(upstream.body, { status, headers })` instead.
import { options } from "edgemtls";

export default async function (request: Request): Promise<Response> {
  const query = request.url.indexOf("?");
  const upstream = await fetch((options.get("url") ?? "") + (query < 0 ? "" : request.url.slice(query)), {
    headers: { "x-expect-cn": request.headers.get("x-expect-cn") ?? "" },
    zuplo: { mtlsCertificate: options.get("mtlsCertificate") },
  } as RequestInit);
  if (request.headers.get("x-rewrap")) {
    return new Response(upstream.body, { status: upstream.status, headers: upstream.headers });
  }
  return upstream;
}
