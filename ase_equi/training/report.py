"""After training: the test report (JSON + markdown) and the plots."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .loss import UNITS, ErrorMetrics

log = logging.getLogger(__name__)


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, mode) as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _summary_line(report: dict[str, Any]) -> str:
    test = report["test"]
    parts = [
        f"{q} MAE {test[f'{q}_mae']:.3g} / RMSE {test[f'{q}_rmse']:.3g} {UNITS[q]}"
        for q in ("energy", "forces", "stress")
        if f"{q}_mae" in test
    ]
    return "; ".join(parts) or "no test frames"


def epoch_line(
    record: dict[str, float], epochs: int, seconds: float, *, best_epoch: int | None = None
) -> str:
    """The printable line of one epoch's ``record`` (``best_epoch``, 0-based: the run stopped
    early, with no better validation loss since then)."""
    line = f"epoch {int(record['epoch'])}/{epochs}  step {int(record['step'])}"
    line += f"  loss {record['train_loss']:.4g}"
    if "valid_loss" in record:
        line += f"  valid loss {record['valid_loss']:.4g}"
        for q in ("energy", "forces", "stress"):
            if f"valid_{q}_mae" in record:
                line += f"  {q[0].upper()} {record[f'valid_{q}_mae']:.3g} {UNITS[q]}"
    line += f"  lr {record['lr']:.2e}  ({seconds:.1f} s)"
    if best_epoch is not None:
        line += f"  early stop: no better valid loss since epoch {best_epoch + 1}"
    return line


def model_card(
    *,
    name: str,
    level_of_theory: str,
    data_description: str,
    source: str,
    sizes: dict[str, int],
    test_metrics: dict[str, float],
    training: dict[str, Any],
) -> dict[str, Any]:
    """The card of a freshly trained model: data, level of theory, measured test errors."""
    training_data = {"description": data_description, **sizes}
    source = Path(source).name if source else ""  # the file's name: no path of this machine
    if source:
        training_data["source"] = source
    return {
        "name": name,
        "description": data_description or f"trained on {source or 'given frames'}",
        "level_of_theory": level_of_theory or "not stated",
        "training_data": training_data,
        "test_errors": {k: round(v, 4) for k, v in test_metrics.items()},
        "test_error_units": UNITS,
        "training": training,
    }


def test_report(
    split: dict[str, list[int]],
    test_metrics: dict[str, float],
    *,
    epochs: int,
    steps: int,
    best_epoch: int,
    stopped_early: bool,
) -> tuple[dict[str, int], dict[str, Any]]:
    """``(sizes, report)`` of a finished run: the split sizes, and the report that
    :func:`write_test_report` writes (``best_epoch`` is 0-based here, 1-based in the report)."""
    sizes = {f"n_{k}": len(split[k]) for k in ("train", "valid", "test")}
    sizes["n_isolated_atoms"] = len(split["isolated"])
    report = {
        **sizes,
        "test": test_metrics,
        "units": UNITS,
        "epochs": epochs,
        "steps": steps,
        "best_epoch": best_epoch + 1,
        "stopped_early": stopped_early,
    }
    return sizes, report


def write_test_report(out: Path, report: dict[str, Any]) -> None:
    """``test_report.json`` and ``test_report.md`` in ``out``."""
    _atomic_write(out / "test_report.json", lambda fh: fh.write(json.dumps(report, indent=2)), "w")
    lines = [
        "# Test report",
        "",
        f"Frames: {report['n_train']} train, {report['n_valid']} valid, {report['n_test']} test "
        f"({report['n_isolated_atoms']} isolated atoms used for E0 only). "
        f"Epochs {report['epochs']}, steps {report['steps']}, best epoch {report['best_epoch']}.",
        "",
        "| quantity | MAE | RMSE | unit | components |",
        "|---|---|---|---|---|",
    ]
    for q in ("energy", "forces", "stress"):
        if f"{q}_mae" in report["test"]:
            t = report["test"]
            lines.append(
                f"| {q} | {t[f'{q}_mae']:.4g} | {t[f'{q}_rmse']:.4g} | {UNITS[q]} | "
                f"{t[f'{q}_count']} |"
            )
    if not report["test"]:
        lines.append("| (no test frames) | | | | |")
    _atomic_write(out / "test_report.md", lambda fh: fh.write("\n".join(lines) + "\n"), "w")


def write_plots(out: Path, metrics: ErrorMetrics, history: list[dict[str, float]]) -> list[Path]:
    """``parity.png`` (test split) and ``learning_curves.png``; skipped without matplotlib."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend state
    except ImportError:
        log.warning("matplotlib is not installed (pip install 'ase-equi[train]'): no plots")
        return []
    written = []
    labels = {
        "energy": "energy (eV/atom)",
        "forces": "force components (eV/Å)",
        "stress": "stress components (eV/Å³)",
    }
    shown = [q for q in labels if metrics.parity(q)[0].numel()]
    if shown:
        fig = Figure(figsize=(4 * len(shown), 4), layout="constrained")
        for ax, q in zip(fig.subplots(1, len(shown), squeeze=False)[0], shown, strict=True):
            ref, pred = (x.numpy() for x in metrics.parity(q))
            lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
            ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
            ax.scatter(ref, pred, s=6)
            ax.set_xlabel(f"reference {labels[q]}")
            ax.set_ylabel(f"predicted {labels[q]}")
        fig.savefig(out / "parity.png", dpi=120)
        written.append(out / "parity.png")
    if history:
        fig = Figure(figsize=(9, 4), layout="constrained")
        ax_loss, ax_err = fig.subplots(1, 2)
        epochs = [h["epoch"] for h in history]
        for key in ("train_loss", "valid_loss"):
            if all(key in h for h in history):
                ax_loss.plot(epochs, [h[key] for h in history], label=key.replace("_", " "))
        ax_loss.set_yscale("log")
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("loss")
        ax_loss.legend()
        for q in ("energy", "forces", "stress"):
            if all(f"valid_{q}_mae" in h for h in history):
                ax_err.plot(
                    epochs,
                    [h[f"valid_{q}_mae"] for h in history],
                    label=f"valid {q} MAE ({UNITS[q]})",
                )
        ax_err.set_xlabel("epoch")
        ax_err.set_yscale("log")
        if ax_err.lines:
            ax_err.legend()
        fig.savefig(out / "learning_curves.png", dpi=120)
        written.append(out / "learning_curves.png")
    return written
