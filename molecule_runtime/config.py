"""Runtime settings, read from the environment (and CLI flags) with pydantic-settings.

The fields and the values derived from them; how a value is parsed, checked
and defaulted is in config_checks.py.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from molecule_runtime.config_checks import (
    check_jwt,
    check_push_key,
    default_max_running_tasks,
    empty_secret_is_unset,
    log_level,
    parse_adapter_options,
    redact_url,
)
from molecule_runtime.vocabulary import ConcurrentMessages


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Every setting of the runtime; the README's settings table mirrors this class."""

    # hide_input_in_errors: a refused setting's error must not print the input,
    # which holds every other setting too (keys, tokens, database passwords).
    model_config = SettingsConfigDict(
        case_sensitive=False, populate_by_name=True, extra="ignore", hide_input_in_errors=True
    )

    # Adapter
    adapter_module: str | None = Field(None, validation_alias=_env("ADAPTER_MODULE"))
    runtime: str = Field("echo", validation_alias=_env("RUNTIME"))
    model: str = Field("", validation_alias=_env("MODEL"))
    system_prompt: str = Field("", validation_alias=_env("SYSTEM_PROMPT"))
    # NoDecode: our validator parses the JSON, so a typo gets a clear message
    # instead of pydantic-settings' generic "error parsing value".
    adapter_options: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict, validation_alias=_env("ADAPTER_OPTIONS")
    )

    # Server
    host: str = Field("127.0.0.1", validation_alias=_env("HOST"))
    port: int = Field(8000, validation_alias=_env("PORT"), ge=0, le=65535)
    public_url: str | None = Field(None, validation_alias=_env("PUBLIC_URL"))
    agent_name: str | None = Field(None, validation_alias=_env("AGENT_NAME"))
    agent_description: str | None = Field(None, validation_alias=_env("AGENT_DESCRIPTION"))
    auth_token: SecretStr | None = Field(None, validation_alias=_env("MOLECULE_AUTH_TOKEN"))
    # Principals (server/principals.py): named API keys, JWT bearer tokens.
    api_keys: SecretStr | None = Field(None, validation_alias=_env("MOLECULE_API_KEYS"))
    api_keys_file: Path | None = Field(None, validation_alias=_env("MOLECULE_API_KEYS_FILE"))
    jwt_jwks_url: str | None = Field(None, validation_alias=_env("MOLECULE_JWT_JWKS_URL"))
    jwt_key_file: Path | None = Field(None, validation_alias=_env("MOLECULE_JWT_KEY_FILE"))
    jwt_issuer: str | None = Field(None, validation_alias=_env("MOLECULE_JWT_ISSUER"))
    jwt_audience: str | None = Field(None, validation_alias=_env("MOLECULE_JWT_AUDIENCE"))
    jwt_algorithms: str = Field("RS256,ES256", validation_alias=_env("MOLECULE_JWT_ALGORITHMS"))
    jwt_leeway: float = Field(30.0, validation_alias=_env("MOLECULE_JWT_LEEWAY"), ge=0, le=300)
    jwt_tenant_claim: str | None = Field(None, validation_alias=_env("MOLECULE_JWT_TENANT_CLAIM"))
    metrics_public: bool = Field(True, validation_alias=_env("MOLECULE_METRICS_PUBLIC"))
    # Browsers (server/browsers.py): the Host names served (unset: loopback names,
    # PUBLIC_URL's host and HOST; `*`: any), and web origins allowed to call.
    allowed_hosts: str | None = Field(None, validation_alias=_env("MOLECULE_ALLOWED_HOSTS"))
    cors_origins: str | None = Field(None, validation_alias=_env("MOLECULE_CORS_ORIGINS"))
    # Per-principal limits (0: none): tasks admitted at once, requests a minute.
    principal_max_tasks: int = Field(0, validation_alias=_env("MOLECULE_PRINCIPAL_MAX_TASKS"), ge=0)
    principal_requests_per_minute: int = Field(
        0, validation_alias=_env("MOLECULE_PRINCIPAL_REQUESTS_PER_MINUTE"), ge=0
    )
    log_level: str = Field("INFO", validation_alias=_env("LOG_LEVEL"))
    log_format: Literal["text", "json"] = Field("text", validation_alias=_env("LOG_FORMAT"))
    stream_batch_window: float = Field(
        0.05, validation_alias=_env("STREAM_BATCH_WINDOW"), ge=0, le=5
    )
    shutdown_grace: float = Field(10.0, validation_alias=_env("MOLECULE_SHUTDOWN_GRACE"), ge=0)
    max_request_bytes: int = Field(
        4 * 1024 * 1024, validation_alias=_env("MOLECULE_MAX_REQUEST_BYTES"), ge=1
    )
    request_timeout: float = Field(30.0, validation_alias=_env("MOLECULE_REQUEST_TIMEOUT"), gt=0)
    # Request complexity (server/limits.py): a body's JSON nesting and number of
    # values are checked on its bytes before it is parsed; a request over them
    # would hold the event loop while the SDK builds it, whoever else waits.
    max_json_depth: int = Field(64, validation_alias=_env("MOLECULE_MAX_JSON_DEPTH"), ge=8, le=512)
    max_json_values: int = Field(
        10_000, validation_alias=_env("MOLECULE_MAX_JSON_VALUES"), ge=100
    )
    # Checked by the request handler on every binding (server/complexity.py).
    max_message_parts: int = Field(
        100, validation_alias=_env("MOLECULE_MAX_MESSAGE_PARTS"), ge=1
    )
    max_metadata_bytes: int = Field(
        64 * 1024, validation_alias=_env("MOLECULE_MAX_METADATA_BYTES"), ge=0
    )
    max_history_length: int = Field(
        1000, validation_alias=_env("MOLECULE_MAX_HISTORY_LENGTH"), ge=1
    )
    # The gRPC binding (server/grpc_server.py): off unless a port is set.
    grpc_port: int | None = Field(None, validation_alias=_env("MOLECULE_GRPC_PORT"), ge=1, le=65535)
    grpc_public_url: str | None = Field(None, validation_alias=_env("MOLECULE_GRPC_PUBLIC_URL"))
    # Agent card: how long clients and caches may reuse it without asking again.
    card_max_age: int = Field(300, validation_alias=_env("MOLECULE_CARD_MAX_AGE"), ge=0)
    # A2A 0.3 clients: method names on JSON-RPC, the 0.3 gRPC service, the card's 0.3 fields.
    a2a_v03_compat: bool = Field(True, validation_alias=_env("MOLECULE_A2A_V03_COMPAT"))
    # Largest file an adapter may output as bytes (FileOutput.data); stored with the task.
    max_file_bytes: int = Field(
        10 * 1024 * 1024, validation_alias=_env("MOLECULE_MAX_FILE_BYTES"), ge=1
    )
    # Largest JSON result of an adapter's durable step (adapters/steps.py).
    step_max_bytes: int = Field(
        1024 * 1024, validation_alias=_env("MOLECULE_STEP_MAX_BYTES"), ge=1
    )
    # Bytes of conversation history (UTF-8 text) handed to an adapter; newest kept.
    history_bytes: int = Field(
        256 * 1024, validation_alias=_env("MOLECULE_HISTORY_BYTES"), ge=0
    )

    # Admission control: tasks running at once (0: no limit), and accepted
    # tasks waiting for a slot; past both, new messages are refused (503).
    max_running_tasks: int = Field(
        default_factory=default_max_running_tasks,
        validation_alias=_env("MOLECULE_MAX_RUNNING_TASKS"),
        ge=0,
    )
    max_queued_tasks: int = Field(1000, validation_alias=_env("MOLECULE_MAX_QUEUED_TASKS"), ge=0)

    # The web console at /console (server/console/)
    console: bool = Field(True, validation_alias=_env("MOLECULE_CONSOLE"))

    # Submission rules (server/submission.py): how long a message id is
    # remembered (0: forever), and what a message to a conversation whose
    # earlier task still runs does.
    idempotency_retention: float = Field(
        86400.0, validation_alias=_env("MOLECULE_IDEMPOTENCY_RETENTION"), ge=0
    )
    concurrent_messages: ConcurrentMessages = Field(
        ConcurrentMessages.ENQUEUE, validation_alias=_env("MOLECULE_CONCURRENT_MESSAGES")
    )
    # Exactly once by (sender, messageId): off for clients that reuse message ids.
    message_id_dedup: bool = Field(True, validation_alias=_env("MOLECULE_MESSAGE_ID_DEDUP"))

    # Resumable streams and push notifications
    event_retention: float = Field(
        7 * 86400.0, validation_alias=_env("MOLECULE_EVENT_RETENTION"), ge=0
    )
    push_notifications: bool = Field(True, validation_alias=_env("MOLECULE_PUSH_NOTIFICATIONS"))
    push_allow_private: bool = Field(False, validation_alias=_env("MOLECULE_PUSH_ALLOW_PRIVATE"))
    push_max_attempts: int = Field(5, validation_alias=_env("MOLECULE_PUSH_MAX_ATTEMPTS"), ge=1)
    push_retry_initial_interval: float = Field(
        1.0, validation_alias=_env("MOLECULE_PUSH_RETRY_INITIAL_INTERVAL"), gt=0
    )
    push_max_configs_per_task: int = Field(
        10, validation_alias=_env("MOLECULE_PUSH_MAX_CONFIGS_PER_TASK"), ge=1
    )
    push_max_concurrent_deliveries: int = Field(
        4, validation_alias=_env("MOLECULE_PUSH_MAX_CONCURRENT_DELIVERIES"), ge=1
    )
    push_encrypt: bool = Field(False, validation_alias=_env("MOLECULE_PUSH_ENCRYPT"))
    push_encryption_key: SecretStr | None = Field(
        None, validation_alias=_env("MOLECULE_PUSH_ENCRYPTION_KEY")
    )

    # State
    data_dir: Path = Field(Path("./.molecule"), validation_alias=_env("MOLECULE_DATA_DIR"))
    workspace_id: str = Field("workspace-default", validation_alias=_env("WORKSPACE_ID"))
    task_store_url: str | None = Field(None, validation_alias=_env("TASK_STORE_URL"))
    instance_id: str | None = Field(None, validation_alias=_env("MOLECULE_INSTANCE_ID"))

    # Durable mode
    temporal_host: str | None = Field(None, validation_alias=_env("TEMPORAL_HOST"))
    temporal_namespace: str = Field("default", validation_alias=_env("TEMPORAL_NAMESPACE"))
    temporal_task_queue: str = Field(
        "molecule-agent-tasks", validation_alias=_env("TEMPORAL_TASK_QUEUE")
    )
    temporal_heartbeat_timeout: float = Field(
        30.0, validation_alias=_env("TEMPORAL_HEARTBEAT_TIMEOUT"), gt=0
    )
    temporal_activity_timeout: float = Field(
        600.0, validation_alias=_env("TEMPORAL_ACTIVITY_TIMEOUT"), gt=0
    )
    temporal_schedule_to_start_timeout: float = Field(
        10.0, validation_alias=_env("TEMPORAL_SCHEDULE_TO_START_TIMEOUT"), gt=0
    )
    temporal_max_attempts: int = Field(3, validation_alias=_env("TEMPORAL_MAX_ATTEMPTS"), ge=1)
    # A new task's first attempt begins once Temporal accepted its workflow
    # (durable/early.py); off: it begins when llm_call reaches this process.
    temporal_early_attempt: bool = Field(True, validation_alias=_env("TEMPORAL_EARLY_ATTEMPT"))
    temporal_retry_initial_interval: float = Field(
        1.0, validation_alias=_env("TEMPORAL_RETRY_INITIAL_INTERVAL"), gt=0
    )
    temporal_connect_timeout: float = Field(
        3.0, validation_alias=_env("TEMPORAL_CONNECT_TIMEOUT"), gt=0
    )
    input_timeout: float = Field(86400.0, validation_alias=_env("MOLECULE_INPUT_TIMEOUT"), gt=0)
    # How long a client stream keeps trying to reach Temporal beyond the longest a
    # task may run (activity timeout x attempts) before reporting lost contact.
    lost_contact_grace: float = Field(
        60.0, validation_alias=_env("MOLECULE_LOST_CONTACT_GRACE"), ge=0
    )
    temporal_max_concurrent_activities: int = Field(
        1000, validation_alias=_env("TEMPORAL_MAX_CONCURRENT_ACTIVITIES"), ge=1
    )
    # TEMPORAL_HOST=embedded: serve the dev server's web UI on this port
    # (0: any free port); unset keeps it headless. Loopback only: it has no auth.
    temporal_ui_port: int | None = Field(
        None, validation_alias=_env("TEMPORAL_UI_PORT"), ge=0, le=65535
    )
    # A Temporal UI to link tasks to (e.g. docker compose's); wins over the embedded one.
    temporal_ui_url: str | None = Field(None, validation_alias=_env("TEMPORAL_UI_URL"))
    temporal_reconnect_max_interval: float = Field(
        30.0, validation_alias=_env("TEMPORAL_RECONNECT_MAX_INTERVAL"), gt=0
    )

    @field_validator("adapter_options", mode="before")
    @classmethod
    def _parse_options(cls, value: Any) -> Any:
        return parse_adapter_options(value)

    @field_validator("auth_token", "api_keys", "push_encryption_key", mode="before")
    @classmethod
    def _empty_token_is_unset(cls, value: Any) -> Any:
        return empty_secret_is_unset(value)

    @model_validator(mode="after")
    def _check_together(self) -> Settings:
        check_jwt(bool(self.jwt_jwks_url or self.jwt_key_file), self.jwt_issuer, self.jwt_audience)
        check_push_key(self.push_encrypt, self.push_encryption_key)
        return self

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        return log_level(value)

    @property
    def durable(self) -> bool:
        return bool(self.temporal_host)

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def resolved_grpc_url(self) -> str | None:
        """The gRPC target the card advertises (`host:port`), None when gRPC is off."""
        if self.grpc_port is None:
            return None
        if self.grpc_public_url:
            return self.grpc_public_url
        host = urlsplit(self.resolved_public_url).hostname or self.host
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.grpc_port}"

    @property
    def resolved_task_store_url(self) -> str:
        if self.task_store_url:
            return self.task_store_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tasks.db').resolve()}"

    @property
    def resolved_instance_id(self) -> str:
        # Stable across restarts of the same server, so a restarted process
        # polls the queue its in-flight activities were routed to.
        return self.instance_id or f"{socket.gethostname()}-{self.port}"

    @property
    def process_task_queue(self) -> str:
        return f"{self.temporal_task_queue}@{self.resolved_instance_id}"

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict with secrets masked (for logs and /readyz)."""
        data = self.model_dump(mode="json")
        if self.auth_token is not None:
            data["auth_token"] = "***"
        if self.api_keys is not None:
            data["api_keys"] = "***"
        if self.push_encryption_key is not None:
            data["push_encryption_key"] = "***"
        if self.task_store_url:
            data["task_store_url"] = redact_url(self.task_store_url)
        return data
