"""Layout of the upper stages (data/, training/, cli/, evaluate.py) and of the examples.

The rules (issue 13): argparse lives in ``cli/`` only and nothing imports ``cli``; a module
does not import another module's ``_private`` names; no module exceeds 400 lines; examples use
the public API; old module paths keep working, with a DeprecationWarning; there is one
``evaluate``.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ase_equi"
UPPER = [
    *sorted((PACKAGE / "data").glob("*.py")),
    *sorted((PACKAGE / "training").glob("*.py")),
    *sorted((PACKAGE / "cli").glob("*.py")),
    PACKAGE / "evaluate.py",
]


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, names, level)`` of every import statement in ``path`` (``names`` empty for
    ``import x``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            found.append((node.module or "", [a.name for a in node.names], node.level))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], 0) for a in node.names]
    return found


def test_the_upper_stages_exist():
    # guards the lists below against a rename that would make the other tests vacuous
    names = {p.relative_to(PACKAGE).as_posix() for p in UPPER}
    assert {"data/frames.py", "training/trainer.py", "cli/__init__.py", "evaluate.py"} <= names


def test_argparse_only_in_cli_and_nothing_imports_cli():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for module, names, level in _imports(path):
            if not rel.startswith("cli/"):
                assert module != "argparse", f"{rel} imports argparse (CLI code belongs in cli/)"
                cli = (level == 0 and module.startswith("ase_equi.cli")) or (
                    level > 0 and (module == "cli" or module.startswith("cli.") or "cli" in names)
                )
                assert not cli, f"{rel} imports the command line"


def test_no_private_names_imported_across_modules():
    for path in UPPER:
        for module, names, level in _imports(path):
            if level == 0 and not module.startswith("ase_equi"):
                continue  # third-party aliases (none today) are not our private names
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            rel = path.relative_to(PACKAGE)
            assert not private, f"{rel} imports {private} from {'.' * level}{module}"


def test_no_module_over_400_lines():
    for path in UPPER:
        lines = len(path.read_text().splitlines())
        assert lines <= 400, f"{path.relative_to(PACKAGE)} has {lines} lines"


def test_examples_use_the_public_api():
    public = set(importlib.import_module("ase_equi").__all__)
    # the one gap, reported: the exact frame split a training run made is not public
    allowed = {"ase_equi.data": {"read_frames", "split_frames"}}
    examples = sorted((ROOT / "examples").glob("*.py"))
    assert examples
    for path in examples:
        for module, names, _ in _imports(path):
            if not module.startswith("ase_equi"):
                continue
            if module == "ase_equi":
                assert set(names) <= public, f"{path.name}: {sorted(set(names) - public)}"
            else:
                extra = set(names) - allowed.get(module, set())
                assert not extra, f"{path.name} imports {sorted(extra) or module} from {module}"


def test_one_evaluate():
    import ase_equi
    import ase_equi.training.finetune as finetune_module
    from ase_equi.evaluate import evaluate

    assert ase_equi.evaluate is evaluate
    assert not hasattr(finetune_module, "evaluate")


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ("ase_equi.data_file", "ase_equi.data.extxyz", "read_structures"),
        ("ase_equi.batch", "ase_equi.data.batch", "make_batch"),
        ("ase_equi.statistics", "ase_equi.data.statistics", "reference_energy_fit"),
        ("ase_equi.training.commands", "ase_equi.cli.training", "register"),
    ],
)
def test_old_module_paths_warn_and_give_the_same_objects(old, new, name):
    sys.modules.pop(old, None)  # the warning comes at the first import
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        moved = importlib.import_module(old)
    assert getattr(moved, name) is getattr(importlib.import_module(new), name)


def test_data_package_keeps_the_names_of_the_old_data_module():
    import ase_equi.data as data

    for name in ("DataKeys", "Frame", "load_frames", "read_frames", "split_frames"):
        assert callable(getattr(data, name)), name


def test_command_line_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-W", "always::DeprecationWarning", "-m", "ase_equi.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "moved to" not in done.stderr  # the CLI itself uses no old module path
    for command in ("train", "finetune", "eval", "info", "zoo", "import-mace", "upgrade"):
        assert command in done.stdout, command


IMPORT_ALL = """
import warnings

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import ase_equi.data, ase_equi.training.finetune, ase_equi.training.trainer
    import ase_equi.cli.models, ase_equi.cli.training, ase_equi.evaluate
print([str(w.message) for w in caught if "moved to" in str(w.message)])
"""


def test_these_stages_import_no_old_module_path():
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
