"""A JSON file of reference-calculator results (GFN1-xTB, PBE), so that a card rerun for a new
model does not recompute them.

An entry is keyed by a text that says everything its value depends on (the quantity, the
structure recipe, the settings, the reference code and version); a change to any of them is a
new key, never a stale value. The file is rewritten whole after every new entry (a temporary
name, then a rename), so a killed run keeps every finished entry.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "cache.json"
>>> calls = []
>>> cache = ReferenceCache(path)
>>> cache.get("eos Si", lambda: calls.append(1) or {"a0": 5.62})
{'a0': 5.62}
>>> ReferenceCache(path).get("eos Si", lambda: calls.append(1) or {"a0": 0.0})
{'a0': 5.62}
>>> len(calls)
1
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ReferenceCache:
    """Reference results kept in ``path`` (JSON: key → value), computed once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, Any] = {}
        if self.path.exists():
            self.entries = json.loads(self.path.read_text())
            if not isinstance(self.entries, dict):
                raise ValueError(f"{self.path}: a reference cache is a JSON object, not this")

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        """The cached value of ``key``, or ``compute()`` stored under it (JSON-clean values)."""
        if key not in self.entries:
            value = compute()
            self.entries[key] = json.loads(json.dumps(value))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, self.path)
        return self.entries[key]
