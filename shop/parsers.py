"""The API's JSON parser: DRF's, plus the limits that keep hostile JSON a 400 instead of a crash.

Python's json module parses nesting until the interpreter's recursion limit and then raises RecursionError,
which DRF does not catch (a 500 with a long traceback, even on the unauthenticated login); anything nested
deeper than any request of this API needs is refused as malformed. JSON's `\\ud800` escapes decode to lone
surrogates, which are not characters: they cannot be encoded as UTF-8 (the idempotency fingerprint, PostgreSQL)
and are refused as a validation error naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser

# The deepest request body of the API is 3 levels (an order's lines); this leaves room and stays far from
# the recursion limit, whatever the stack depth of the code that later walks the data.
MAX_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


class ShopJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels") from None
        check_json(data)
        return data


def check_json(data: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH (ParseError) and lone surrogates in keys or strings (ValidationError)."""
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise ValidationError({_printable(path) or "body": [
                    "Contains a lone UTF-16 surrogate (a \\ud800-\\udfff escape), which is not a character."]})
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            child = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _SURROGATE.search(key):
                raise ValidationError({_printable(child): ["A key contains a lone UTF-16 surrogate."]})
            stack.append((item, child, depth + 1))


def _printable(path: str) -> str:
    # The path goes back to the client in JSON: its surrogates are spelled out, never sent as they are.
    return path.encode("utf-8", "backslashreplace").decode("utf-8")
