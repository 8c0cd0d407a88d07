"""Fine-tuning's before/after report: errors of parent and fine-tuned model, as a table and a
plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.frames import Frame, read_frames
from ..model.mace import MaceModel
from .checkpoint_file import atomic_write
from .config import TrainConfig
from .evaluation import LabelledSet
from .loss import UNITS
from .report import TrainResult


def measure_errors(
    model: MaceModel, frames: Sequence[Frame], batch_size: int = 8
) -> dict[str, float]:
    """MAE/RMSE of ``model`` against the labels of ``frames``: ``{"energy_mae": meV/atom,
    "forces_rmse": meV/Å, ...}`` (units in ``training.loss.UNITS``); stress where every cell
    allows it. For predictions on ``Atoms`` see :func:`ase_equi.evaluate` and
    :func:`ase_equi.label_errors`."""
    return LabelledSet.for_model(frames, model).evaluate(model, batch_size=batch_size).summary()


def before_after(
    adapted: MaceModel,
    result: TrainResult,
    frames: Sequence[Frame],
    parent_test_data: str | None,
    cfg: TrainConfig,
    *,
    parent: MaceModel | None = None,
    parent_head: int | None = None,
) -> dict[str, Any]:
    """Errors (meV units) on the new data's test split of ``adapted`` (the parent after the E0
    refit, before any training: "before") and of the fine-tuned model ("after"), plus the
    unadapted ``parent``'s, when given ("parent_as_is": what the E0 refit alone changed);
    and, with ``parent_test_data``, of ``parent`` and the fine-tuned model on that set.

    "before" uses the frames whose elements the parent knew (a new element's weights are
    untrained). ``parent_head``: the fine-tuned model's head of the parent's level of theory
    (a two-head model; None: its only head) for the parent's test set. ``eos``: see
    :func:`~ase_equi.training.finetune_eos.eos_report`, where the new data hold a volume scan.
    """
    import dataclasses
    import json

    from .finetune_eos import eos_report

    parent = adapted if parent is None else parent
    split = json.loads((Path(cfg.output_dir) / "split.json").read_text())
    test = [frames[k] for k in split["test"]]
    report: dict[str, Any] = {"units": UNITS}
    known = set(parent.config.elements)
    if test:
        old = [f for f in test if set(f.atoms.numbers.tolist()) <= known]
        report["new_test"] = {
            "n_frames": len(test),
            "n_frames_parent_can_evaluate": len(old),
            "before": measure_errors(adapted, old) if old else {},
            "after": measure_errors(result.model, test),
            "parent_as_is": measure_errors(parent, old) if old and parent is not adapted else {},
        }
    if parent_test_data:
        own = read_frames(parent_test_data, elements=parent.config.elements)
        on_head = [dataclasses.replace(f, head=parent_head) for f in own]
        report["parent_test"] = {
            "n_frames": len(own),
            "head": "parent's" if parent_head is not None else "the only one",
            "before": measure_errors(parent, own),
            "after": measure_errors(result.model, on_head),
            "after_per_element": _per_element(result.model, on_head),
            "before_per_element": _per_element(parent, own),
        }
    eos = eos_report(frames, adapted, result.model)
    if eos is not None:
        report["eos"] = eos
    return report


def _per_element(model: MaceModel, frames: Sequence[Frame]) -> dict[str, float]:
    """Force MAE (meV/Å) per element of the frames' atoms (the forgetting, element by element)."""
    from ase.data import chemical_symbols

    data = LabelledSet.for_model(frames, model)
    errors: dict[int, list[float]] = {}
    for batch, pred in data.predictions(model, range(len(frames)), weight=0.0):
        err = (pred["forces"].detach() - batch.forces).abs().double().numpy()
        numbers = np.concatenate([frames[i].atoms.numbers for i in _ids(batch, frames)])
        for z in np.unique(numbers):
            errors.setdefault(int(z), []).extend(err[numbers == z].ravel().tolist())
    return {chemical_symbols[z]: 1000.0 * float(np.mean(v)) for z, v in sorted(errors.items())}


def _ids(batch: Any, frames: Sequence[Frame]) -> list[int]:
    position = {f.index: k for k, f in enumerate(frames)}
    return [position[i] for i in batch.indices]


def write_report(out: Path, report: dict[str, Any]) -> None:
    """``finetune_report.md``/``.json`` and, with matplotlib, ``finetune_report.png``."""
    import json

    atomic_write(
        out / "finetune_report.json", lambda fh: fh.write(json.dumps(report, indent=2)), "w"
    )
    atomic_write(out / "finetune_report.md", lambda fh: fh.write(report_markdown(report)), "w")
    _plot(out / "finetune_report.png", report)


def report_markdown(report: dict[str, Any]) -> str:
    """The markdown of :func:`write_report`: errors before/after per test set, E0 per element,
    replay and time."""
    lines = [
        f"# Fine-tuning report: {report['parent']} → new data",
        "",
        "| test set | quantity | MAE before | MAE after | RMSE before | RMSE after | unit |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, key in (("new data (test split)", "new_test"), ("parent's test set", "parent_test")):
        if key not in report:
            continue
        b, a = report[key]["before"], report[key]["after"]

        def cell(d: dict, k: str) -> str:
            return f"{d[k]:.4g}" if k in d else "–"

        for q in ("energy", "forces", "stress"):
            if f"{q}_mae" in a:
                lines.append(
                    f"| {label} | {q} | {cell(b, f'{q}_mae')} | {cell(a, f'{q}_mae')} | "
                    f"{cell(b, f'{q}_rmse')} | {cell(a, f'{q}_rmse')} | {UNITS[q]} |"
                )
    lines += ["", '"before": the parent after the E0 refit, before training.']
    as_is = report.get("new_test", {}).get("parent_as_is", {})
    if "energy_mae" in as_is:
        lines += [
            f"The parent as it was (before the E0 refit): energy MAE "
            f"{as_is['energy_mae']:.4g} {UNITS['energy']}."
        ]
    e0 = report.get("reference_energies", {})
    if e0:
        lines += ["", "| element | E0 parent (eV) | E0 now (eV) | |", "|---|---|---|---|"]
        for sym, v in e0.items():
            was = "new" if v["parent"] is None else f"{v['parent']:.6f}"
            lines.append(f"| {sym} | {was} | {v['now']:.6f} | {v['status']} |")
    lines += _extra_lines(report)
    lines += [
        "",
        f"Replayed frames: {report['n_replay']}; new elements: "
        f"{', '.join(report['new_elements']) or 'none'}; time {report['seconds']} s.",
    ]
    return "\n".join(lines) + "\n"


def _extra_lines(report: dict[str, Any]) -> list[str]:
    """Forgetting per element, the equation of state, the defaults and the replay."""
    lines = []
    own = report.get("parent_test", {})
    if own.get("after_per_element"):
        b, a = own["before_per_element"], own["after_per_element"]
        lines += ["", "Force MAE per element on the parent's test set (meV/Å), before → after:"]
        lines += [", ".join(f"{z} {b.get(z, float('nan')):.3g} → {a[z]:.3g}" for z in a)]
    eos = report.get("eos")
    if eos:
        lines += ["", f"Equation of state of {eos['formula']} ({eos['n_frames']} volumes):", ""]
        lines += ["| | a0 (Å) | B (GPa) | a0 error | B error |", "|---|---|---|---|---|"]
        for name in ("labels", "before", "after"):
            v = eos[name]
            if "a0" not in v:
                lines.append(f"| {name} | {v.get('error', '–')} | | | |")
                continue
            da = f"{v['a0_error_percent']:+.2f} %" if "a0_error_percent" in v else ""
            db = f"{v['B_error_percent']:+.1f} %" if "B_error_percent" in v else ""
            lines.append(f"| {name} | {v['a0']:.4f} | {v['B']:.1f} | {da} | {db} |")
    if report.get("defaults"):
        lines += ["", "Settings and where they came from:"]
        lines += [f"- {k} = {v['value']} ({v['from']})" for k, v in report["defaults"].items()]
    if report.get("replay"):
        lines += ["", f"Replay: {report['replay']}"]
    if report.get("parent_pull"):
        lines += ["", f"Pull towards the parent's weights (L2-SP): {report['parent_pull']}"]
    if report.get("heads"):
        lines += ["", f"Heads: {report['heads']} (default: {report['heads'][-1]})."]
    return lines


def _plot(path: Path, report: dict[str, Any]) -> None:
    """MAE before/after as bars per test set (skipped without matplotlib)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return
    sets = [k for k in ("new_test", "parent_test") if k in report]
    qs = [q for q in ("energy", "forces") if all(f"{q}_mae" in report[k]["before"] for k in sets)]
    # (a new element leaves the parent without "before" numbers: no bars then)
    eos = report.get("eos")
    if not (sets and qs) and not eos:
        return
    qs = qs if sets else []
    n = len(qs) + bool(eos)
    fig = Figure(figsize=(4.5 * n, 3.5), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    if eos:
        ax = axes[-1]
        for name, style in (("labels", "ko"), ("before", "C0--"), ("after", "C1-")):
            ax.plot(eos["volumes"], eos["energies"][name], style, label=name)
        ax.set_xlabel("volume (Å³)")
        ax.set_ylabel("energy (eV)")
        ax.set_title(f"equation of state, {eos['formula']}")
        ax.legend()
    for ax, q in zip(axes, qs, strict=False):
        x = np.arange(len(sets))
        ax.bar(x - 0.2, [report[k]["before"][f"{q}_mae"] for k in sets], 0.4, label="parent")
        ax.bar(x + 0.2, [report[k]["after"][f"{q}_mae"] for k in sets], 0.4, label="fine-tuned")
        ax.set_xticks(x, ["new data" if k == "new_test" else "parent's test" for k in sets])
        ax.set_ylabel(f"{q} MAE ({UNITS[q]})")
        ax.legend()
    fig.savefig(path, dpi=120)
