// Produces CloudEvents with the CloudEvents JavaScript SDK and sends them to a running
// provd's POST /api/v1/events (tests/cloudevents_sdks.rs drives it). A plan (JSON on stdin)
// lists requests, each a mode and its events' attributes and data; the SDK builds every
// event and its HTTP message: HTTP.structured, HTTP.binary, and for a batch the JSON array
// of the events' structured form under the SDK's batch media type, read back by the SDK's
// own HTTP.toEvent first so the batch is one the SDK itself accepts. Prints one result per
// request as JSON: the HTTP status and body.
import { CloudEvent, CONSTANTS, HTTP } from "cloudevents";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const plan = JSON.parse(Buffer.concat(chunks).toString("utf8"));

function message(request) {
  const events = request.events.map((e) => new CloudEvent({ datacontenttype: "application/json", ...e }));
  if (request.mode === "structured") return HTTP.structured(events[0]);
  if (request.mode === "binary") return HTTP.binary(events[0]);
  if (request.mode === "batch") {
    const body = `[${events.map((e) => HTTP.structured(e).body).join(",")}]`;
    const batch = { headers: { "content-type": CONSTANTS.MIME_CE_BATCH }, body };
    const back = HTTP.toEvent(batch);
    if (!Array.isArray(back) || back.length !== events.length) throw new Error("the SDK does not read its batch back");
    return batch;
  }
  throw new Error(`unknown mode ${request.mode}`);
}

const results = [];
for (const request of plan.requests) {
  const { headers, body } = message(request);
  const resp = await fetch(`${plan.url}/api/v1/events`, {
    method: "POST",
    headers: { ...headers, authorization: `Bearer ${plan.token}` },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  results.push({ status: resp.status, body: await resp.text() });
}
process.stdout.write(JSON.stringify(results));
