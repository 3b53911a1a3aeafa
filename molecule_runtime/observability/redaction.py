"""Log records never carry webhook URLs, notification tokens or credentials.

A webhook URL's path and query are often a secret themselves (chat-app hooks),
and push configs carry tokens. The runtime's own lines name only task and
config ids; this filter covers what others log, e.g. the a2a-sdk's DEBUG line
with the whole JSON-RPC request body (a push config is part of it). Values of
the fields `url`, `token` and `credentials` in dict, list and protobuf
arguments are replaced before the line is formatted.
"""

from __future__ import annotations

import logging
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

SECRET_FIELDS = frozenset({"url", "token", "credentials"})
MASK = "***"
_MAX_DEPTH = 32


def redact(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        return MASK
    if isinstance(value, dict):
        return {
            key: MASK if key in SECRET_FIELDS and isinstance(item, str) else redact(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(item, depth + 1) for item in value)
    if isinstance(value, Message):
        text = str(value)
        if any(f"{field}:" in text for field in SECRET_FIELDS):
            return redact(MessageToDict(value), depth + 1)
    return value


class RedactWebhookSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict):
            record.args = redact(record.args)
        elif record.args:
            record.args = tuple(redact(arg) for arg in record.args)
        return True
