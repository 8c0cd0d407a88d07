"""The exact LLPR force uncertainty truncated to rank r, on each zoo model's held-out data.

    OMP_NUM_THREADS=1 python scripts/uncertainty/llpr_rank_form.py metals [--rank 4]

The calculator's force estimates (local or neighbourhood rigidity, no extra backward pass)
approximate the exact LLPR force variance diag(Jᵀ C⁻¹ J), J = ∂f_s/∂r, which costs d = 48
backward passes (``zoo_rigidity.py --jacobian``). Keeping only the r largest eigenvalues of C⁻¹
costs r backward passes, batched into one call
(``ase_equi.model.rigidity_jacobian.jacobian_forces_uncertainty(..., rank=r)``); on the
metals on-the-fly demonstration's Ni₃Al frames rank 4 ranked as the exact form did (Spearman ρ
0.99 between them, ``llpr_temperature_scan.py``). This script measures the rank-r form on the
shipped model's own section (C⁻¹ as shipped, no refit), calibrated as ``zoo_rigidity.py``
calibrates every estimate: α by Gaussian likelihood of the validation force errors, thresholds
at the 95th / 90th percentile of the validation structures' largest atomic uncertainty. On the
shipped test set it reports the figures of issue 18 (Spearman ρ of the per-structure mean
uncertainty against the force RMSE; how many of the worst 5 % are flagged) for the rank-r form
and, measured in the same run, for the calculator's own ``forces_uncertainty``; and the
seconds per structure of a force call, of the rank-r form and of the calculator's uncertainty.

Writes ``benchmarks/results/2026-12-01-llpr-rank{r}-NAME.json``. Nothing in the model file
changes. ``--write DIR`` (rank 4 only) also writes a copy of the model to ``DIR/NAME.json``
whose section says ``forces_estimate`` ``"jacobian_rank4"`` with α_F and the card's thresholds
fitted here (same weights, same C⁻¹): the calculator then gives this form as
``forces_uncertainty`` (``learn_demo_metals.py --selection jacobian_rank4`` uses it).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_rigidity import (
    NAMES,
    gaussian_fit,
    graph_of,
    labelled_predictions,
    per_structure,
    ranking,
    splits,
)

from ase_equi import EquivariantCalculator
from ase_equi.io.model_file import read_model_file
from ase_equi.io.rigidity_section import write_rigidity
from ase_equi.model.prediction_rigidity import JACOBIAN_RANK4
from ase_equi.model.rigidity_jacobian import jacobian_forces_uncertainty

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def rank_form(loaded, frames: list, rank: int) -> dict[str, np.ndarray]:
    """Uncalibrated rank-``rank`` force uncertainty per atom, and seconds per structure."""
    inverse = loaded.rigidity.inverse_covariance.double()
    values, seconds = [], []
    for atoms in frames:
        start = time.perf_counter()
        u = jacobian_forces_uncertainty(loaded.model, graph_of(loaded, atoms), inverse, rank=rank)
        seconds.append(time.perf_counter() - start)
        values.append(u.detach().numpy())
    return {"u": np.concatenate(values), "seconds": np.array(seconds)}


def calculator_form(path: Path, frames: list) -> dict[str, np.ndarray]:
    """The calculator's calibrated ``forces_uncertainty`` per atom (float64), the seconds of
    each force call with it, and of one without it (a second calculator, the same structure)."""
    values, with_u, without_u = [], [], []
    plain = EquivariantCalculator(str(path), dtype="float64")  # never asked for uncertainty
    calc = EquivariantCalculator(str(path), dtype="float64")
    for atoms in frames:
        start = time.perf_counter()
        plain.calculate(atoms.copy(), ["forces"], ["positions"])
        without_u.append(time.perf_counter() - start)
        copy = atoms.copy()
        copy.calc = calc
        start = time.perf_counter()
        values.append(calc.get_property("forces_uncertainty", copy))
        with_u.append(time.perf_counter() - start)
    return {
        "u": np.concatenate(values),
        "seconds_with": np.array(with_u),
        "seconds_without": np.array(without_u),
    }


def figures(u_valid, u_test, valid, test) -> dict:
    """α and thresholds fitted on valid; the test figures of :func:`zoo_rigidity.ranking`."""
    alpha, nll = gaussian_fit((valid["force_err"] ** 2).sum(1), u_valid, 3)
    max_valid = per_structure(valid["owner"], alpha * u_valid, "max")
    thresholds = {f"valid_p{q}": float(np.percentile(max_valid, q)) for q in (95, 90)}
    out = ranking(alpha * u_test, thresholds, test)
    out.update(alpha=alpha, valid_nll=nll, thresholds_eV_per_A=thresholds)
    return out


def write_copy(loaded, path: Path, folder: Path, fitted: dict) -> str:
    """``folder/NAME.json``: the model at ``path`` with its section's force estimate set to
    the rank-4 Jacobian form, α_F and the card's thresholds as fitted on validation."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".json", ".safetensors", ".md"):
        shutil.copyfile(path.with_suffix(suffix), folder / (path.stem + suffix))
    rigidity = copy.deepcopy(loaded.rigidity)
    rigidity.info["forces_estimate"] = JACOBIAN_RANK4
    rigidity.forces_factor = float(fitted["alpha"])
    entry = copy.deepcopy(loaded.card["uncertainty"])
    entry["estimate"] = (
        "last-layer prediction rigidity (LLPR) of this one model: energy_uncertainty (eV) and "
        "forces_uncertainty (eV/Å per atom, the exact LLPR force variance kept to the 4 largest "
        "eigenvalues of C⁻¹); no stress_uncertainty"
    )
    entry["calibration"] = (
        f"alpha_F {fitted['alpha']:.4g} fitted on the validation split by Gaussian likelihood "
        f"(alpha_E as shipped); forces_estimate {JACOBIAN_RANK4}"
    )
    entry["test"] = {
        "structures": fitted["structures"],
        "spearman_force_uncertainty_vs_force_rmse": round(
            fitted["spearman_mean_u_vs_force_rmse"], 3
        ),
        "worst_5pct_flagged_at_valid_p95": round(fitted["worst_flagged_valid_p95"], 3),
        "worst_5pct_flagged_at_valid_p90": round(fitted["worst_flagged_valid_p90"], 3),
    }
    entry["uncertainty_threshold_eV_per_A"] = {
        k: round(v, 4) for k, v in fitted["thresholds_eV_per_A"].items()
    }
    entry["script"] = (
        f"OMP_NUM_THREADS=1 python scripts/uncertainty/llpr_rank_form.py {path.stem} --write DIR"
    )
    target = folder / (path.stem + ".json")
    write_rigidity(target, rigidity, card_entry=entry)
    return str(target.relative_to(ROOT)) if target.is_relative_to(ROOT) else target.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=NAMES)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--write", type=Path, help="folder of a copy with the rank-4 section")
    args = parser.parse_args()
    if args.write is not None and args.rank != 4:
        parser.error("--write needs --rank 4 (the calculator's form is rank 4)")
    torch.set_num_threads(1)
    path = ROOT / "models" / f"{args.name}.json"
    loaded = read_model_file(path)
    sets = splits(args.name)
    valid = labelled_predictions(loaded, sets["valid"])
    test = labelled_predictions(loaded, sets["test"])
    ranked = {k: rank_form(loaded, sets[k], args.rank) for k in ("valid", "test")}
    shipped = calculator_form(path, sets["test"])
    # the shipped estimate's figures at its own card thresholds (its α is already applied)
    card = loaded.card["uncertainty"]["uncertainty_threshold_eV_per_A"]
    shipped_figures = ranking(shipped["u"], {k: float(v) for k, v in card.items()}, test)
    seconds = {
        "force_call": float(np.median(shipped["seconds_without"])),
        "force_call_with_calculator_uncertainty": float(np.median(shipped["seconds_with"])),
        f"rank{args.rank}_form": float(np.median(ranked["test"]["seconds"])),
    }
    result = {
        "command": f"OMP_NUM_THREADS=1 python scripts/uncertainty/llpr_rank_form.py {args.name} "
        f"--rank {args.rank}",
        "model": f"models/{args.name}.json (shipped section, no refit)",
        "valid_structures": len(sets["valid"]),
        f"rank{args.rank}": figures(ranked["valid"]["u"], ranked["test"]["u"], valid, test),
        "calculator_forces_uncertainty": {
            "forces_estimate": loaded.rigidity.forces_estimate,
            "card_thresholds_eV_per_A": card,
            **shipped_figures,
        },
        "median_seconds_per_test_structure_float64": seconds,
    }
    if args.write is not None:
        result["written"] = write_copy(loaded, path, args.write, result[f"rank{args.rank}"])
    out = RESULTS / f"2026-12-01-llpr-rank{args.rank}-{args.name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
