"""Keep what a long training chain needs to resume in git, and bring it back in a new session.

    python scripts/keep_runs.py save runs/silicon-xtb-c64 runs/silicon-xtb-c64-stage2 ...
    git add runs-kept && git commit -m "..."
    python scripts/keep_runs.py restore          # in a new checkout: runs-kept/X → runs/X

``runs/`` is not committed (``.gitignore``) and does not outlive a session's machine; a chain
of training stages (``scripts/zoo/train_zoo.py``, ``train_strain_pairs.py``) takes longer than
one session. ``save`` copies, per run folder, what the next command needs:

- a finished run (its model file ``NAME.json`` with ``NAME.safetensors`` is there): the model,
  ``split.json`` and the reports (``test_report.md``, ``*.json`` written by the run);
- an unfinished run: ``split.json`` and the newest checkpoint (``checkpoints/last.pt``, the
  optimiser and EMA state included), from which the same command resumes;
- either way, the small files of its ``card/`` folder (``make_card.py --out``: ``checks.json``,
  ``targets.md``; ``md_stability.py``'s resumable ``md-T.json`` and ``md-stability.json``).

The frames a recipe filters (``training-frames.xyz``) are not kept: the scripts write them
again, the same on every run. ``restore`` copies ``runs-kept/*`` into ``runs/`` without
overwriting a newer file there.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEPT = ROOT / "runs-kept"
RUNS = ROOT / "runs"
SMALL = 2_000_000  # bytes: reports and headers are kept whole, data files are not


def finished_model(folder: Path) -> Path | None:
    """The run's model header (a ``.json`` with a ``.safetensors`` beside it), or None."""
    for header in sorted(folder.glob("*.json")):
        if header.with_suffix(".safetensors").exists():
            return header
    return None


def files_to_keep(folder: Path) -> list[Path]:
    """What of the run folder ``folder`` the next command needs (see the module docstring)."""
    keep = [folder / "split.json"]
    model = finished_model(folder)
    if model is not None:
        keep += [model, model.with_suffix(".safetensors"), model.with_suffix(".md")]
        keep += [p for p in folder.glob("*.md") if p.stat().st_size < SMALL]
        keep += [p for p in folder.glob("*.json") if p.stat().st_size < SMALL]
    else:
        keep.append(folder / "checkpoints" / "last.pt")
    card = folder / "card"
    keep += [p for p in card.rglob("*") if p.is_file() and p.stat().st_size < SMALL]
    return sorted({p for p in keep if p.exists()})


def save(folders: list[Path]) -> None:
    for folder in folders:
        folder = folder.resolve()
        if not folder.is_dir():
            raise SystemExit(f"no run folder {folder}")
        target = KEPT / folder.relative_to(RUNS.resolve())
        if target.exists():
            shutil.rmtree(target)  # a finished run drops its checkpoint
        for path in files_to_keep(folder):
            destination = target / path.relative_to(folder)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
            print(f"kept {destination.relative_to(ROOT)} ({path.stat().st_size} bytes)")


def restore() -> None:
    for path in sorted(p for p in KEPT.rglob("*") if p.is_file()):
        destination = RUNS / path.relative_to(KEPT)
        if destination.exists() and destination.stat().st_mtime >= path.stat().st_mtime:
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
        print(f"restored {destination.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    kept = sub.add_parser("save", help="copy run folders' resumable state into runs-kept/")
    kept.add_argument("folders", nargs="+", type=Path)
    sub.add_parser("restore", help="copy runs-kept/ back into runs/")
    args = parser.parse_args()
    if args.command == "save":
        save(args.folders)
    else:
        restore()


if __name__ == "__main__":
    main()
