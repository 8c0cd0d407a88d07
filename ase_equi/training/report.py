"""After training: the result, the test report (JSON + markdown), the card and the plots."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ase.data import chemical_symbols

from ..model.config import ModelConfig
from ..model.mace import MaceModel
from .checkpoint_file import atomic_write
from .loss import UNITS, ErrorMetrics

log = logging.getLogger(__name__)


@dataclass(repr=False)
class TrainResult:
    """What :func:`train` produced. ``model`` holds the final (best-valid EMA) weights;
    ``model_path`` and ``test_metrics`` (meV units, see ``training.loss.UNITS``) are set on
    rank 0 only."""

    model: MaceModel
    config: ModelConfig
    output_dir: Path
    model_path: Path | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_step: int | None = None
    stopped_early: bool = False
    resumed_from: Path | None = None
    reference_energies: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        """One line: elements, weights, epochs, test errors, file (not the whole module)."""
        return f"TrainResult({describe(self.model, self.history, self.test_metrics)}, " + (
            f"model_path='{self.model_path}')" if self.model_path else "model_path=None)"
        )


def describe(model: MaceModel, history: list[dict[str, float]], test: dict[str, float]) -> str:
    """``model`` in a few words: elements, weights, epochs of ``history``, test MAE of
    ``test`` (meV units, keys as :meth:`ErrorMetrics.summary` writes them)."""
    n = sum(p.numel() for p in model.parameters())
    text = f"{'-'.join(chemical_symbols[z] for z in model.config.elements)} model, {n:,} weights"
    text += f", {int(history[-1]['epoch']) if history else 0} epochs"
    errors = [
        f"{q[0].upper()} MAE {test[f'{q}_mae']:.3g} {UNITS[q]}"
        for q in ("energy", "forces")
        if f"{q}_mae" in test
    ]
    return text + (f", test {', '.join(errors)}" if errors else "")


def summary_line(report: dict[str, Any]) -> str:
    """The test errors of ``report`` (see :func:`test_report`) on one line.

    >>> summary_line({"test": {"energy_mae": 1.234, "energy_rmse": 2.0}})
    'energy MAE 1.23 / RMSE 2 meV/atom'
    """
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
    report: dict[str, Any],
    settings: dict[str, Any],
    reference_energies: dict[str, str],
) -> dict[str, Any]:
    """The card of a freshly trained model: data, level of theory, measured test errors.

    ``report`` is :func:`test_report`'s (split sizes, test errors, epochs, steps, best epoch),
    ``settings`` the ``TrainConfig`` as a dict, ``reference_energies`` how each E0 was set.
    """
    sizes = {k: report[k] for k in ("n_train", "n_valid", "n_test", "n_isolated_atoms")}
    training_data = {"description": data_description, **sizes}
    source = Path(source).name if source else ""  # the file's name: no path of this machine
    if source:
        training_data["source"] = source
    return {
        "name": name,
        "description": data_description or f"trained on {source or 'given frames'}",
        "level_of_theory": level_of_theory or "not stated",
        "training_data": training_data,
        "test_errors": {k: round(v, 4) for k, v in report["test"].items()},
        "test_error_units": UNITS,
        "training": {
            **{k: report[k] for k in ("epochs", "steps", "best_epoch")},
            "settings": settings,
            "reference_energies": reference_energies,
        },
    }


def test_report(
    split: dict[str, list[int]],
    test_metrics: dict[str, float],
    *,
    epochs: int,
    steps: int,
    best_epoch: int,
    stopped_early: bool,
) -> dict[str, Any]:
    """The report of a finished run that :func:`write_test_report` writes: split sizes, test
    errors (meV units), epochs, steps (``best_epoch`` is 0-based here, 1-based in the report).
    """
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
    return report


def write_test_report(out: Path, report: dict[str, Any]) -> None:
    """``test_report.json`` and ``test_report.md`` in ``out``."""
    atomic_write(out / "test_report.json", lambda fh: fh.write(json.dumps(report, indent=2)), "w")
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
    atomic_write(out / "test_report.md", lambda fh: fh.write("\n".join(lines) + "\n"), "w")


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
