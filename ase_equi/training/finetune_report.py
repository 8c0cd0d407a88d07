"""Fine-tuning's before/after report: errors of parent and fine-tuned model, as a table and a
plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Frame, read_frames
from ..model.mace import MaceModel
from .config import TrainConfig
from .evaluation import LabelledSet
from .loss import UNITS
from .report import _atomic_write
from .trainer import TrainResult


def evaluate(model: MaceModel, frames: Sequence[Frame], batch_size: int = 8) -> dict[str, float]:
    """MAE/RMSE (meV units) of ``model`` on ``frames``; stress where every cell allows it."""
    return LabelledSet.for_model(frames, model).evaluate(model, batch_size=batch_size).summary()


def before_after(parent: MaceModel, result: TrainResult, frames: Sequence[Frame],
                 parent_test_data: str | None, cfg: TrainConfig) -> dict[str, Any]:
    """Errors of the parent and the fine-tuned model on the new test split and, when given,
    on the parent's own test set (meV units)."""
    import json

    split = json.loads((Path(cfg.output_dir) / "split.json").read_text())
    test = [frames[k] for k in split["test"]]
    report: dict[str, Any] = {"units": UNITS}
    known = set(parent.config.elements)
    if test:
        # the parent can only be asked about frames made of elements it knows
        old = [f for f in test if set(f.atoms.numbers.tolist()) <= known]
        report["new_test"] = {
            "n_frames": len(test),
            "n_frames_parent_can_evaluate": len(old),
            "before": evaluate(parent, old) if old else {},
            "after": evaluate(result.model, test),
        }
    if parent_test_data:
        own = read_frames(parent_test_data, elements=parent.config.elements)
        report["parent_test"] = {"n_frames": len(own), "before": evaluate(parent, own),
                                 "after": evaluate(result.model, own)}
    return report


def write_report(out: Path, report: dict[str, Any]) -> None:
    """``finetune_report.md``/``.json`` and, with matplotlib, ``finetune_report.png``."""
    import json

    _atomic_write(out / "finetune_report.json", lambda fh: fh.write(json.dumps(report, indent=2)),
                  "w")
    lines = [f"# Fine-tuning report: {report['parent']} → new data", "",
             "| test set | quantity | MAE before | MAE after | RMSE before | RMSE after | unit |",
             "|---|---|---|---|---|---|---|"]
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
    lines += ["", f"Replayed frames: {report['n_replay']}; new elements: "
              f"{', '.join(report['new_elements']) or 'none'}; time {report['seconds']} s."]
    _atomic_write(out / "finetune_report.md", lambda fh: fh.write("\n".join(lines) + "\n"), "w")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return
    sets = [k for k in ("new_test", "parent_test") if k in report]
    qs = [q for q in ("energy", "forces") if all(f"{q}_mae" in report[k]["before"] for k in sets)]
    # (a new element leaves the parent without "before" numbers: no plot then)
    if not sets or not qs:
        return
    fig = Figure(figsize=(4.5 * len(qs), 3.5), layout="constrained")
    for ax, q in zip(fig.subplots(1, len(qs), squeeze=False)[0], qs, strict=True):
        x = np.arange(len(sets))
        ax.bar(x - 0.2, [report[k]["before"][f"{q}_mae"] for k in sets], 0.4, label="parent")
        ax.bar(x + 0.2, [report[k]["after"][f"{q}_mae"] for k in sets], 0.4, label="fine-tuned")
        ax.set_xticks(x, ["new data" if k == "new_test" else "parent's test" for k in sets])
        ax.set_ylabel(f"{q} MAE ({UNITS[q]})")
        ax.legend()
    fig.savefig(out / "finetune_report.png", dpi=120)
