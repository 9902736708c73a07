#!/usr/bin/env python3
"""User-token vectors from an independent JWT library.

Uses PyJWT (with `cryptography`) from PyPI to build the public JSON Web Key Set and to sign one token per
algorithm Herald accepts from an identity provider (RS256, PS256, ES256, EdDSA) plus one HS256 token, each with
only the claims RFC 7519 lets a token get away with: `sub` and a far-future `exp`, nothing else (no `iat`,
`nbf`, `iss` or `aud`). Writes Tests/HeraldIntegrationTests/Fixtures/pyjwt-vectors.json, which the Swift tests
read (they do not need Python).

    python3 -m venv /tmp/jwtvenv && /tmp/jwtvenv/bin/pip install pyjwt cryptography
    /tmp/jwtvenv/bin/python scripts/generate-jwt-vectors.py

The private keys are test fixtures kept in the output file: a re-run reuses them, so the key set stays the same
(PS256 and ES256 signatures are randomised and change).
"""

import json
from importlib.metadata import version
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

OUTPUT = Path(__file__).resolve().parent.parent / "Tests/HeraldIntegrationTests/Fixtures/pyjwt-vectors.json"
EXPIRES = 4_102_444_800  # 2100-01-01T00:00:00Z
HS256_SECRET = "pyjwt-vectors-hs256-secret-0123456789abcdef"

GENERATORS = {
    "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "PS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": lambda: ed25519.Ed25519PrivateKey.generate(),
}
TO_JWK = {"RS256": RSAAlgorithm, "PS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}


def private_keys():
    """The committed keys when there are any, else new ones."""
    existing = json.loads(OUTPUT.read_text())["private_keys"] if OUTPUT.exists() else {}
    keys = {}
    for alg, generate in GENERATORS.items():
        if alg in existing:
            keys[alg] = serialization.load_pem_private_key(existing[alg].encode(), password=None)
        else:
            keys[alg] = generate()
    return keys


def main():
    keys = private_keys()
    jwks, tokens = [], []
    for alg, key in keys.items():
        kid = f"pyjwt-{alg.lower()}"
        jwk = TO_JWK[alg].to_jwk(key.public_key(), as_dict=True)
        jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        jwks.append(jwk)
        user = f"pyjwt-user-{alg.lower()}"
        token = jwt.encode({"sub": user, "exp": EXPIRES}, key, algorithm=alg, headers={"kid": kid})
        tokens.append({"alg": alg, "user": user, "token": token})
    user = "pyjwt-user-hs256"
    tokens.append({"alg": "HS256", "user": user, "token": jwt.encode({"sub": user, "exp": EXPIRES}, HS256_SECRET, algorithm="HS256")})

    pem = {
        alg: key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
        for alg, key in keys.items()
    }
    document = {
        "generator": f"PyJWT {version('pyjwt')}, cryptography {version('cryptography')}",
        "hs256_secret": HS256_SECRET,
        "jwks": {"keys": jwks},
        "tokens": tokens,
        "private_keys": pem,
    }
    OUTPUT.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {len(tokens)} tokens to {OUTPUT}")


if __name__ == "__main__":
    main()
