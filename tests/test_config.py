"""Settings: the environment names of DESIGN.md's contract, their defaults, JSON options, CLI flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from molecule_runtime.cli import FLAGS, _parser, load_settings
from molecule_runtime.config import Settings
from molecule_runtime.config_checks import redact_url


def env_names(field: str) -> list[str]:
    alias = Settings.model_fields[field].validation_alias
    return [str(choice) for choice in alias.choices]  # type: ignore[union-attr]


ALL_ENV_NAMES = sorted({name for field in Settings.model_fields for name in env_names(field)})


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read os.environ: start every test from none of ours being set."""
    for name in ALL_ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


# (env name of the design's environment contract, settings field, value to set, parsed value)
CONTRACT = [
    ("ADAPTER_MODULE", "adapter_module", "adapter", "adapter"),
    ("RUNTIME", "runtime", "langgraph", "langgraph"),
    ("HOST", "host", "0.0.0.0", "0.0.0.0"),
    ("PORT", "port", "9100", 9100),
    ("PUBLIC_URL", "public_url", "https://a.example/x", "https://a.example/x"),
    ("MOLECULE_DATA_DIR", "data_dir", "/var/lib/agent", Path("/var/lib/agent")),
    ("WORKSPACE_ID", "workspace_id", "ws-7", "ws-7"),
    ("TASK_STORE_URL", "task_store_url", "memory", "memory"),
    ("TEMPORAL_HOST", "temporal_host", "embedded", "embedded"),
    ("TEMPORAL_NAMESPACE", "temporal_namespace", "prod", "prod"),
    ("TEMPORAL_TASK_QUEUE", "temporal_task_queue", "q1", "q1"),
    ("TEMPORAL_HEARTBEAT_TIMEOUT", "temporal_heartbeat_timeout", "2.5", 2.5),
    ("TEMPORAL_ACTIVITY_TIMEOUT", "temporal_activity_timeout", "120", 120.0),
    ("TEMPORAL_SCHEDULE_TO_START_TIMEOUT", "temporal_schedule_to_start_timeout", "0.5", 0.5),
    ("TEMPORAL_MAX_ATTEMPTS", "temporal_max_attempts", "5", 5),
    ("TEMPORAL_RETRY_INITIAL_INTERVAL", "temporal_retry_initial_interval", "0.1", 0.1),
    ("MODEL", "model", "smollm2", "smollm2"),
    ("SYSTEM_PROMPT", "system_prompt", "Be brief.", "Be brief."),
    ("ADAPTER_OPTIONS", "adapter_options", '{"delay": 0.1, "n": [1]}', {"delay": 0.1, "n": [1]}),
]


@pytest.mark.parametrize(("env", "field", "raw", "parsed"), CONTRACT, ids=[c[0] for c in CONTRACT])
def test_contract_env_name(
    monkeypatch: pytest.MonkeyPatch, env: str, field: str, raw: str, parsed: object
) -> None:
    assert env in env_names(field)
    monkeypatch.setenv(env, raw)
    assert getattr(Settings(), field) == parsed


def test_auth_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().auth_token is None
    monkeypatch.setenv("MOLECULE_AUTH_TOKEN", "t0ken")
    settings = Settings()
    assert settings.auth_token is not None
    assert settings.auth_token.get_secret_value() == "t0ken"
    assert "t0ken" not in repr(settings)
    assert settings.redacted()["auth_token"] == "***"
    monkeypatch.setenv("MOLECULE_AUTH_TOKEN", "")
    assert Settings().auth_token is None


def test_defaults() -> None:
    s = Settings()
    assert s.adapter_module is None
    assert s.runtime == "echo"
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.resolved_public_url == "http://127.0.0.1:8000"
    assert s.data_dir == Path("./.molecule")
    assert s.workspace_id == "workspace-default"
    assert (
        s.resolved_task_store_url == f"sqlite+aiosqlite:///{Path('.molecule/tasks.db').resolve()}"
    )
    assert s.temporal_host is None and not s.durable
    assert s.temporal_namespace == "default"
    assert s.temporal_task_queue == "molecule-agent-tasks"
    assert s.auth_token is None
    assert (s.model, s.system_prompt, s.adapter_options) == ("", "", {})


def test_public_url_follows_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST", "10.1.2.3")
    monkeypatch.setenv("PORT", "9000")
    assert Settings().resolved_public_url == "http://10.1.2.3:9000"
    monkeypatch.setenv("PUBLIC_URL", "https://agent.example/")
    assert Settings().resolved_public_url == "https://agent.example"


def test_task_store_url_under_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MOLECULE_DATA_DIR", str(tmp_path))
    assert Settings().resolved_task_store_url == f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"


def test_durable_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_HOST", "127.0.0.1:7233")
    assert Settings().durable


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "ADAPTER_OPTIONS is not valid JSON"),
        ("[1, 2]", "ADAPTER_OPTIONS must be a JSON object"),
        ('"text"', "ADAPTER_OPTIONS must be a JSON object"),
    ],
)
def test_adapter_options_errors(monkeypatch: pytest.MonkeyPatch, raw: str, message: str) -> None:
    monkeypatch.setenv("ADAPTER_OPTIONS", raw)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_empty_adapter_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTER_OPTIONS", "")
    assert Settings().adapter_options == {}


@pytest.mark.parametrize(
    ("env", "raw"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("TEMPORAL_HEARTBEAT_TIMEOUT", "0"),
        ("TEMPORAL_MAX_ATTEMPTS", "0"),
        ("LOG_LEVEL", "chatty"),
    ],
)
def test_invalid_values(monkeypatch: pytest.MonkeyPatch, env: str, raw: str) -> None:
    monkeypatch.setenv(env, raw)
    with pytest.raises(ValidationError, match=env):
        Settings()


def test_cli_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9100")
    monkeypatch.setenv("RUNTIME", "langgraph")
    monkeypatch.setenv("MODEL", "from-env")
    monkeypatch.setenv("WORKSPACE_ID", "ws-env")
    args = _parser().parse_args(["--port", "9200", "--runtime", "echo", "--model", "from-flag"])
    settings = load_settings(args)
    assert settings.port == 9200
    assert settings.runtime == "echo"
    assert settings.model == "from-flag"
    assert settings.workspace_id == "ws-env"  # no flag given: the environment still counts


def test_every_flag_names_a_setting() -> None:
    for flag, field, _, help_text in FLAGS:
        assert field in Settings.model_fields, flag
        # The help names the environment variable the flag overrides.
        assert any(name in help_text for name in env_names(field)), flag


def test_redact_url() -> None:
    assert (
        redact_url("postgresql+asyncpg://u:secret@db:5432/t")
        == "postgresql+asyncpg://u:***@db:5432/t"
    )
    assert redact_url("sqlite+aiosqlite:///x.db") == "sqlite+aiosqlite:///x.db"


def test_invalid_settings_exit_2_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "ADAPTER_OPTIONS": "{oops", "MOLECULE_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "molecule_runtime"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "ADAPTER_OPTIONS is not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_help_lists_flags() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "molecule_runtime", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for flag, *_ in FLAGS:
        assert flag in result.stdout


def test_readme_settings_table_is_complete() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = {
        line.split("|")[1].strip().strip("`"): line
        for line in section.splitlines()
        if line.startswith("| `")
    }
    for field in Settings.model_fields:
        assert any(name in rows for name in env_names(field)), f"{field} missing from the README"
    for flag, field, _, _ in FLAGS:
        row = next(rows[name] for name in env_names(field) if name in rows)
        assert f"`{flag}`" in row, f"{flag} missing from the README row of {field}"
    documented_flags = {
        part for row in rows.values() for part in row.split("`") if part.startswith("--")
    }
    assert documented_flags <= {flag for flag, *_ in FLAGS}
