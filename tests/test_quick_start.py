"""The README's Set up and Quick start, kept true: its requests are sent to real
servers (the echo adapter, and the langgraph adapter on a scripted model for what
the default agent does) and the replies compared with the README's examples,
key by key where the README shows JSON."""

from __future__ import annotations

import ast
import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from molecule_runtime.adapters.base import AdapterConfig, TaskInput
from molecule_runtime.adapters.langgraph import LangGraphAdapter
from molecule_runtime.adapters.langgraph.local_llm import local_model_available
from molecule_runtime.adapters.langgraph.options import LOCAL_MAX_TOKENS, LangGraphOptions
from tests.support.procs import ServerProcess, running_server

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FIXTURES = ROOT / "tests" / "fixtures"
DOC_URL = "http://127.0.0.1:8000"


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


QUICK_START = section("Quick start")
SET_UP = section("Set up")


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def curl_request(block: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The headers and JSON body of a README `curl … -H … -d '…'` command."""
    headers = dict(h.split(": ", 1) for h in re.findall(r"-H '([^']+)'", block))
    body = json.loads(re.search(r"-d '(.*?)'", block, flags=re.S).group(1))  # type: ignore[union-attr]
    return headers, body


def documented_json(text: str) -> Any:
    """A README JSON example, its elisions (`[…]`, `{…}`) read as "anything"."""
    return json.loads(text.replace("[…]", "[]").replace("{…}", "{}"))


def assert_same_shape(doc: Any, real: Any, path: str = "$") -> None:
    """`real` has exactly the keys the README shows, list lengths and fixed values;
    `"ab…cd"` matches any string ending in `cd`, `[]` / `{}` any list / object."""
    if isinstance(doc, dict):
        assert isinstance(real, dict), f"{path}: {real!r}"
        if not doc:
            return
        assert set(doc) == set(real), f"{path}: README shows {sorted(doc)}, the server sends {sorted(real)}"
        for key in doc:
            assert_same_shape(doc[key], real[key], f"{path}.{key}")
    elif isinstance(doc, list):
        assert isinstance(real, list), f"{path}: {real!r}"
        if not doc:
            return
        assert len(doc) == len(real), f"{path}: README shows {len(doc)} items, the server sends {real!r}"
        for i, (d, r) in enumerate(zip(doc, real, strict=True)):
            assert_same_shape(d, r, f"{path}[{i}]")
    elif isinstance(doc, str) and "…" in doc:
        assert isinstance(real, str) and real.endswith(doc.rsplit("…", 1)[1]), f"{path}: {real!r}"
    else:
        assert doc == real, f"{path}: README shows {doc!r}, the server sends {real!r}"


def sse_events(url: str, headers: dict[str, str], body: dict[str, Any]) -> list[dict[str, Any]]:
    events = []
    with httpx.stream("POST", url, headers=headers, json=body, timeout=60) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:])["result"])
    return events


def final_state(events: list[dict[str, Any]]) -> str:
    last = events[-1]
    assert "statusUpdate" in last, last
    return last["statusUpdate"]["status"]["state"]


def streamed_answer(events: list[dict[str, Any]]) -> str:
    """The answer as a client applying the README's rule (append or replace) has it."""
    answer = ""
    for event in events:
        update = event.get("artifactUpdate")
        if update:
            text = "".join(p.get("text", "") for p in update["artifact"]["parts"])
            answer = answer + text if update.get("append") else text
    return answer


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("echo"), {"RUNTIME": "echo"}) as server:
        yield server


def langgraph_env(script: list[dict[str, Any]], **options: Any) -> dict[str, str]:
    factory = f"{FIXTURES / 'langgraph_fake_models.py'}:scripted"
    return {
        "RUNTIME": "langgraph",
        "ADAPTER_OPTIONS": json.dumps({"model_factory": factory, "fake_script": script, **options}),
    }


@pytest.fixture(scope="module")
def default_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """What `bash scripts/run.sh` serves (the langgraph adapter), on a scripted model."""
    env = langgraph_env([{"text": "hello agent"}])
    with running_server(tmp_path_factory.mktemp("langgraph"), env) as server:
        yield server


def test_run_sh_serves_the_langgraph_adapter() -> None:
    run_sh = (ROOT / "scripts" / "run.sh").read_text()
    assert 'RUNTIME="${RUNTIME:-langgraph}"' in run_sh
    assert "bash scripts/run.sh" in SET_UP and "bash scripts/test.sh" in SET_UP


def test_readyz_example(default_agent: ServerProcess, echo: ServerProcess) -> None:
    line = re.search(r"curl -s http://127.0.0.1:8000/readyz\n# (\{.*\})", QUICK_START)
    assert line, "the Quick start shows /readyz's answer"
    documented = json.loads(line.group(1))
    real = httpx.get(default_agent.url + "/readyz", timeout=10).json()
    assert documented == real
    # The echo adapter's differs in its name only.
    assert httpx.get(echo.url + "/readyz", timeout=10).json() == {**documented, "adapter": "echo"}


def test_send_message_example(echo: ServerProcess) -> None:
    block = next(b for b in blocks(QUICK_START, "bash") if '"SendMessage"' in b)
    headers, body = curl_request(block)
    reply = httpx.post(echo.url + "/", headers=headers, json=body, timeout=30)
    documented = documented_json(blocks(QUICK_START, "json")[0])
    assert_same_shape(documented, reply.json())
    metadata = reply.json()["result"]["task"]["metadata"]
    for key in ("molecule.mode", "molecule.created", "molecule.instance"):
        assert f"`{key}`" in QUICK_START and key in metadata


def test_streaming_example(echo: ServerProcess, default_agent: ServerProcess) -> None:
    (block,) = [b for b in blocks(QUICK_START, "bash") if '"SendStreamingMessage"' in b]
    headers, body = curl_request(block)
    for server in (echo, default_agent):
        body["params"]["message"]["messageId"] = f"stream-{server.port}"
        events = sse_events(server.url + "/", headers, body)
        # The task first, then artifact updates and WORKING status updates, then the final state.
        assert events[0]["task"]["status"]["state"] == "TASK_STATE_WORKING"
        assert final_state(events) == "TASK_STATE_COMPLETED"
        for event in events[1:-1]:
            assert "artifactUpdate" in event or (
                event["statusUpdate"]["status"]["state"] == "TASK_STATE_WORKING"
            ), event
        assert streamed_answer(events) == "hello agent"
        assert any(e["artifactUpdate"].get("lastChunk") for e in events if "artifactUpdate" in e)
        usage = [
            e for e in events[1:-1] if "molecule.usage" in e.get("statusUpdate", {}).get("metadata", {})
        ]
        # The default agent reports its usage in a WORKING update; the echo adapter has none.
        assert bool(usage) == (server is default_agent), events


def test_sdk_client_example(echo: ServerProcess, tmp_path: Path) -> None:
    example = next(b for b in blocks(QUICK_START, "python") if "SendMessageRequest(message=message)" in b)
    script = tmp_path / "client.py"
    script.write_text(example.replace(DOC_URL, echo.url))
    printed = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    expected = re.search(r"Against the echo adapter this prints:\n\n```\n(.*?)```", QUICK_START, re.S)
    assert expected and printed == expected.group(1)


# -- the token limit (the default agent's 256) ------------------------------------


def test_readme_quotes_the_limit_message() -> None:
    adapter = LangGraphAdapter()
    adapter.options = LangGraphOptions(max_tokens=LOCAL_MAX_TOKENS)
    quoted = re.search(r'status message "([^"]*?)…"', SET_UP)
    assert quoted and adapter.cut_message().startswith(quoted.group(1))
    assert f"{LOCAL_MAX_TOKENS} tokens" in SET_UP


async def test_answer_cut_at_the_token_limit_says_so(server_factory) -> None:
    env = langgraph_env([{"text": "Once upon a time there was", "finish_reason": "length"}], max_tokens=7)
    server = server_factory(env)
    events = sse_events(
        server.url + "/",
        {"A2A-Version": "1.0"},
        {
            "jsonrpc": "2.0", "id": 1, "method": "SendStreamingMessage",
            "params": {"message": {"role": "ROLE_USER", "messageId": "story", "parts": [{"text": "a story"}]}},
        },
    )
    assert final_state(events) == "TASK_STATE_COMPLETED"
    message = events[-1]["statusUpdate"]["status"]["message"]["parts"][0]["text"]
    assert message.startswith("The answer stopped at the 7-token limit"), message
    assert streamed_answer(events) == "Once upon a time there was"
    # A reply that ended by itself completes without one.
    done = server_factory(langgraph_env([{"text": "Short."}]))
    events = sse_events(
        done.url + "/",
        {"A2A-Version": "1.0"},
        {
            "jsonrpc": "2.0", "id": 1, "method": "SendStreamingMessage",
            "params": {"message": {"role": "ROLE_USER", "messageId": "short", "parts": [{"text": "hi"}]}},
        },
    )
    assert final_state(events) == "TASK_STATE_COMPLETED"
    assert "message" not in events[-1]["statusUpdate"]["status"]


_LOCAL_MISSING = local_model_available()


@pytest.mark.local_model
@pytest.mark.skipif(_LOCAL_MISSING is not None, reason=f"local model unavailable: {_LOCAL_MISSING}")
async def test_real_local_model_says_when_it_was_cut(tmp_path: Path) -> None:
    adapter = LangGraphAdapter()
    config = AdapterConfig("workspace", tmp_path, options={"max_tokens": 12})
    await adapter.setup(config)
    try:
        task = TaskInput("t", "c", "Tell me a long story about a dragon and a knight.")
        items = [item async for item in adapter.stream(task)]
    finally:
        await adapter.aclose()
    assert all(isinstance(i, str) for i in items[:-1]) and "".join(items[:-1]).strip()
    assert "12-token limit" in items[-1].message


# -- files and data (the report template) -----------------------------------------


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    command = re.search(r"(ADAPTER_MODULE=(\S+)) \.venv/bin/molecule-runtime", QUICK_START)
    assert command, "the Quick start shows how to start the report template"
    env = {"ADAPTER_MODULE": command.group(2)}
    with running_server(tmp_path_factory.mktemp("report"), env, cwd=ROOT) as server:
        yield server


def test_files_example(report: ServerProcess) -> None:
    block = next(b for b in blocks(QUICK_START, "bash") if '"raw"' in b)
    headers, body = curl_request(block)
    reply = httpx.post(report.url + "/", headers=headers, json=body, timeout=30).json()
    task = reply["result"]["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    assert '"Report ready."' in QUICK_START
    assert task["status"]["message"]["parts"] == [{"text": "Report ready."}]
    artifacts_block = next(b for b in blocks(QUICK_START, "json") if '"artifacts"' in b and "report" in b)
    documented = documented_json("{" + artifacts_block + "}")
    assert_same_shape(documented["artifacts"], task["artifacts"])
    # The base64 in the command is the file the README's printf makes.
    printf = re.search(r"`printf '(.*?)' \| base64`", QUICK_START)
    assert printf
    raw = body["params"]["message"]["parts"][0]["raw"]
    assert base64.b64decode(raw) == printf.group(1).replace("\\n", "\n").encode()


def test_files_sdk_example(report: ServerProcess, tmp_path: Path) -> None:
    example = next(b for b in blocks(QUICK_START, "python") if "csv_in = Part(" in b)
    script = tmp_path / "files_client.py"
    script.write_text(example.replace(DOC_URL, report.url))
    printed = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    ).stdout.splitlines()
    shown = re.search(r"```python\n" + re.escape(example) + r"```\n\nprints\n\n```\n(.*?)```", QUICK_START, re.S)
    assert shown
    expected = shown.group(1).splitlines()
    # A data part's keys come in no fixed order: compare the summary as a value.
    split = [line.partition(": ") for line in expected]
    assert len(printed) == len(expected)
    for (label, _, value), line in zip(split, printed, strict=True):
        if label == "summary":
            assert line.startswith("summary: ")
            assert ast.literal_eval(line.removeprefix("summary: ")) == ast.literal_eval(value)
        else:
            assert line == f"{label}{_}{value}"


# -- a second server on the same ./.molecule ----------------------------------------


def test_second_server_sharing_the_data_dir_is_a_replica(tmp_path: Path) -> None:
    """What the README's "A second server" says: same data dir, other port, one agent."""
    assert "**A second server.**" in SET_UP
    data = {"MOLECULE_DATA_DIR": str(tmp_path / "shared")}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    headers = {"A2A-Version": "1.0"}

    def send(server: ServerProcess, message_id: str) -> dict[str, Any]:
        body = {
            "jsonrpc": "2.0", "id": 1, "method": "SendMessage",
            "params": {"message": {"role": "ROLE_USER", "messageId": message_id, "parts": [{"text": "hi"}]}},
        }
        return httpx.post(server.url + "/", headers=headers, json=body, timeout=30).json()["result"]["task"]

    with (
        running_server(tmp_path / "a", {"RUNTIME": "echo", **data}) as first,
        running_server(tmp_path / "b", {"RUNTIME": "echo", **data}) as second,
    ):
        task = send(first, "shared-1")
        # The same message sent to the other server: the same task, not run again.
        assert send(second, "shared-1")["id"] == task["id"]
        listed = httpx.post(
            second.url + "/", headers=headers, timeout=30,
            json={"jsonrpc": "2.0", "id": 2, "method": "ListTasks", "params": {}},
        ).json()["result"]["tasks"]
        assert [t["id"] for t in listed] == [task["id"]]
        # Told apart by their instance ids (hostname-port).
        assert task["metadata"]["molecule.instance"].endswith(f"-{first.port}")
