"""A2A 0.3 parts whose content cannot be converted are the client's mistake.

The a2a-sdk converts a 0.3 message's parts to 1.0 protobuf parts after its
pydantic models accepted them (`a2a.compat.v0_3.conversions.to_core_part`):
a file part whose `bytes` are not base64, or data the protobuf parser cannot
hold, raises there, and the 0.3 adapter answers any such exception as an
internal error (-32603) with an ERROR traceback. Found by the fuzzing
(tests/test_fuzz_bindings.py). `install()` wraps the converter, which the
module calls by its global name, so that these answer -32602 (invalid params).
tests/test_fuzz_bindings.py pins the seam.
"""

from __future__ import annotations

import binascii
import functools
from collections.abc import Callable
from typing import Any

from a2a.compat.v0_3 import conversions
from a2a.utils.errors import InvalidParamsError
from google.protobuf.json_format import ParseError

_MARK = "_molecule_client_errors"


def _client_errors(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(convert)
    def to_core_part(part: Any) -> Any:
        try:
            return convert(part)
        except (binascii.Error, ParseError, ValueError, TypeError) as exc:
            # The message says which kind of content, never the content.
            raise InvalidParamsError(
                message=f"a message part cannot be converted ({type(exc).__name__}): "
                "file bytes must be base64, data a JSON object"
            ) from None

    setattr(to_core_part, _MARK, True)
    return to_core_part


def install() -> None:
    """Idempotent: wraps the SDK's 0.3 part converter once per process."""
    if not getattr(conversions.to_core_part, _MARK, False):
        conversions.to_core_part = _client_errors(conversions.to_core_part)
