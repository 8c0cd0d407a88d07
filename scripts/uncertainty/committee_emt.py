"""Committee uncertainty on EMT Al/Cu: train a committee, calibrate it, and measure how well its
uncertainty ranks and flags the errors on held-out structures, in and out of the training
domain.

Data (ASE's EMT as the reference, seeded): 8-atom fcc cells of Cu, Al and random CuAl, strained
by up to 3 % and rattled by 0.05-0.15 Å (the training domain: train/valid split by ``train``);
a validation set from the same distribution (for the calibration factor); and a test set of
in-domain cells plus out-of-domain ones (strain up to 10 %, rattle 0.2-0.3 Å, a vacancy).

Steps (each result is kept in ``--out``, so a rerun continues where it stopped):

1. ``train_committee``: M members (seeds 0..M-1), each trained by ``ase_equi.train``;
2. ``calibrate_committee`` on the validation set (factor, miscalibration area, plot);
3. on the test set: Spearman rank correlation between the per-structure predicted force
   uncertainty (mean over atoms of ``forces_uncertainty``) and the actual force RMSE, the
   miscalibration area before and after calibration, and the fraction of the worst 5 % of
   structures (by actual error) flagged by a threshold set at the 90th percentile of the
   validation set's predicted uncertainty.

    OMP_NUM_THREADS=1 python scripts/uncertainty/committee_emt.py --out runs/committee-emt
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from scipy.stats import spearmanr

from ase_equi import EquivariantCalculator, ModelConfig, TrainConfig
from ase_equi.uncertainty_calibration import (
    calibrate_committee,
    calibration_plot,
    force_errors,
    miscalibration_area,
)
from ase_equi.uncertainty_training import train_committee


def structure(rng: np.random.Generator, strain: float, rattle: tuple[float, float], vacancy=False):
    kind = rng.integers(3)
    atoms = bulk("Al" if kind == 2 else "Cu", "fcc", a=4.05 if kind == 2 else 3.61, cubic=True)
    atoms = atoms.repeat((2, 1, 1))
    if kind == 1:  # random CuAl alloy, lattice between the two
        atoms.numbers[rng.permutation(len(atoms))[: len(atoms) // 2]] = 13
        atoms.set_cell(atoms.cell * (3.83 / 3.61), scale_atoms=True)
    deformation = np.eye(3) + strain * rng.uniform(-1, 1, (3, 3))
    atoms.set_cell(atoms.cell.array @ deformation, scale_atoms=True)
    if vacancy:
        del atoms[int(rng.integers(len(atoms)))]
    atoms.positions += rng.normal(0, rng.uniform(*rattle), atoms.positions.shape)
    atoms.calc = EMT()
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = SinglePointCalculator(
        atoms, energy=energy, forces=forces, stress=atoms.get_stress()
    )
    return atoms


def datasets(seed: int, n_train: int) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    inside = dict(strain=0.03, rattle=(0.05, 0.15))
    outside = dict(strain=0.10, rattle=(0.2, 0.3))
    return {
        "train": [structure(rng, **inside) for _ in range(n_train)],
        "valid": [structure(rng, **inside) for _ in range(30)],
        "test_in": [structure(rng, **inside) for _ in range(40)],
        "test_out": [structure(rng, **outside, vacancy=bool(k % 2)) for k in range(40)],
    }


def per_structure(calc, frames):
    """(predicted mean atomic force uncertainty, actual force RMSE), eV/Å, per structure."""
    predicted, actual = [], []
    for frame in frames:
        atoms = frame.copy()
        atoms.calc = calc
        error = atoms.get_forces() - frame.calc.results["forces"]
        actual.append(float(np.sqrt(np.mean(error**2))))
        predicted.append(float(np.mean(calc.get_property("forces_uncertainty", atoms))))
    return np.array(predicted), np.array(actual)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/committee-emt")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--n-train", type=int, default=80)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = datasets(0, args.n_train)
    config = ModelConfig(
        elements=(13, 29),
        r_max=4.5,
        channels=8,
        max_ell=2,
        max_L=1,
        correlation=2,
        num_interactions=2,
        radial_mlp=(16, 16),
    )
    train_config = TrainConfig(
        epochs=args.epochs,
        batch_size=4,
        lr=0.01,
        plots=False,
        output_dir=str(out / "train"),
        scheduler_patience=5,
    )
    committee = out / "committee.json"
    if not committee.exists():
        train_committee(
            config,
            data["train"],
            train_config,
            committee,
            seeds=tuple(range(args.members)),
            name="emt-alcu",
        )
    t_train = time.perf_counter() - t0
    report = calibrate_committee(
        committee,
        data["valid"],
        plot=out / "calibration_valid.png",
        data="30 in-domain EMT structures",
    )
    calc = EquivariantCalculator(committee)
    results = {"calibration": report, "train_and_label_s": t_train}
    test = data["test_in"] + data["test_out"]
    errors, sigma = force_errors(calc, test)
    results["test_area_uncalibrated"] = miscalibration_area(errors, sigma, 1.0)
    results["test_area_calibrated"] = miscalibration_area(errors, sigma, report["factor"])
    calibration_plot(
        errors,
        sigma,
        {"uncalibrated": 1.0, "calibrated": report["factor"]},
        out / "calibration_test.png",
    )
    valid_pred, _ = per_structure(calc, data["valid"])
    threshold = float(np.quantile(valid_pred, 0.9))
    for label, frames in (("in", data["test_in"]), ("out", data["test_out"]), ("all", test)):
        predicted, actual = per_structure(calc, frames)
        worst = actual >= np.quantile(actual, 0.95)
        results[f"test_{label}"] = {
            "structures": len(frames),
            "spearman": float(spearmanr(predicted, actual).statistic),
            "force_rmse_mean": float(actual.mean()),
            "predicted_mean": float(predicted.mean()),
            "worst_5pc": int(worst.sum()),
            "worst_5pc_flagged": int((predicted[worst] > threshold).sum()),
            "flagged_fraction": float((predicted > threshold).mean()),
        }
    results["threshold_eV_per_A"] = threshold
    results["wall_s"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
