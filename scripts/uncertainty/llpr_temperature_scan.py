"""Does the zoo model's uncertainty see how hot a structure is? (metals on L1₂ Ni₃Al, EMT)

The parent of the metals on-the-fly demonstration (``metals``, its prediction-rigidity
section) on L1₂ Ni₃Al frames from EMT Langevin MD at several temperatures: the largest and
the mean atomic force uncertainty against the force error, per temperature and frame by frame;
and the same for the exact LLPR force uncertainty diag(Jᵀ C⁻¹ J) (48 backward passes per
structure, uncalibrated: ranks only; ``zoo_rigidity.py --jacobian``), which the calculator does
not compute, and its rank-4 truncation (the 4 largest eigenvalues of C⁻¹ only: 4 backward passes)
with the seconds per structure of each form against a force call.

    OMP_NUM_THREADS=1 python scripts/uncertainty/llpr_temperature_scan.py

The demonstration's selection (the most uncertain frame of a window) can only beat labelling
every N-th frame if the uncertainty ranks the frames of one trajectory by their error. Frames:
the demonstration's 32-atom Ni₃Al cell (``learn_demo_metals.ni3al``), momenta at T (seed 3),
Langevin at T (2 fs, friction 0.02 in ASE units, generator seeded with T), 150 steps to settle,
then 10 frames 20 steps apart; T = 300, 600, 900, 1200, 1500 K. Writes
``benchmarks/results/2026-12-01-llpr-temperature-ni3al.{json,md}``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learn_demo_metals import ni3al, with_momenta
from zoo_rigidity import graph_of

from ase_equi import EquivariantCalculator
from ase_equi.model.rigidity_jacobian import jacobian_forces_uncertainty

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "results" / "2026-12-01-llpr-temperature-ni3al"
TEMPERATURES = (300, 600, 900, 1200, 1500)


def frames_at(temperature: int) -> list:
    atoms = with_momenta(ni3al(), temperature, 3)
    atoms.calc = EMT()
    rng = np.random.default_rng(temperature)
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.02, fixcm=False,
                   rng=rng)  # fmt: skip
    dyn.run(150)
    out = []
    for _ in range(10):
        dyn.run(20)
        frame = atoms.copy()
        frame.info["emt_forces"] = atoms.get_forces()
        out.append(frame)
    return out


def main() -> None:
    torch.set_num_threads(1)
    calc = EquivariantCalculator("metals")
    calc64 = EquivariantCalculator("metals", dtype="float64")  # a force call, timed
    exact = calc64.loaded  # for diag(Jᵀ C⁻¹ J)
    inverse = exact.rigidity.inverse_covariance.double()
    rows = []
    for temperature in TEMPERATURES:
        for frame in frames_at(temperature):
            reference = frame.info.pop("emt_forces")
            frame.calc = calc
            u = calc.get_property("forces_uncertainty", frame)
            error = frame.get_forces() - reference
            graph = graph_of(exact, frame)
            start = time.perf_counter()
            u_exact = jacobian_forces_uncertainty(exact.model, graph, inverse).numpy()
            seconds = {"exact": time.perf_counter() - start}
            start = time.perf_counter()
            u_rank4 = jacobian_forces_uncertainty(exact.model, graph, inverse, rank=4).numpy()
            seconds["rank4"] = time.perf_counter() - start
            start = time.perf_counter()
            calc64.calculate(frame.copy(), ["forces"], ["positions"])
            seconds["force_call"] = time.perf_counter() - start
            rows.append({
                "temperature_K": temperature,
                "max_u": float(u.max()),
                "mean_u": float(u.mean()),
                "max_u_exact": float(u_exact.max()),
                "mean_u_exact": float(u_exact.mean()),
                "max_u_rank4": float(u_rank4.max()),
                "mean_u_rank4": float(u_rank4.mean()),
                "seconds": seconds,
                "force_rmse": float(np.sqrt((error**2).mean())),
                "max_force_error": float(np.linalg.norm(error, axis=1).max()),
            })  # fmt: skip
    table = ["| T (K) | max atomic u (eV/Å) | mean atomic u | mean exact u (uncalibrated) "
             "| force RMSE (eV/Å) | largest error |", "|---|---|---|---|---|---|"]  # fmt: skip
    for temperature in TEMPERATURES:
        at = [r for r in rows if r["temperature_K"] == temperature]
        keys = ("max_u", "mean_u", "mean_u_exact", "force_rmse")
        mean = {k: np.mean([r[k] for r in at]) for k in keys}
        worst = np.mean([r["max_force_error"] for r in at])
        cells = [f"{mean[k]:.4f}" for k in keys] + [f"{worst:.3f}"]
        table.append(f"| {temperature} | " + " | ".join(cells) + " |")
    rho = {
        f"{u} vs {e}": float(spearmanr([r[u] for r in rows], [r[e] for r in rows])[0])
        for u, e in (
            ("max_u", "force_rmse"),
            ("mean_u", "force_rmse"),
            ("max_u_exact", "force_rmse"),
            ("mean_u_exact", "force_rmse"),
            ("mean_u_rank4", "force_rmse"),
            ("mean_u_rank4", "mean_u_exact"),
            ("max_u", "max_force_error"),
        )  # fmt: skip
    }
    within = {}  # Spearman ρ against the force RMSE over the 10 frames of one temperature
    for u in ("max_u", "mean_u", "max_u_exact", "mean_u_exact", "mean_u_rank4"):
        for t in TEMPERATURES:
            at = [r for r in rows if r["temperature_K"] == t]
            rho_t = spearmanr([r[u] for r in at], [r["force_rmse"] for r in at])[0]
            within[f"{u} {t} K"] = float(rho_t)
    result = {
        "command": "OMP_NUM_THREADS=1 python scripts/uncertainty/llpr_temperature_scan.py",
        "frames": rows,
        "spearman_all_50": rho,
        "spearman_vs_force_rmse_within_T": within,
        "median_seconds_per_structure": {
            k: float(np.median([r["seconds"][k] for r in rows]))
            for k in ("force_call", "exact", "rank4")
        },
    }
    OUT.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    text = [
        f"# {__doc__.splitlines()[0]}",
        "",
        f"`{result['command']}`",
        "",
        *table,
        "",
        "Spearman ρ over all 50 frames: " + ", ".join(f"{k} {v:.2f}" for k, v in rho.items()),
        "",
        "Within each temperature (10 frames), Spearman ρ against the force RMSE: "
        + ", ".join(f"{k} {v:.2f}" for k, v in within.items()),
        "",
        "Median seconds per structure (one thread, float64 for the Jacobian forms): "
        + ", ".join(f"{k} {v:.3f}" for k, v in result["median_seconds_per_structure"].items()),
    ]
    OUT.with_suffix(".md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
