"""Safe model loading: a model file becomes a scorer only if loading it runs no code.

XGBoost models load from UBJ or JSON, linear models and the baseline from nightshift's JSON
(``train.linear_to_json``); a pickle, or anything else, is refused naming the file. The lake
(``stages.load_model``, through ``kinds.load_scorer``) and the registry
(``tracking.load_registered``) both load through here.
"""

from __future__ import annotations

import json
from typing import Any


class UnsafeModel(ValueError):
    """A model file is not in a format that loads without running code (a pickle, say)."""


def is_pickle(payload: bytes) -> bool:
    """Return whether ``payload`` starts like a pickle (protocol 2 and later)."""
    return len(payload) > 1 and payload[0] == 0x80 and 2 <= payload[1] <= 5


def json_model(payload: bytes, kind: str, origin: str) -> dict[str, Any]:
    """Return a nightshift JSON model file's content, refusing anything that is not one of
    ``kind`` (the file named as ``origin``)."""
    try:
        content = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsafeModel(f"{origin}: not a nightshift JSON model: {exc}") from None
    if not isinstance(content, dict) or content.get("kind") != kind:
        found = content.get("kind") if isinstance(content, dict) else type(content)
        raise UnsafeModel(f"{origin}: model file holds {found!r}, expected {kind!r}")
    return content
