"""Run hostile-input cases in a child process with an address-space limit and a timeout.

A regression (a reader that inflates a zip bomb, recurses without end, or segfaults) then fails
its test instead of taking the machine down. Each case is a Python expression evaluated in the
child after ``setup`` ran; the child prints one JSON line per case as soon as it finishes:
error class name, its base-class names, message, seconds, and the child's peak RSS so far.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

_CHILD = """
import json, resource, sys, time
limit = {limit}
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
{setup}
for name, expression in {cases!r}:
    start = time.perf_counter()
    try:
        eval(expression)
        record = {{"error": None, "message": ""}}
    except BaseException as error:  # report everything, MemoryError included
        record = {{
            "error": type(error).__name__,
            "bases": [c.__name__ for c in type(error).__mro__],
            "message": str(error)[:2000],
        }}
    record["name"] = name
    record["seconds"] = time.perf_counter() - start
    record["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(record), flush=True)
"""


def run_bounded(
    cases: dict[str, str], *, setup: str = "", limit_gib: float = 3.0, timeout: float = 120.0
) -> dict[str, dict]:
    """Evaluate each ``{name: expression}`` in one child under ``RLIMIT_AS = limit_gib``.

    Returns ``{name: record}``; a case the child never reported (crash, timeout) gets a
    record with ``error`` = ``"child died"`` and the child's return code and stderr tail.
    """
    code = _CHILD.format(
        limit=int(limit_gib * 2**30), setup=textwrap.dedent(setup), cases=list(cases.items())
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env
        )
        stdout, why = done.stdout, f"rc={done.returncode}: {done.stderr[-2000:]}"
    except subprocess.TimeoutExpired as expired:
        stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else ""
        why = f"timed out after {timeout} s"
    records = {}
    for line in (stdout or "").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            records[record["name"]] = record
    for name in cases:
        records.setdefault(name, {"error": "child died", "bases": [], "message": why})
    return records
