"""The README's example script runs and shows live progress on stderr for MD and relaxation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_langevin_example_prints_progress_for_md_and_relaxation():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "langevin_md.py"),
            "--steps",
            "2",
            "--relax-steps",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    progress = done.stderr.replace("\r", "\n").splitlines()
    assert any(line.startswith("MD step     2/2") for line in progress)
    for label in ("metals", "EMT"):  # one live line per FIRE step (steps 0..3)
        steps = [line for line in progress if line.startswith(f"relax ({label}) step")]
        assert len(steps) == 4 and "fmax = " in steps[-1] and "a = " in steps[-1]
    assert "NOT converged" in done.stdout and "cell relaxation of Cu: a = " in done.stdout


def _commands(text: str) -> list[str]:
    """Shell commands of a script or a one-line ``a && b`` block, in order."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "set ", "cd ")):
            out += [part.strip() for part in line.split("&&")]
    return out


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Test (one command)", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    ci = (ROOT / ".ci" / "run").read_text()
    # CI runs the README's install and test commands, in order, plus the checks that are not
    # tests (lint, format, types, the wheel install); nothing else.
    checks = {
        "ruff check .",
        "ruff format --check .",
        "mypy",
        "if [ -f .ci/wheel_check ]; then bash .ci/wheel_check; fi",
    }
    assert [c for c in _commands(ci) if c not in checks] == _commands(block)
    assert checks <= set(_commands(ci))
