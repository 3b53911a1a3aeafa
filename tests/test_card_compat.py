"""The agent card: caching headers, and the A2A 0.3 fields that let a real a2a-sdk 0.3
client (installed in a virtualenv of its own) find and use the agent, while a 1.0 client
reads exactly the card it read before they were added."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest
from a2a.client.card_resolver import parse_agent_card
from a2a.types.a2a_pb2 import GetTaskRequest, SendMessageRequest, TaskState

from molecule_runtime.adapters.echo import EchoAdapter
from molecule_runtime.config import Settings
from molecule_runtime.server.card import build_agent_card, card_document, v03_interfaces
from tests.support.a2a import event_task_id, make_client
from tests.support.durable import scripted_env, scripted_message, streamed_text
from tests.support.grpc_client import grpc_env
from tests.support.procs import ServerProcess, running_server
from tests.support.sdk03 import V03_CLIENT, sdk03_python

TOKEN = "card-token-" + uuid.uuid4().hex
CARD = "/.well-known/agent-card.json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("card")
    env = {
        **scripted_env(workdir / "records"),
        **grpc_env(),
        "MOLECULE_AUTH_TOKEN": TOKEN,
        "MOLECULE_CARD_MAX_AGE": "120",
    }
    with running_server(workdir, env) as started:
        yield started


def settings(**values: object) -> Settings:
    return Settings.model_validate(values)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"MOLECULE_GRPC_PORT": 50051, "MOLECULE_AUTH_TOKEN": "t" * 20},
        {
            "MOLECULE_API_KEYS": "a:" + "k" * 20,
            "MOLECULE_JWT_KEY_FILE": "/dev/null",
            "MOLECULE_JWT_ISSUER": "https://issuer.example",
            "MOLECULE_JWT_AUDIENCE": "agents",
            "PUBLIC_URL": "https://agent.example/base",
        },
    ],
    ids=["plain", "grpc+token", "keys+jwt"],
)
def test_a_1_0_client_parses_the_card_as_before(values: dict[str, object]) -> None:
    """The a2a-sdk 1.x client's card parser gives the same card with and without the
    0.3 fields (and the 0.3 fields are there)."""
    config = settings(**values)
    card = build_agent_card(config, EchoAdapter())
    with_03 = card_document(card, v03_interfaces(config))
    assert with_03["url"] == f"{config.resolved_public_url}/"
    assert with_03["preferredTransport"] == "JSONRPC"
    assert with_03["protocolVersion"].startswith("0.3")
    assert parse_agent_card(json.loads(json.dumps(with_03))) == card
    assert parse_agent_card(card_document(card, [])) == card
    assert "url" not in card_document(card, v03_interfaces(settings(MOLECULE_A2A_V03_COMPAT=False)))


class CsvAdapter(EchoAdapter):
    def input_modes(self) -> list[str]:
        return ["text/plain", "text/csv"]

    def output_modes(self) -> list[str]:
        return ["text/csv", "application/json"]


def test_the_card_names_files_and_data_unless_the_adapter_declares_its_own() -> None:
    echo = build_agent_card(settings(), EchoAdapter())
    for modes in (echo.default_input_modes, echo.default_output_modes):
        assert list(modes) == ["text/plain", "application/json", "application/octet-stream"]
    assert echo.skills[0].input_modes == echo.default_input_modes
    assert echo.skills[0].output_modes == echo.default_output_modes

    config = settings()
    csv = build_agent_card(config, CsvAdapter())
    assert list(csv.default_input_modes) == list(csv.skills[0].input_modes) == ["text/plain", "text/csv"]
    assert list(csv.default_output_modes) == list(csv.skills[0].output_modes) == [
        "text/csv",
        "application/json",
    ]
    served = card_document(csv, v03_interfaces(config))
    assert served["defaultInputModes"] == ["text/plain", "text/csv"]
    assert parse_agent_card(json.loads(json.dumps(served))) == csv


async def test_cache_control_and_etag(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        first = await http.get(CARD)
        assert first.status_code == 200
        assert first.headers["cache-control"] == "public, max-age=120"
        etag = first.headers["etag"]
        again = await http.get(CARD, headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == "public, max-age=120"
        assert again.content == b""
        other = await http.get(CARD, headers={"If-None-Match": 'W/"something-else"'})
        assert other.status_code == 200
        assert other.json() == first.json()
        assert "application/json" in first.json()["defaultInputModes"]


async def test_1_x_client_over_the_card(server: ServerProcess) -> None:
    """The 1.x client resolves the card and picks its 1.0 interfaces, on both HTTP bindings."""
    for binding in ("JSONRPC", "HTTP+JSON"):
        client = await make_client(server.url, token=TOKEN, binding=binding)
        try:
            events = [e async for e in client.send_message(SendMessageRequest(message=scripted_message()))]
            assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
            assert streamed_text(events) == "c0 c1 c2 "
            stored = await client.get_task(GetTaskRequest(id=event_task_id(events[0])))
            assert stored.status.state == TaskState.TASK_STATE_COMPLETED
        finally:
            await client.close()


@pytest.mark.parametrize("transport", ["JSONRPC", "GRPC"])
def test_a2a_sdk_0_3_client(server: ServerProcess, transport: str) -> None:
    """The real a2a-sdk 0.3 client: card, send, stream, get, cancel."""
    python = sdk03_python()
    run = subprocess.run(
        [str(python), str(V03_CLIENT), server.url, TOKEN, transport],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-4000:] + "\n" + server.log()
    seen = json.loads(run.stdout)
    card = seen["card"]
    assert card["url"] == server.url + "/"
    assert card["preferred_transport"] == "JSONRPC"
    assert card["protocol_version"].startswith("0.3")
    assert ["GRPC", f"127.0.0.1:{server.env['MOLECULE_GRPC_PORT']}"] in card["additional"]
    assert card["security"] == [{"bearer": []}]
    assert seen["send"] == {"state": "completed", "text": "c0 c1 ", "id": seen["send"]["id"]}
    assert seen["stream"]["kinds"][0] == "Task"
    assert "TaskArtifactUpdateEvent" in seen["stream"]["kinds"]
    assert seen["stream"]["state"] == "completed"
    assert seen["stream"]["text"] == "c0 c1 c2 "
    assert seen["get"] == {"state": "completed", "text": "c0 c1 "}
    assert seen["cancel"] == {"answer": "canceled", "stored": "canceled"}



V03_KEYS = {"url", "protocolVersion", "preferredTransport", "additionalInterfaces", "security"}


async def test_a_1_0_client_gets_the_1_0_card_alone(server: ServerProcess) -> None:
    """`A2A-Version: 1.0` (header or query, as the JS SDK and the TCK send it): no 0.3 key
    anywhere, so clients that take a security scheme's `type` for a 0.3 card, and strict
    schema checks, read it as 1.0. Without it, the 0.3 fields are there for 0.3 clients."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        for asked in (
            await http.get(CARD, headers={"A2A-Version": "1.0"}),
            await http.get(CARD, params={"A2A-Version": "1.0"}),
        ):
            assert asked.status_code == 200
            card = asked.json()
            assert not V03_KEYS & set(card), card
            assert set(card["securitySchemes"]["bearer"]) == {"httpAuthSecurityScheme"}
            assert card["securityRequirements"] == [{"schemes": {"bearer": {}}}]
            assert "A2A-Version" in asked.headers["vary"]
            assert parse_agent_card(card) == parse_agent_card((await http.get(CARD)).json())
        legacy = await http.get(CARD)
        assert V03_KEYS <= set(legacy.json())
        assert legacy.json()["securitySchemes"]["bearer"]["type"] == "http"
        for_1_0 = await http.get(CARD, headers={"A2A-Version": "1.0"})
        assert legacy.headers["etag"] != for_1_0.headers["etag"]
        # Each ETag revalidates its own card.
        again = await http.get(
            CARD, headers={"A2A-Version": "1.0", "If-None-Match": for_1_0.headers["etag"]}
        )
        assert again.status_code == 304
        assert (await http.get(CARD, headers={"If-None-Match": for_1_0.headers["etag"]})).status_code == 200
        # 0.3 asked for explicitly is the compatible card.
        assert (await http.get(CARD, headers={"A2A-Version": "0.3"})).json() == legacy.json()
