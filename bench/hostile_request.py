"""One principal's largest requests against another principal's ListTasks latency.

A runtime (direct mode, SQLite, echo adapter, two API keys) serves `bob`, who
calls ListTasks in a loop, while `alice` sends, one after another, the largest
requests the default limits let through (and some they refuse), on JSON-RPC and
gRPC. The figure is bob's ListTasks latency while each kind of request is being
sent (p50, p99, max), against bob's latency on an idle server. Target: p99 at
most 0.5 s for every kind (docs/security.md).

    python -m bench.hostile_request [--rounds 5] [--out bench/results/hostile.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
from a2a.types.a2a_pb2 import SendMessageRequest
from google.protobuf.json_format import ParseDict

from bench.measure import pct
from bench.procs import Proc, python_module
from tests.support.procs import free_port

ALICE = "alice-" + uuid.uuid4().hex
BOB = "bob-" + uuid.uuid4().hex
V1 = {"A2A-Version": "1.0", "Content-Type": "application/json"}
MIB = 1024 * 1024


def message(parts: list[dict[str, Any]], metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"role": "ROLE_USER", "messageId": str(uuid.uuid4()), "parts": parts}
    if metadata:
        body["metadata"] = metadata
    return body


def kinds() -> dict[str, dict[str, Any]]:
    """SendMessage params of each kind of large request (a new message id each call)."""
    return {
        # The review's request: refused now (MOLECULE_MAX_JSON_VALUES).
        "250k-parts (refused)": {"parts": [{"text": "a"}] * 250_000},
        # Accepted: the most parts (MOLECULE_MAX_MESSAGE_PARTS), filling the 4 MiB body.
        "100-parts-4MiB": {"parts": [{"text": "a" * (4 * MIB // 100 - 40)}] * 100},
        # Refused now: ten times as many (0.58 s p99 for bob when they were accepted).
        "1000-parts-4MiB (refused)": {"parts": [{"text": "a" * (4 * MIB // 1000 - 40)}] * 1000},
        # Accepted: a data part just under the values limit.
        "data-9.9k-values": {"parts": [{"text": "x"}, {"data": [0] * 9_900}]},
        # Refused: ten times as many (each value costs ~30 µs of the SDK's
        # validation walk on the event loop: 3 s for these).
        "data-99k-values (refused)": {"parts": [{"text": "x"}, {"data": [0] * 99_000}]},
        # Accepted: metadata at its limit plus one big text part.
        "metadata-64KiB+text-3.9MiB": {
            "parts": [{"text": "a" * (4 * MIB - 80 * 1024)}],
            "metadata": {"k": "v" * (64 * 1024 - 200)},
        },
        # Refused: a million values in a data part.
        "data-1M-values (refused)": {"parts": [{"data": [0] * 1_000_000}]},
    }


def bob_process(url: str, key: str, stop: Any, ready: Any, out: Any) -> None:
    """Bob's ListTasks loop, in a process of its own: alice's client-side work
    (building and encoding her requests) must not delay bob's measurements."""
    headers = {**V1, "Authorization": f"Bearer {key}"}
    samples: list[float] = []
    with httpx.Client(base_url=url, timeout=120) as http:
        ready.set()
        while not stop.is_set():
            started = time.perf_counter()
            reply = http.get("/rest/tasks?pageSize=20", headers=headers)
            samples.append(time.perf_counter() - started)
            assert reply.status_code == 200, reply.text[:200]
            time.sleep(0.02)
    out.put(samples)


class Bob:
    """Bob's loop for the length of a `with` block; `samples` after it."""

    def __init__(self, url: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self.ready = context.Event()
        self.out: Any = context.Queue()
        self.proc = context.Process(target=bob_process, args=(url, BOB, self.stop, self.ready, self.out))
        self.samples: list[float] = []

    def __enter__(self) -> Bob:
        self.proc.start()
        self.ready.wait(60)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.samples = self.out.get(timeout=300)
        self.proc.join(60)


def params_of(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "message": message(spec["parts"], spec.get("metadata")),
        "configuration": {"returnImmediately": True},
    }


def alice_http(url: str, spec: dict[str, Any], rounds: int, bob_url: str) -> tuple[list[str], Bob]:
    headers = {**V1, "Authorization": f"Bearer {ALICE}"}
    bodies = [
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": params_of(spec)})
        for _ in range(rounds)
    ]
    answers = []
    with httpx.Client(base_url=url, timeout=300) as http, Bob(bob_url) as bob:
        for body in bodies:
            reply = http.post("/", content=body, headers=headers)
            # Only the start of the answer: parsing a large one is client work.
            accepted = b'"result"' in reply.content[:64]
            answers.append("accepted" if accepted else "refused " + reply.text[:120])
    return answers, bob


def alice_grpc(port: int, spec: dict[str, Any], rounds: int, bob_url: str) -> tuple[list[str], Bob]:
    metadata = (("authorization", f"Bearer {ALICE}"), ("a2a-version", "1.0"))
    requests = [ParseDict(params_of(spec), SendMessageRequest()).SerializeToString() for _ in range(rounds)]
    answers = []
    options = [("grpc.max_send_message_length", 16 * MIB), ("grpc.max_receive_message_length", 64 * MIB)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        # Requests sent as bytes: encoding them is client work, done before.
        send = channel.unary_unary("/lf.a2a.v1.A2AService/SendMessage")
        with Bob(bob_url) as bob:
            for request in requests:
                try:
                    send(request, metadata=metadata)
                    answers.append("accepted")
                except grpc.RpcError as refused:
                    answers.append(f"refused {refused.code().name}")  # type: ignore[attr-defined]
    return answers, bob


def figures(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_s": round(pct(samples, 50), 4),
        "p99_s": round(pct(samples, 99), 4),
        "max_s": round(max(samples), 4) if samples else float("nan"),
    }


def seed_bob(url: str) -> None:
    bob = {**V1, "Authorization": f"Bearer {BOB}"}
    with httpx.Client(base_url=url, timeout=60) as http:
        for i in range(20):  # bob has tasks of his own to list
            params = {"message": message([{"text": f"bob {i}"}])}
            body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": params}
            assert http.post("/", json=body, headers=bob).status_code == 200


def measure(url: str, grpc_port: int, rounds: int, only: list[str] | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    seed_bob(url)
    with Bob(url) as idle:
        time.sleep(3)
    results["idle"] = figures(idle.samples)
    print("idle", results["idle"], flush=True)
    for name, spec in kinds().items():
        if only and not any(part in name for part in only):
            continue
        for binding in ("jsonrpc", "grpc"):
            started = time.perf_counter()
            if binding == "jsonrpc":
                answers, bob = alice_http(url, spec, rounds, url)
            else:
                answers, bob = alice_grpc(grpc_port, spec, rounds, url)
            elapsed = time.perf_counter() - started
            key = f"{name} / {binding}"
            results[key] = {
                **figures(bob.samples),
                "alice_answers": sorted({a[:80] for a in answers}),
                "alice_s_per_request": round(elapsed / rounds, 3),
            }
            print(key, results[key], flush=True)
            time.sleep(1)  # let the accepted tasks finish before the next kind
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", action="append", help="kinds whose name contains this")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        grpc_port = free_port()
        server = Proc(
            "runtime",
            python_module("molecule_runtime", "serve"),
            {
                "MOLECULE_DATA_DIR": str(Path(tmp) / "data"),
                "MOLECULE_API_KEYS": f"alice:{ALICE},bob:{BOB}",
                "MOLECULE_GRPC_PORT": str(grpc_port),
                "LOG_LEVEL": "WARNING",
            },
            Path(tmp),
        ).start()
        try:
            server.wait_ready()
            results = measure(f"http://127.0.0.1:{server.port}", grpc_port, args.rounds, args.only)
        finally:
            server.stop()
    worst = max(v["p99_s"] for k, v in results.items() if k != "idle")
    results["target"] = {"other_principal_list_tasks_p99_s": 0.5, "worst_p99_s": worst, "pass": worst <= 0.5}
    print(json.dumps(results, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
