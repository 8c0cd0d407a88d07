"""Can any last-layer uncertainty flag a zoo model's worst held-out structures? An upper bound.

    OMP_NUM_THREADS=1 python scripts/uncertainty/llpr_learned_covariance.py molecules-pbe

The LLPR force uncertainty of the calculator is a scalar factor times a fixed quadratic form of
the last-layer features (:mod:`ase_equi.model.prediction_rigidity`). Every last-layer method
(LLPR with any calibration, a shallow ensemble of last-layer readouts, one trained by NLL)
gives force variances of the form

    σ²_{iα} = (Jᵀ Σ J)_{iα,iα},   J = ∂f_s/∂r  (d × 3n, f_s the structure's feature sum),

for some covariance Σ (d × d) of the last-layer weights: LLPR takes Σ = α² C⁻¹, a shallow
ensemble of M readouts the sample covariance of their weights (rank M − 1). This script
computes J exactly (d backward passes per structure) on the validation and test splits of
zoo model NAME (the splits of ``zoo_rigidity.py``), and fits Σ = B Bᵀ (B: d × rank) by the
Gaussian negative log-likelihood of the **validation** force components, the most any
last-layer method could learn from them (with rank d, every such Σ is reachable), starting from
α² C⁻¹ (C the structure covariance with regulariser 1e-2 · tr C/d) and for rank d also with a
penalty towards it. It reports, on the test split, what ``zoo_rigidity.py`` reports: the
Spearman ρ of the per-structure mean / largest atomic uncertainty against the force RMSE, and
the fraction of the worst 5 % of structures flagged at the validation structures' 95th and
90th percentile of the largest atomic uncertainty.

Learning Σ on the validation split is allowed to overfit it: the test figures are an upper
bound on what a last-layer estimate of this model can do, not a method shipped. Jacobians are
cached in ``runs/llpr_learned_covariance/NAME/``; results go to
``benchmarks/results/2026-12-01-llpr-learned-covariance-NAME.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_rigidity import (
    NAMES,
    RESULTS,
    ROOT,
    cached,
    graph_of,
    labelled_predictions,
    per_structure,
    ranking,
    splits,
)

from ase_equi.io.model_file import read_model_file
from ase_equi.model.prediction_rigidity import regularised_inverse
from ase_equi.model.rigidity_jacobian import feature_jacobian
from ase_equi.uncertainty_calibration import miscalibration_area

RELATIVE = 1e-2  # regulariser of C for the starting Σ (relative to tr C / d)
FITS = ((4, 0.0), (8, 0.0), (None, 0.0), (None, 1e-2))  # (rank; None: d, penalty)


def jacobian(loaded, atoms) -> np.ndarray:
    """``[d, 3n]``: ∂f_s/∂r of one structure (d backward passes)."""
    jac = feature_jacobian(loaded.model, graph_of(loaded, atoms))
    return jac.reshape(jac.shape[0], -1).numpy()


def fit_covariance(
    jac: torch.Tensor, err2: torch.Tensor, start: torch.Tensor, rank: int, penalty: float
) -> torch.Tensor:
    """B (d × rank) minimising the mean Gaussian NLL of the force components with variances
    diag(Jᵀ B Bᵀ J) (``jac``: ``[d, 3N]``, ``err2``: ``[3N]`` squared errors), plus
    ``penalty`` · |B − B₀|² / |B₀|², from B₀ = the first ``rank`` columns of ``start``
    scaled to the errors' mean."""
    b0 = start[:, :rank].clone().contiguous()
    scale = torch.mean(err2 / ((b0.T @ jac) ** 2).sum(0).clamp(min=1e-30))
    b0 = (b0 * scale.sqrt()).contiguous()
    b = b0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([b], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        var = ((b.T @ jac) ** 2).sum(0) + 1e-12
        loss = torch.mean(0.5 * torch.log(var) + err2 / (2 * var))
        loss = loss + penalty * ((b - b0) ** 2).sum() / (b0**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return b.detach()


def figures(b: torch.Tensor, jac: dict, pred: dict) -> dict:
    """Test figures of the uncertainty with Σ = B Bᵀ (thresholds from validation)."""
    u = {}
    for kind in ("valid", "test"):
        var = ((b.T @ jac[kind]) ** 2).sum(0).numpy().reshape(-1, 3)
        u[kind] = np.sqrt(var.sum(1))
    max_valid = per_structure(pred["valid"]["owner"], u["valid"], "max")
    thresholds = {f"valid_p{q}": float(np.percentile(max_valid, q)) for q in (95, 90)}
    out = ranking(u["test"], thresholds, pred["test"])
    out["forces_miscalibration_area"] = miscalibration_area(pred["test"]["force_err"], u["test"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=NAMES)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = read_model_file(ROOT / "models" / f"{args.name}.json")
    work = ROOT / "runs" / "llpr_learned_covariance" / args.name
    work.mkdir(parents=True, exist_ok=True)
    sets = splits(args.name)
    pred, jac = {}, {}
    for kind in ("valid", "test"):
        frames = sets[kind]
        pred[kind] = cached(work / f"{kind}.npz", lambda f=frames: labelled_predictions(loaded, f))
        blocks = cached(
            work / f"jacobian_{kind}.npz",
            lambda f=frames: {str(s): jacobian(loaded, a) for s, a in enumerate(f)},
        )
        jac[kind] = torch.from_numpy(
            np.concatenate([blocks[str(s)] for s in range(len(blocks))], 1)
        )
    covariance = torch.from_numpy(
        cached(work / "train.npz", lambda: train_covariance(loaded, sets["train"]))["C"]
    )
    start = torch.linalg.cholesky(regularised_inverse(covariance, RELATIVE))
    err2 = torch.from_numpy(pred["valid"]["force_err"].reshape(-1) ** 2)
    rows = {"llpr_exact (rank d, Σ = α² C⁻¹)": figures(fit_scalar(jac, err2, start), jac, pred)}
    for rank, penalty in FITS:
        r = rank or start.shape[0]
        b = fit_covariance(jac["valid"], err2, start, r, penalty)
        rows[f"learned Σ, rank {r}, penalty {penalty}"] = figures(b, jac, pred)
    result = {
        "command": "OMP_NUM_THREADS=1 python scripts/uncertainty/llpr_learned_covariance.py "
        + args.name,
        "structures": {k: len(sets[k]) for k in ("valid", "test")},
        "fits": rows,
    }
    out = RESULTS / f"2026-12-01-llpr-learned-covariance-{args.name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    keys = ("spearman_mean_u_vs_force_rmse", "spearman_max_u_vs_force_rmse")
    for label, row in rows.items():
        flags = (row["worst_flagged_valid_p95"], row["worst_flagged_valid_p90"])
        print(label, *(f"{row[k]:.3f}" for k in keys), *(f"{f:.2f}" for f in flags))


def fit_scalar(jac: dict, err2: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """B = α L (L Lᵀ = C⁻¹): the exact LLPR form with α by validation likelihood."""
    var = ((start.T @ jac["valid"]) ** 2).sum(0).clamp(min=1e-30)
    return start * torch.mean(err2 / var).sqrt()


def train_covariance(loaded, frames: list) -> dict[str, np.ndarray]:
    """C = Σ_s f_s f_sᵀ over the training split (no regulariser)."""
    from ase_equi.learning_rigidity import rigidity_statistics

    return {"C": rigidity_statistics(loaded.model, frames, batch=8).covariance.numpy()}


if __name__ == "__main__":
    main()
