"""The picture of an on-the-fly learning run: its uncertainty over time and its reference calls."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["plot_learning"]


def plot_learning(out: str | os.PathLike, path: str | os.PathLike) -> Path | None:
    """PNG of the largest atomic force uncertainty over simulated time (over the steps of a
    relaxation), with the threshold and the reference calls marked, from a
    :func:`~ase_equi.learning.learn_on_the_fly` folder; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    folder = Path(out)
    rows = np.loadtxt(folder / "uncertainty.txt", ndmin=2)
    timed = not np.isnan(rows[:, 1]).all()  # an optimizer's steps have no time
    x = rows[:, 1] if timed else rows[:, 0]
    calls = json.loads((folder / "calls.json").read_text())
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(x, rows[:, 2], lw=1, label="max atomic force uncertainty")
    times = dict(zip(rows[:, 0].astype(int), x, strict=True))
    for k, call in enumerate(calls):
        ax.axvline(
            times.get(call["step"], np.nan),
            color="C3",
            lw=0.8,
            label="reference call" if k == 0 else None,
        )
    if calls and calls[0]["threshold"] is not None:
        ax.axhline(calls[0]["threshold"], color="k", ls=":", label="threshold")
    ax.set_xlabel("simulated time (fs)" if timed else "optimizer step")
    ax.set_ylabel("eV/Å")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
