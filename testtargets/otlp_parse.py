#!/usr/bin/env python3
"""Parses every line of an --otlp file with OpenTelemetry's own protobuf schema.

Each line goes through protobuf's json_format.Parse into an ExportTraceServiceRequest, which
refuses unknown fields and values of the wrong type. OTLP/JSON writes trace and span ids in
hex where protobuf's JSON mapping of bytes is base64, so the ids are turned into base64 first
(only the ids; everything else is parsed as written). Prints one JSON object for the test:
the resources and every span as the parsed message holds it.
"""
import base64
import json
import sys

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def hex_ids_to_base64(request):
    for rs in request.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()


def value(v):
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, kind)


def main(path):
    lines, resources, spans = 0, [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            raw = json.loads(line)
            hex_ids_to_base64(raw)
            msg = json_format.Parse(json.dumps(raw), ExportTraceServiceRequest())  # raises on any mismatch
            lines += 1
            for rs in msg.resource_spans:
                resources.append({a.key: value(a.value) for a in rs.resource.attributes})
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        spans.append({
                            "line": n, "scope": ss.scope.name, "name": s.name, "kind": s.kind,
                            "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(), "parent": s.parent_span_id.hex(),
                            "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                            "attributes": {a.key: value(a.value) for a in s.attributes},
                        })
    json.dump({"lines": lines, "resources": resources, "spans": spans}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
