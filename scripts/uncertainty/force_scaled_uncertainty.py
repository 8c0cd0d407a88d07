"""Would an error model that grows with the force help the zoo's LLPR? A check on validation.

    OMP_NUM_THREADS=1 python scripts/uncertainty/force_scaled_uncertainty.py molecules-pbe

The zoo's last-layer estimate misses that molecules-pbe's force errors grow with temperature
(README, "Uncertainty and learning on the fly"), and hot frames have larger forces. So: per atom
σ_i² = a² u_i² + b² |F_i|² (u_i: the calculator's calibrated ``forces_uncertainty``, F_i: the
predicted force), a and b fitted by the Gaussian likelihood of the force-component errors
(variance σ_i²/3 per component) on the model's *validation* split, never on the test set. Printed
for u alone, |F| alone and the combination: the Spearman ρ between the per-structure mean (and
largest) value and the force RMSE, and how many of the worst 5 % by force RMSE are above the 95th
percentile of the largest atomic value (in-sample: a threshold from the same structures).
Per-atom predictions are kept in ``runs/force_scaled_uncertainty/NAME-valid.npz``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_rigidity import per_structure, splits

from ase_equi import EquivariantCalculator

ROOT = Path(__file__).resolve().parents[2]


def predictions(name: str) -> dict[str, np.ndarray]:
    """Per atom of the validation split: owner, predicted and reference forces, uncertainty."""
    path = ROOT / "runs" / "force_scaled_uncertainty" / f"{name}-valid.npz"
    if path.exists():
        with np.load(path) as data:
            return dict(data)
    calc = EquivariantCalculator(name)
    rows: dict[str, list] = {"owner": [], "forces": [], "reference": [], "u": []}
    for s, labelled in enumerate(splits(name)["valid"]):
        atoms = labelled.copy()
        atoms.calc = calc
        rows["owner"].append(np.full(len(atoms), s))
        rows["forces"].append(atoms.get_forces())
        rows["reference"].append(labelled.get_forces())
        rows["u"].append(calc.get_property("forces_uncertainty", atoms))
    arrays = {k: np.concatenate(v) for k, v in rows.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def fit(d: dict[str, np.ndarray]) -> tuple[float, float]:
    """(a, b) of σ_i² = a² u_i² + b² |F_i|² by the Gaussian likelihood of the errors."""
    err2 = ((d["forces"] - d["reference"]) ** 2).sum(1)
    u2, f2 = d["u"] ** 2, (d["forces"] ** 2).sum(1)

    def nll(log_ab: np.ndarray) -> float:
        a, b = np.exp(log_ab)
        var = (a * a * u2 + b * b * f2) / 3 + 1e-12
        return float(np.mean(0.5 * np.log(2 * np.pi * var) + err2 / (6 * var)))

    a, b = np.exp(minimize(nll, [0.0, -3.0], method="Nelder-Mead").x)
    return float(a), float(b)


def figures(d: dict[str, np.ndarray], sigma: np.ndarray) -> str:
    owner = d["owner"]
    rmse = np.sqrt(per_structure(owner, ((d["forces"] - d["reference"]) ** 2).mean(1), "mean"))
    mean_u, max_u = per_structure(owner, sigma, "mean"), per_structure(owner, sigma, "max")
    k = max(1, round(0.05 * len(rmse)))
    worst = set(np.argsort(-rmse)[:k].tolist())
    flagged = set(np.nonzero(max_u > np.percentile(max_u, 95))[0].tolist())
    rho, rho_max = spearmanr(mean_u, rmse)[0], spearmanr(max_u, rmse)[0]
    return f"rho {rho:.3f} (largest: {rho_max:.3f}), worst {k}: {len(worst & flagged)} above p95"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=["metals", "molecules-pbe", "silicon-xtb"])
    name = parser.parse_args().name
    d = predictions(name)
    a, b = fit(d)
    print(f"{name}, validation split ({d['owner'].max() + 1} structures): a {a:.3f}, b {b:.4f}")
    print("  LLPR u:     ", figures(d, d["u"]))
    print("  |F|:        ", figures(d, np.linalg.norm(d["forces"], axis=1)))
    print(
        "  combination:",
        figures(d, np.sqrt(a * a * d["u"] ** 2 + b * b * (d["forces"] ** 2).sum(1))),
    )


if __name__ == "__main__":
    main()
