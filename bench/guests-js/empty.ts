// The floor of a JavaScript request: a handler that answers 200 with no body and does nothing
// else (no fetch, no header read). What it costs is the engine's and the SDK's own work per
// request, which every JavaScript handler pays before it does anything.
export default async function (_request: Request): Promise<Response> {
  return new Response(null, { status: 200 });
}
