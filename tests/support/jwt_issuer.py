"""A test identity provider: an RSA key pair made in the test, its JWKS served on
127.0.0.1 (a thread of the test process), and tokens signed with it."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://issuer.test.example"
AUDIENCE = "molecule-runtime-tests"


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Issuer:
    def __init__(self) -> None:
        self.kid = uuid.uuid4().hex[:8]
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.key.public_key().public_numbers()
        self.jwks = {
            "keys": [
                {
                    "kty": "RSA",
                    "kid": self.kid,
                    "use": "sig",
                    "alg": "RS256",
                    "n": _b64(numbers.n),
                    "e": _b64(numbers.e),
                }
            ]
        }
        self.url = ""
        self.fetches = 0

    def token(self, sub: str = "alice", **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "iat": now,
            "exp": now + 600,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def env(self) -> dict[str, str]:
        return {
            "MOLECULE_JWT_JWKS_URL": self.url,
            "MOLECULE_JWT_ISSUER": ISSUER,
            "MOLECULE_JWT_AUDIENCE": AUDIENCE,
        }


@contextmanager
def serving_issuer() -> Iterator[Issuer]:
    """An `Issuer` whose JWKS is served at `issuer.url` until the block ends."""
    issuer = Issuer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer.fetches += 1
            body = json.dumps(issuer.jwks).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
