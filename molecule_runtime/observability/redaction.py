"""Log records never carry webhook URLs, notification tokens or credentials.

A webhook URL's path and query are often a secret themselves (chat-app hooks),
and push configs carry tokens. The runtime's own lines name only task and
config ids; these filters cover what others log:

* `RedactWebhookSecrets`: the a2a-sdk's DEBUG line with the whole request body
  (a push config is part of it). The value of a secret field (`url`, `token`,
  `credentials`, `authentication`, a push config) in dict, list and protobuf
  arguments is replaced whatever its type: a client may send a list or an
  object where a string belongs, and it is as secret.
* `ClientErrorRecords`: the SDK logs a request it cannot parse or validate
  with the parser's exception, whose text quotes the input (pydantic's
  `input_value=…`, protobuf's "Failed to parse <value> field"), at ERROR with
  a traceback. A client's mistake is not the server's error, and its values
  may be secrets: such a record keeps its message and the exception's type,
  at WARNING, without the exception's text; the `Data=…` the SDK appends to
  its "Request error" lines (the same parser text) is left out too. Its
  "Validation failure" line (the client asked for something this agent does
  not offer) is a WARNING too.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from google.protobuf.json_format import MessageToDict, ParseError
from google.protobuf.message import Message
from pydantic import ValidationError

# Compared without case and underscores: `taskPushNotificationConfig` and
# `task_push_notification_config` are one field.
SECRET_FIELDS = frozenset(
    {
        "url",
        "token",
        "credentials",
        "authentication",
        "pushnotificationconfig",
        "taskpushnotificationconfig",
    }
)
MASK = "***"
_MAX_DEPTH = 32
# Exceptions of parsing or validating a client's request.
CLIENT_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    ParseError,
    ValidationError,
    json.JSONDecodeError,
    UnicodeDecodeError,
)
# The SDK's "Request error" lines end with this argument (the error's data).
_DATA_PREFIX = ", Data="


def is_secret_field(name: object) -> bool:
    return isinstance(name, str) and name.replace("_", "").lower() in SECRET_FIELDS


def redact(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        return MASK
    if isinstance(value, dict):
        return {
            key: MASK if is_secret_field(key) else redact(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(item, depth + 1) for item in value)
    if isinstance(value, Message):
        text = str(value)
        if any(f"{field}" in text.replace("_", "").lower() for field in SECRET_FIELDS):
            return redact(MessageToDict(value), depth + 1)
    return value


class RedactWebhookSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict):
            record.args = redact(record.args)
        elif record.args:
            record.args = tuple(redact(arg) for arg in record.args)
        return True


class ClientErrorRecords(logging.Filter):
    """The a2a-sdk's records of requests it could not parse: no input values, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("a2a."):
            return True
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, CLIENT_INPUT_ERRORS):
            message = record.getMessage()
            record.msg = f"{message} ({type(error).__name__}; the request's values are not logged)"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        elif isinstance(record.args, tuple) and record.args:
            last = record.args[-1]
            if isinstance(last, str) and last.startswith(_DATA_PREFIX):
                record.args = (*record.args[:-1], "")
        if record.msg == "Validation failure: %s" and record.levelno > logging.WARNING:
            # The SDK's check that the agent supports what the client asked
            # for (an extended card, push notifications): the client's mistake.
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        if record.msg == "Parse error: %s" and record.args:
            # REST: the protobuf parser's message, which quotes the input.
            record.args = ("the request's values are not logged",)
        return True
