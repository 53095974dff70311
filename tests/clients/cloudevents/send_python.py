"""Produces CloudEvents with the CloudEvents Python SDK and sends them to a running provd.

tests/cloudevents_sdks.rs drives it: a plan (JSON on stdin) lists requests, each a mode
(structured, binary, batch), a transport (HTTP to POST /api/v1/events, or NATS to a
subject) and its events' attributes and data. The SDK builds every event and its wire
form: to_structured / to_binary for HTTP and, over NATS, the same structured bytes as the
payload or the binary headers as NATS headers with the data as the payload; a batch is the
JSON array of the SDK's structured event format. Prints one result per request as JSON:
the HTTP status and body, or status 0 once JetStream has stored the NATS message.
"""

import asyncio
import json
import sys
import urllib.error
import urllib.request

import nats
from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

FORMAT = JSONFormat()


def event_of(spec):
    """The SDK's event; `data_bytes` gives data as raw bytes (sent as they are)."""
    attributes = {k: v for k, v in spec.items() if k not in ("data", "data_bytes")}
    attributes.setdefault("datacontenttype", "application/json")
    data = spec.get("data")
    if "data_bytes" in spec:
        data = spec["data_bytes"].encode()
    return CloudEvent(attributes=attributes, data=data)


def wire(request):
    """The headers and body the SDK gives for the request's mode."""
    events = [event_of(e) for e in request["events"]]
    mode = request["mode"]
    if mode == "structured":
        message = to_structured(events[0], FORMAT)
        return dict(message.headers), message.body
    if mode == "binary":
        message = to_binary(events[0], FORMAT)
        return dict(message.headers), message.body
    if mode == "batch":
        # The batch format is a JSON array of the JSON event format.
        body = b"[" + b",".join(FORMAT.write(e) for e in events) + b"]"
        return {"content-type": "application/cloudevents-batch+json"}, body
    raise ValueError(f"unknown mode {mode}")


def send_http(plan, request):
    headers, body = wire(request)
    headers["authorization"] = f"Bearer {plan['token']}"
    req = urllib.request.Request(
        plan["url"] + "/api/v1/events", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return {"status": resp.status, "body": resp.read().decode()}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode()}


async def send_nats(plan, requests):
    results = []
    nc = await nats.connect(plan["nats_url"])
    try:
        js = nc.jetstream()
        for request in requests:
            headers, body = wire(request)
            await js.publish(request["subject"], body, headers=headers, timeout=30)
            results.append({"status": 0, "body": ""})
    finally:
        await nc.close()
    return results


def main():
    plan = json.load(sys.stdin)
    results = []
    for request in plan["requests"]:
        if request.get("via", "http") == "http":
            results.append(send_http(plan, request))
        else:
            results.extend(asyncio.run(send_nats(plan, [request])))
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
