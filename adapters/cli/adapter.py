"""CLI agent template: wrap any command-line agent as an A2A agent, streaming its stdout.

Run it:
    CLI_AGENT_COMMAND='my-agent --print {prompt}' ADAPTER_MODULE=adapter molecule-runtime

Each task runs the command once. `{prompt}` in an argument is replaced by the
user's message; without a placeholder the message is written to the command's
standard input. Standard output streams to the client as it is printed. A
cancelled task stops the command: SIGTERM to its whole process group, then
SIGKILL after `kill_grace` seconds.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import shlex
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from molecule_runtime.adapters import AdapterConfig, BaseAdapter, NonRetryableError, TaskInput

PLACEHOLDER = "{prompt}"
READ_SIZE = 4096
STDERR_TAIL = 2000


class Adapter(BaseAdapter):
    """Options (`ADAPTER_OPTIONS`): `command` (string or list; else `CLI_AGENT_COMMAND`),
    `cwd` (working directory of the command), `kill_grace` (seconds, default 5),
    `env` (extra environment variables, a JSON object)."""

    def __init__(self) -> None:
        self.argv: list[str] = []
        self.cwd: Path | None = None
        self.kill_grace = 5.0
        self.extra_env: dict[str, str] = {}

    @staticmethod
    def name() -> str:
        return "cli-template"

    def description(self) -> str:
        program = Path(self.argv[0]).name if self.argv else "a command-line agent"
        return f"Runs {program} for each message and streams its output."

    async def setup(self, config: AdapterConfig) -> None:
        command = config.options.get("command") or os.environ.get("CLI_AGENT_COMMAND", "")
        self.argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
        if not self.argv:
            raise ValueError(
                "no command: set CLI_AGENT_COMMAND or ADAPTER_OPTIONS={\"command\": ...}"
            )
        if config.options.get("cwd"):
            self.cwd = Path(config.options["cwd"]).expanduser()
        self.kill_grace = float(config.options.get("kill_grace", 5.0))
        self.extra_env = {str(k): str(v) for k, v in (config.options.get("env") or {}).items()}

    async def stream(self, task: TaskInput) -> AsyncIterator[str]:
        uses_placeholder = any(PLACEHOLDER in arg for arg in self.argv)
        argv = [arg.replace(PLACEHOLDER, task.text) for arg in self.argv]
        env = {
            **os.environ,
            **self.extra_env,
            "MOLECULE_TASK_ID": task.task_id,
            "MOLECULE_CONTEXT_ID": task.context_id,
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL if uses_placeholder else asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.cwd,
                env=env,
                # Own process group: cancellation must reach the CLI's children too.
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError) as exc:
            raise NonRetryableError(f"cannot run {argv[0]!r}: {exc}") from exc
        assert proc.stdout is not None and proc.stderr is not None
        stderr_reader = asyncio.create_task(proc.stderr.read())
        # Fed concurrently: a CLI may print before it has read all of its input.
        stdin_writer = (
            None if uses_placeholder else asyncio.create_task(_feed(proc, task.text))
        )
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while data := await proc.stdout.read(READ_SIZE):
                text = decoder.decode(data)
                if text:
                    yield text
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
            returncode = await proc.wait()
            if returncode != 0:
                stderr = (await stderr_reader).decode(errors="replace")[-STDERR_TAIL:]
                raise RuntimeError(f"{argv[0]} exited with status {returncode}: {stderr.strip()}")
        finally:
            await _stop(proc, self.kill_grace)
            for helper in (stderr_reader, stdin_writer):
                if helper is not None and not helper.done():
                    helper.cancel()


async def _feed(proc: asyncio.subprocess.Process, text: str) -> None:
    assert proc.stdin is not None
    # The command may exit without reading its input; that is not our failure.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(text.encode())
        await proc.stdin.drain()
        proc.stdin.close()


async def _stop(proc: asyncio.subprocess.Process, grace: float) -> None:
    """End the command's process group: SIGTERM, wait `grace` seconds, then SIGKILL.

    Also runs after a normal exit, so background children the CLI left behind
    do not outlive the task.
    """
    pgid = proc.pid
    try:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                pass
    finally:
        # Runs even if we are cancelled again while waiting: nothing survives.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
