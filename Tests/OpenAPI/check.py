"""Checks Herald's OpenAPI document and real traffic against it, with validators independent of Herald.

    check.py DOCUMENT [SAMPLES]

DOCUMENT is validated as OpenAPI 3.1 (openapi-spec-validator). SAMPLES, when given, is a JSON array recorded by
the contract tests, each item one of:

    {"kind": "response", "method": "GET", "path": "/chats/{thread_id}", "status": 200,
     "content_type": "application/json; charset=utf-8", "body": <JSON or null>}
    {"kind": "request", "method": "POST", "path": "/chats", "body": <JSON>}
    {"kind": "frame", "path": "/chats/sse/{thread_id}", "frame": {"id": "...", "event": "...", "data": <JSON>}}
    {"kind": "ws_message", "path": "/ws", "direction": "client" | "server", "message": <JSON>}

A response must have a documented status, and its body must match the documented schema of its media type; a
request body must match the operation's request schema; a stream frame must match the schema the stream's
response names in x-sse-frame. Formats (uuid, date-time) are checked. Exit status 1 lists every mismatch.
"""

import json
import sys

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

BASE = "urn:herald:openapi"


def pointer(*parts):
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def alternative(document, reference, key, body):
    """The pointer to the alternative of a oneOf schema (`reference`) whose `key` is the body's: checked against
    that one alternative, the complaints are plain. None when no alternative has it."""
    name = reference["$ref"].split("/")[-1]
    alternatives = document["components"]["schemas"][name]["oneOf"]
    matching = [i for i, a in enumerate(alternatives) if a["properties"][key].get("const") == body.get(key)]
    return pointer("components", "schemas", name, "oneOf", matching[0]) if matching else None


def main():
    document = json.load(open(sys.argv[1]))
    validate(document)
    if len(sys.argv) < 3:
        print("check.py: the document is valid OpenAPI 3.1")
        return 0
    samples = json.load(open(sys.argv[2]))
    registry = Registry().with_resource(BASE, Resource.from_contents(document, default_specification=DRAFT202012))

    def validator(json_pointer):
        return Draft202012Validator(
            {"$ref": f"{BASE}#{json_pointer}"}, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )

    failures = []
    counts = {}
    for sample in samples:
        kind = sample["kind"]
        counts[kind] = counts.get(kind, 0) + 1
        where = f'{kind} {sample.get("method", "GET")} {sample["path"]}'
        operation = document["paths"].get(sample["path"], {}).get(sample.get("method", "GET").lower())
        if operation is None:
            failures.append(f"{where}: no such operation in the document")
            continue
        method = sample.get("method", "GET").lower()
        if kind == "response":
            status = str(sample["status"])
            where += f" → {status}"
            if status not in operation["responses"]:
                failures.append(f"{where}: status not documented")
                continue
            response = operation["responses"][status]
            location = ("paths", sample["path"], method, "responses", status)
            if "$ref" in response:
                name = response["$ref"].split("/")[-1]
                response = document["components"]["responses"][name]
                location = ("components", "responses", name)
            body = sample.get("body")
            if body is None:
                continue
            media = (sample.get("content_type") or "").split(";")[0].strip()
            if media not in response.get("content", {}):
                failures.append(f"{where}: media type {media!r} not documented")
                continue
            json_pointer = pointer(*location, "content", media, "schema")
        elif kind == "request":
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                failures.append(f"{where}: no JSON request body documented")
                continue
            json_pointer = pointer("paths", sample["path"], method, "requestBody", "content", "application/json", "schema")
            body = sample["body"]
        elif kind == "frame":
            frame_schema = operation["responses"]["200"]["content"]["text/event-stream"].get("x-sse-frame")
            if frame_schema is None:
                failures.append(f"{where}: no x-sse-frame schema")
                continue
            body = sample["frame"]
            where += f' event {body.get("event")}'
            json_pointer = alternative(document, frame_schema, "event", body)
            if json_pointer is None:
                failures.append(f"{where}: event not documented")
                continue
        elif kind == "ws_message":
            messages = operation["responses"].get("101", {}).get("x-websocket-messages", {})
            schema = messages.get(sample["direction"])
            if schema is None:
                failures.append(f'{where}: no x-websocket-messages schema for {sample["direction"]} messages')
                continue
            body = sample["message"]
            where += f' {sample["direction"]} {body.get("type")}'
            json_pointer = alternative(document, schema, "type", body)
            if json_pointer is None:
                failures.append(f"{where}: message type not documented")
                continue
        else:
            failures.append(f"{where}: unknown sample kind")
            continue
        for error in validator(json_pointer).iter_errors(body):
            # For oneOf/anyOf, the closest alternative's complaint says more than "not valid under any".
            cause = best_match(error.context) if error.context else error
            path = "/".join(str(p) for p in cause.absolute_path)
            failures.append(f"{where}: at /{path}: {cause.message[:300]}")

    summary = ", ".join(f"{n} {k}s" for k, n in sorted(counts.items()))
    if failures:
        print(f"check.py: {len(failures)} mismatches in {summary}:")
        for failure in failures:
            print("  " + failure)
        return 1
    print(f"check.py: the document is valid OpenAPI 3.1; {summary} match it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
