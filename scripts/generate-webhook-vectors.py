#!/usr/bin/env python3
"""Standard Webhooks test vectors from an independent implementation.

Uses the `standardwebhooks` package from PyPI (the reference Python library of the spec) both to sign and to
decide the expected outcome of every case, with its clock frozen at the case's `now`. Writes
Tests/HeraldCoreTests/Fixtures/standard-webhooks-vectors.json, which the Swift tests read (they do not need Python).

    python3 -m venv /tmp/swvenv && /tmp/swvenv/bin/pip install standardwebhooks
    /tmp/swvenv/bin/python scripts/generate-webhook-vectors.py

The output is deterministic (fixed keys, ids and times): re-running it changes nothing unless the library does.
"""

import base64
import json
import random
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import standardwebhooks.webhooks as reference
from standardwebhooks import Webhook

OUTPUT = Path(__file__).resolve().parent.parent / "Tests/HeraldCoreTests/Fixtures/standard-webhooks-vectors.json"
NOW = 1_732_200_000  # 2024-11-21T14:40:00Z

rng = random.Random(20241121)


def secret(length=32, padded=True):
    text = base64.b64encode(bytes(rng.getrandbits(8) for _ in range(length))).decode()
    return "whsec_" + (text if padded else text.rstrip("="))


OURS = secret()
OLD = secret(24)
STRANGER = secret()
UNPADDED = secret(31, padded=False)
assert not UNPADDED.endswith("=") and len(UNPADDED[len("whsec_"):]) % 4 != 0


def frozen_at(now):
    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.fromtimestamp(now, tz=tz)

    return Frozen


def sign(secret_text, msg_id, timestamp, body):
    return Webhook(secret_text).sign(msg_id, datetime.fromtimestamp(timestamp, tz=timezone.utc), body)


def python_outcome(secrets, headers, body, now):
    """What the reference library says, trying each configured secret (any one passing is a pass)."""
    reference.datetime = frozen_at(now)
    errors = []
    for s in secrets:
        try:
            Webhook(s).verify(body.encode(), headers, json_parse=False)
            return "valid", None
        except Exception as error:  # the library lets ValueError/binascii.Error out for garbage signatures
            errors.append(f"{type(error).__name__}: {error}")
    return "invalid", errors[0]


def expected_failure(python_error):
    """The reference library's error, as a StandardWebhooks.Failure case name."""
    if python_error.startswith("WebhookVerificationError: Missing required headers"):
        return "missingHeaders"
    if python_error.startswith("WebhookVerificationError: Invalid Signature Headers"):
        return "invalidTimestamp"
    if python_error.startswith("WebhookVerificationError: Message timestamp too"):
        return "timestampOutOfTolerance"
    # "No matching signature found", and the exceptions the library raises on unparseable signatures.
    return "noMatchingSignature"


cases = []


def case(name, *, secrets=(OURS,), msg_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", timestamp=NOW, body='{"event":"completed"}',
         now=NOW, signers=None, headers_edit=None, body_edit=None):
    """Signs (id, timestamp, body) with each of `signers` (default: the first configured secret), lets the
    edits tamper with what is delivered, and records the reference library's verdict."""
    signers = signers or [secrets[0]]
    signature = " ".join(sign(s, msg_id, timestamp, body) for s in signers)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}
    if headers_edit:
        headers = headers_edit(headers)
    delivered_body = body_edit(body) if body_edit else body
    outcome, error = python_outcome(list(secrets), headers, delivered_body, now)
    cases.append({
        "name": name,
        "secrets": list(secrets),
        "signed": {"id": msg_id, "timestamp": timestamp, "body": body, "secrets": signers},
        "headers": headers,
        "body": delivered_body,
        "now": now,
        "expected": "valid" if outcome == "valid" else expected_failure(error),
        "reference_error": error,
    })


def without(name):
    return lambda headers: {k: v for k, v in headers.items() if k != name}


def replace(name, value):
    return lambda headers: {**headers, name: value}


native = '{"thread_id":"484e2cd0-5fff-40ff-81c1-16d719ca3536","event":"delta","delta":"tok"}'

# Valid deliveries.
case("valid", body=native)
case("valid, non-ASCII body", body='{"event":"completed","content":"Grüße, 世界 👋 — naïve café"}')
case("valid, body with newlines", body='{\n  "event": "completed",\n  "content": "line one\\nline two"\r\n}\n')
case("valid, empty body", body="")
case("valid, unpadded secret", secrets=(UNPADDED,))
case("valid, timestamp exactly 5 minutes old", timestamp=NOW - 300)
case("valid, timestamp exactly 5 minutes ahead", timestamp=NOW + 300)
case("valid, id with punctuation", msg_id="evt_01J.abc-DEF:9")

# Rotation.
case("rotation: two signatures, only the second matches our secret", signers=[STRANGER, OURS])
case("rotation: two signatures, only the first matches our secret", signers=[OURS, STRANGER])
case("rotation: two configured secrets, signed by the second", secrets=(OLD, OURS), signers=[OURS])
case("rotation: two configured secrets, signed by the first", secrets=(OLD, OURS), signers=[OLD])
case("rotation: signed by neither configured secret", secrets=(OLD, OURS), signers=[STRANGER])

# Replay protection.
case("stale: 301 seconds old", timestamp=NOW - 301)
case("stale: one hour old", timestamp=NOW - 3600)
case("stale: 301 seconds in the future", timestamp=NOW + 301)
case("stale: one day in the future", timestamp=NOW + 86400)
case("invalid timestamp: not a number", headers_edit=replace("webhook-timestamp", "yesterday"))

# Tampering.
case("tampered body", body=native, body_edit=lambda b: b.replace('"tok"', '"TOK"'))
case("tampered body: trailing newline added", body=native, body_edit=lambda b: b + "\n")
case("tampered id", headers_edit=replace("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4X"))
case("tampered timestamp (still within tolerance)", headers_edit=replace("webhook-timestamp", str(NOW + 1)))
case("signed with another secret", signers=[STRANGER])

# Missing headers.
case("missing webhook-id", headers_edit=without("webhook-id"))
case("missing webhook-timestamp", headers_edit=without("webhook-timestamp"))
case("missing webhook-signature", headers_edit=without("webhook-signature"))
case("empty webhook-id", headers_edit=replace("webhook-id", ""))

# Malformed signatures.
case("garbage signature: not base64", headers_edit=replace("webhook-signature", "v1,!!!not*base64!!!"))
case("garbage signature: no version", headers_edit=replace("webhook-signature", "garbage"))
case("garbage signature: random bytes", headers_edit=replace(
    "webhook-signature", "v1," + base64.b64encode(bytes(rng.getrandbits(8) for _ in range(32))).decode()))
case("garbage signature: truncated", headers_edit=lambda h: {**h, "webhook-signature": h["webhook-signature"][:-8]})
case("wrong version prefix v2", headers_edit=lambda h: {**h, "webhook-signature": "v2," + h["webhook-signature"][3:]})

document = {
    "generator": f"standardwebhooks {version('standardwebhooks')} (PyPI), scripts/generate-webhook-vectors.py",
    "notes": "headers/body are what is delivered; signed is what the sender signed; expected is the reference "
             "library's verdict with its clock at now, as a StandardWebhooks.Failure case name",
    "cases": cases,
}
OUTPUT.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
print(f"wrote {len(cases)} cases to {OUTPUT}")
