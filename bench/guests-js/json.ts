// The bench's JavaScript handler that reads and rewrites a JSON answer: fetch the route's
// `url` option (with the request's query) presenting the certificate its `mtlsCertificate`
// option names, parse the body, add a field, and answer the new JSON.
import { options } from "edgemtls";

export default async function (request: Request): Promise<Response> {
  const query = request.url.indexOf("?");
  const upstream = await fetch((options.get("url") ?? "") + (query < 0 ? "" : request.url.slice(query)), {
    headers: { "x-expect-cn": request.headers.get("x-expect-cn") ?? "" },
    mtlsCertificate: options.get("mtlsCertificate"),
  } as RequestInit);
  const value = await upstream.json();
  value.seenBy = "edgemtls";
  return new Response(JSON.stringify(value), { status: upstream.status, headers: { "content-type": "application/json" } });
}
