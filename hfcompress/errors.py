"""The one exception type hfcompress raises for bad input, and the checks every config class shares.

``HfCompressError`` subclasses ``ValueError`` so callers that already catch ``ValueError`` keep working.
Messages are one line and say what was given and what is allowed; recipes print them without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class HfCompressError(ValueError):
    """Bad input or an unusable artifact: the message says what was wrong and what is allowed."""


def check_choice(name: str, value, allowed: Iterable) -> None:
    """Raise ``<name> must be one of a, b, c, got 'x'`` unless ``value`` is in ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise HfCompressError(f"{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")
