"""Merges a validation script's figures into $ENVBUILD_RESULT, the file `envbuild test`
reads after a `run` phase: {"smoke": {...}, "rally": {...}, "when": "before"|"after"}.
Both scripts may run in one phase, so each adds its own key and keeps the other's."""

import json
import os


def merge(result, key, value, when):
    """Adds `key: value` and `when` to the JSON object in `result` (a no-op if empty)."""
    if not result:
        return
    doc = {}
    if os.path.exists(result):
        try:
            doc = json.load(open(result))
        except ValueError:
            pass
    doc[key] = value
    doc["when"] = when
    os.makedirs(os.path.dirname(result) or ".", exist_ok=True)
    with open(result, "w") as f:
        json.dump(doc, f)
