// The bench's JavaScript handler, the JS twin of tests/guests/mtls-probe: fetches `x-target`
// presenting the certificate `x-certificate` names, forwards `x-expect-cn` so the upstream
// can check what it saw, and streams the answer back.
import { fetch } from "edgemtls";

export default async function (request: Request): Promise<Response> {
  const target = request.headers.get("x-target") ?? "";
  const headers: Record<string, string> = {};
  const expect = request.headers.get("x-expect-cn");
  if (expect) headers["x-expect-cn"] = expect;
  const upstream = await fetch(target, { mtlsCertificate: request.headers.get("x-certificate") ?? "", headers });
  return new Response(upstream.body, { status: upstream.status });
}
