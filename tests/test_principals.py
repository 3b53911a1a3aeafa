"""Principals over real HTTP: named API keys and JWT bearer tokens (signed by a key
pair made here, JWKS served on 127.0.0.1); every bad token gets the same 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from molecule_runtime.server.principals import AuthConfigError, parse_api_keys
from tests.support.jwt_issuer import AUDIENCE, ISSUER, Issuer, serving_issuer
from tests.support.procs import ServerProcess, running_server
from tests.support.sse import message_json

KEY_A = "alice-" + uuid.uuid4().hex
KEY_A2 = "alice-next-" + uuid.uuid4().hex  # a second key of the same principal (rotation)
KEY_B = "bob-" + uuid.uuid4().hex
V1 = {"A2A-Version": "1.0"}


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with serving_issuer() as served:
        yield served


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("principals")
    keys = workdir / "keys.txt"
    keys.write_text(f"# name:key\nalice:{KEY_A}\nalice:{KEY_A2}\n\nbob:{KEY_B}\n")
    env = {
        "MOLECULE_API_KEYS_FILE": str(keys),
        "MOLECULE_METRICS_PUBLIC": "false",
        "LOG_LEVEL": "DEBUG",
        **issuer.env(),
    }
    with running_server(workdir, env) as started:
        yield started


def send(url: str, credential: str | None, text: str = "hi") -> httpx.Response:
    headers = dict(V1)
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message_json(text)}}
    return httpx.post(url + "/", json=body, headers=headers, timeout=10)


def get_task(url: str, credential: str, task_id: str) -> httpx.Response:
    return httpx.get(
        f"{url}/rest/tasks/{task_id}",
        headers={**V1, "Authorization": f"Bearer {credential}"},
        timeout=10,
    )


def b64json(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned(claims: dict) -> str:
    return f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(claims)}."


def test_api_keys_name_principals_and_rotated_keys_share_one(server: ServerProcess) -> None:
    reply = send(server.url, KEY_A)
    task_id = reply.json()["result"]["task"]["id"]
    assert get_task(server.url, KEY_A2, task_id).status_code == 200  # same principal
    assert get_task(server.url, KEY_B, task_id).status_code == 404


def test_jwt_principal_from_sub(server: ServerProcess, issuer: Issuer) -> None:
    reply = send(server.url, issuer.token("carol"))
    assert reply.status_code == 200, reply.text
    task_id = reply.json()["result"]["task"]["id"]
    assert get_task(server.url, issuer.token("carol"), task_id).status_code == 200
    assert get_task(server.url, issuer.token("dave"), task_id).status_code == 404
    # A key whose name equals a token's subject is another principal.
    assert get_task(server.url, KEY_A, task_id).status_code == 404


def bad_tokens(issuer: Issuer) -> dict[str, str]:
    now = int(time.time())
    good = issuer.token("mallory")
    head, body, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["sub"] = "alice"
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    other_issuer = Issuer()
    other_issuer.kid = issuer.kid  # same key id, different key
    # The public key as an HMAC secret: the classic algorithm confusion (built by
    # hand, PyJWT refuses to sign it).
    public_pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = ".".join(
        b64json(part)
        for part in (
            {"alg": "HS256", "typ": "JWT", "kid": issuer.kid},
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 600},
        )
    )
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    hs256 = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    return {
        "expired": issuer.token("alice", exp=now - 3600, iat=now - 7200),
        "wrong-audience": issuer.token("alice", aud="another-app"),
        "wrong-issuer": issuer.token("alice", iss="https://evil.example"),
        "alg-none": unsigned({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 600}),
        "tampered": f"{head}.{forged_body}.{signature}",
        "other-key": other_issuer.token("alice"),
        "hs256-confusion": hs256,
        "no-exp": issuer.token("alice", exp=None),
        "no-sub": issuer.token(None),  # type: ignore[arg-type]
        "unknown-kid": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "a", "exp": now + 600},
            issuer.key,
            algorithm="RS256",
            headers={"kid": "not-a-key"},
        ),
        "garbage": "not.a.token",
    }


def test_bad_tokens_get_the_same_401(server: ServerProcess, issuer: Issuer) -> None:
    answers = set()
    for name, token in bad_tokens(issuer).items():
        reply = send(server.url, token)
        assert reply.status_code == 401, (name, reply.text)
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert token not in reply.text
        answers.add((reply.text, reply.headers["www-authenticate"]))
    assert len(answers) == 1, answers  # nothing tells one failure from another
    missing = send(server.url, None)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == -32040


def test_unknown_key_ids_do_not_flood_the_jwks(server: ServerProcess, issuer: Issuer) -> None:
    send(server.url, issuer.token("warm"))  # keys fetched
    before = issuer.fetches
    for i in range(20):
        token = jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "a", "exp": int(time.time()) + 60},
            issuer.key,
            algorithm="RS256",
            headers={"kid": f"made-up-{i}"},
        )
        assert send(server.url, token).status_code == 401
    assert issuer.fetches - before <= 1


def test_card_declares_both_schemes(server: ServerProcess) -> None:
    card = httpx.get(server.url + "/.well-known/agent-card.json", timeout=5).json()
    schemes = card["securitySchemes"]
    assert schemes["bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
    assert schemes["jwt"]["httpAuthSecurityScheme"]["bearerFormat"] == "JWT"
    assert card["securityRequirements"] == [{"schemes": {"bearer": {}}}, {"schemes": {"jwt": {}}}]
    assert KEY_A not in json.dumps(card)


def test_metrics_protected_when_asked_health_stays_public(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/metrics", timeout=5).status_code == 401
    authed = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {KEY_B}"}, timeout=5)
    assert authed.status_code == 200
    for path in ("/healthz", "/readyz", "/.well-known/agent-card.json"):
        assert httpx.get(server.url + path, timeout=5).status_code == 200


def test_credentials_never_logged_at_debug(server: ServerProcess, issuer: Issuer) -> None:
    good = issuer.token("logged")
    send(server.url, good)
    bad = list(bad_tokens(issuer).values())
    for token in bad:
        send(server.url, token)
    time.sleep(0.3)
    log = server.log_path.read_text(errors="replace")
    assert " DEBUG " in log
    for secret in (KEY_A, KEY_A2, KEY_B, good, *bad):
        assert secret not in log
    signature = good.rsplit(".", 1)[1]
    assert signature not in log


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MOLECULE_JWT_JWKS_URL": "http://127.0.0.1:9/jwks"}, "MOLECULE_JWT_ISSUER"),
        ({"MOLECULE_JWT_ISSUER": "https://i", "MOLECULE_JWT_AUDIENCE": "a"}, "MOLECULE_JWT_JWKS_URL"),
        ({"MOLECULE_API_KEYS": "alice-without-key"}, "not 'name:key'"),
        ({"MOLECULE_API_KEYS": "alice:short"}, "shorter than 16"),
        ({"MOLECULE_API_KEYS_FILE": "/nonexistent/keys"}, "MOLECULE_API_KEYS_FILE"),
    ],
    ids=["jwks-without-issuer", "issuer-without-key", "malformed-key", "short-key", "missing-file"],
)
def test_bad_auth_settings_stop_start_up(tmp_path: Path, env: dict, expected: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "molecule_runtime", "serve"],
        env={"PATH": "/usr/bin:/bin", "MOLECULE_DATA_DIR": str(tmp_path), "PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr


def test_parse_api_keys_never_echoes_a_key() -> None:
    assert parse_api_keys("a:0123456789abcdef, b:fedcba9876543210", "x") == [
        ("a", "0123456789abcdef"),
        ("b", "fedcba9876543210"),
    ]
    with pytest.raises(AuthConfigError) as refused:
        parse_api_keys("a:secretbutshort", "x")
    assert "secretbutshort" not in str(refused.value)


def test_call_context_user_is_the_principals_owner() -> None:
    """The SDK's call-context builder turns the Starlette user into the owner scope
    its stores filter by: the seam every isolation guarantee rests on."""
    from a2a.server.owner_resolver import resolve_user_scope
    from starlette.requests import Request

    from molecule_runtime.server.sse_ids import EventIdContextBuilder
    from molecule_runtime.store.owners import Principal, PrincipalUser

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [],
        "query_string": b"",
        "user": PrincipalUser(Principal(name="alice", owner="key:alice")),
    }
    context = EventIdContextBuilder().build(Request(scope))
    assert resolve_user_scope(context) == "key:alice"
    no_user = {k: v for k, v in scope.items() if k != "user"}
    assert resolve_user_scope(EventIdContextBuilder().build(Request(no_user))) == ""


def test_request_rate_bucket() -> None:
    from molecule_runtime.server.quotas import RateLimitedError, RequestRate

    now = [0.0]
    rate = RequestRate(6, clock=lambda: now[0])  # one every 10 s, 6 at once
    for _ in range(6):
        rate.take("a")
    with pytest.raises(RateLimitedError) as refused:
        rate.take("a")
    assert refused.value.retry_after == 10
    rate.take("b")  # another principal has its own bucket
    now[0] = 10.0
    rate.take("a")
    with pytest.raises(RateLimitedError):
        rate.take("a")
