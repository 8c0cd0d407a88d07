"""A bootstrap committee of a zoo model, against its LLPR estimate on the same held-out data.

    OMP_NUM_THREADS=1 python scripts/uncertainty/bootstrap_committee.py molecules-pbe

Why: on ``molecules-pbe`` the single-model estimate (last-layer prediction rigidity) ranks the
held-out force errors (Spearman ρ 0.66) but flags only 1 of the worst 6 test structures at
its validation p95: they are 1000 K frames of training molecules, where the model errs from
too little capacity or data, which the spread of the last layer does not see (README,
"Uncertainty and learning on the fly"). Models trained on different resamples of the data
disagree most where the data determine the function least; this script measures whether
their spread flags those frames.

What it does (resumable: finished members are not trained again):

1. M members (``--members``, default 4), each the zoo model trained further (warm start) on
   its own bootstrap resample (seeded, with replacement, as many frames as the training
   split) of the model's training split (rebuilt from its card), ``--epochs`` (default 8) at
   ``--lr`` (default 1e-3, the rate of ``molecules-pbe``'s stage 2), cosine schedule, the loss
   weights of the model's last training stage, seed m;
2. joined into one committee file (format 2) and calibrated on the validation split
   (``calibrate_committee``);
3. the figures of ``zoo_rigidity.py`` on the validation split and the shipped test set:
   Spearman ρ between the mean atomic force uncertainty and the force RMSE per structure, the
   fraction of the worst 5 % of test structures (by force RMSE) flagged at the validation
   structures' 95th and 90th percentiles of the largest atomic uncertainty, and the test
   errors of the committee mean against the zoo model's.

Decision rule, written before any figure was seen: the committee is worth shipping for this
model if at its validation p95 it flags at least 4 of the 6 worst test structures and its
test ρ is at least the LLPR's 0.66. Output: ``runs/bootstrap-committee/NAME/`` and
``benchmarks/results/2026-12-01-bootstrap-committee-NAME.json``.

**Independent starts** (``--independent``): the bootstrap members above start from one set of
weights and did not flag those frames. Here member 0 is the zoo model itself and member m ≥ 1
is a new model of the zoo model's architecture and constants (E0, scale, shift, neighbour
count) with weights drawn from seed m, trained through every stage on the card
(``training_stages``: each stage's own settings, epochs and rates) on the zoo model's data and
split (the card's seed; checked against the split rebuilt from the card), so the members
differ only in where they started. Only for a model whose stages all trained on one data set
(``molecules-pbe``). About two hours of one core per member (132 epochs for molecules-pbe);
every stage checkpoints and resumes, and ``--member m`` trains one member only (two processes
for two cores), after which the plain command finds them done and measures. Same decision rule.
Output: ``runs/independent-committee/NAME/`` and
``benchmarks/results/2026-12-01-independent-committee-NAME.json``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "zoo"))
sys.path.insert(0, str(ROOT / "scripts" / "uncertainty"))

from make_replay_sets import card_split, frame_bounds, training_data  # noqa: E402
from zoo_rigidity import splits  # noqa: E402

from ase_equi import EquivariantCalculator  # noqa: E402
from ase_equi.io.model_committee import join_committee_files  # noqa: E402
from ase_equi.io.model_file import read_model_file, save_model  # noqa: E402
from ase_equi.learning_retraining import parent_card, retraining_config  # noqa: E402
from ase_equi.training.checkpoint import new_model  # noqa: E402
from ase_equi.training.config import TrainConfig  # noqa: E402
from ase_equi.training.trainer import train  # noqa: E402
from ase_equi.uncertainty_calibration import calibrate_committee  # noqa: E402
from ase_equi.zoo import zoo_path  # noqa: E402


def member(name: str, m: int, train_frames: list, args: argparse.Namespace, out: Path) -> Path:
    """Member ``m``: the zoo model trained on bootstrap resample ``m`` (resumable)."""
    done = out / f"member{m}.json"
    if done.exists():
        return done
    rng = np.random.default_rng(1000 + m)
    resample = [train_frames[k] for k in rng.integers(0, len(train_frames), len(train_frames))]
    model = copy.deepcopy(read_model_file(zoo_path(name)).model).requires_grad_(True)
    config = retraining_config(args.epochs, args.lr, parent_card(name))
    config = dataclasses.replace(config, seed=m, output_dir=str(out / f"m{m}"))
    torch.manual_seed(m)
    trained = train(model, resample, config, name=f"member{m}", verbose=False).model
    return save_model(trained, done, card={"name": f"{name}-bootstrap-member{m}"})


def independent_member(name: str, m: int, out: Path) -> Path:
    """Member ``m`` of the independent-start committee (see the module docstring; resumable):
    the zoo model for m = 0, else a new model from seed m trained through the card's stages."""
    if m == 0:
        return zoo_path(name)
    done = out / f"member{m}.json"
    if done.exists():
        return done
    if frame_bounds(name):
        raise SystemExit(f"{name}: its stages trained on growing data sets; --independent "
                         "reproduces single-data-set recipes only")  # fmt: skip
    card = parent_card(name)
    expected, _, _ = card_split(name)
    model = new_model(read_model_file(zoo_path(name)).config, seed=m)
    for i, stage in enumerate(card["training_stages"], 1):
        folder = out / f"m{m}" / f"stage{i}"
        finished = folder / f"member{m}-stage{i}.json"
        if not finished.exists():
            settings = {k: v for k, v in stage["settings"].items() if k != "output_dir"}
            config = TrainConfig(**settings, output_dir=str(folder))
            train(model, str(training_data(name)), config, name=f"member{m}-stage{i}")
            split = json.loads((folder / "split.json").read_text())
            if any(split[k] != expected[k] for k in ("train", "valid", "test")):
                raise SystemExit(f"{folder}: the split differs from the zoo model's")
        model = read_model_file(finished).model.float().requires_grad_(True)
    return save_model(model, done, card={"name": f"{name}-independent-member{m}"})


def per_structure(calc: EquivariantCalculator, frames: list) -> dict[str, np.ndarray]:
    """Per structure: force RMSE (eV/Å), mean and largest atomic force uncertainty (eV/Å),
    energy error per atom (eV)."""
    rows = []
    for atoms in frames:
        work = atoms.copy()
        work.calc = calc
        err = work.get_forces() - atoms.get_forces()
        u = calc.get_property("forces_uncertainty", work)
        energy = (work.get_potential_energy() - atoms.get_potential_energy()) / len(atoms)
        rows.append((np.sqrt((err**2).mean()), u.mean(), u.max(), energy))
    a = np.array(rows)
    return {"rmse": a[:, 0], "mean_u": a[:, 1], "max_u": a[:, 2], "energy": a[:, 3]}


def figures(test: dict[str, np.ndarray], thresholds: dict[str, float]) -> dict:
    n = len(test["rmse"])
    k = max(1, round(0.05 * n))
    worst = set(np.argsort(-test["rmse"])[:k].tolist())
    out = {
        "structures": n,
        "spearman_mean_u_vs_force_rmse": float(spearmanr(test["mean_u"], test["rmse"])[0]),
        "spearman_max_u_vs_force_rmse": float(spearmanr(test["max_u"], test["rmse"])[0]),
        "worst_5pct": k,
        "force_rmse_eV_per_A": float(np.sqrt((test["rmse"] ** 2).mean())),
        "energy_mae_meV_per_atom": float(1000 * np.abs(test["energy"]).mean()),
    }
    for q, t in thresholds.items():
        flagged = set(np.nonzero(test["max_u"] > t)[0].tolist())
        out[f"worst_flagged_{q}"] = f"{len(worst & flagged)} of {k}"
        out[f"flagged_fraction_{q}"] = len(flagged) / n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="zoo model")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--independent", action="store_true", help="members from new weights")
    parser.add_argument("--member", type=int, help="with --independent: train this one only")
    args = parser.parse_args()
    if args.member is not None and not args.independent:
        parser.error("--member is for --independent")
    torch.set_num_threads(1)
    kind = "independent-committee" if args.independent else "bootstrap-committee"
    out = ROOT / "runs" / kind / args.name
    out.mkdir(parents=True, exist_ok=True)
    if args.member is not None:
        print(independent_member(args.name, args.member, out))
        return
    sets = splits(args.name)
    started = time.perf_counter()
    if args.independent:
        paths = [independent_member(args.name, m, out) for m in range(args.members)]
    else:
        paths = [member(args.name, m, sets["train"], args, out) for m in range(args.members)]
    trained_s = time.perf_counter() - started
    committee = join_committee_files(paths, out / "committee", card={"name": kind})
    calibration = calibrate_committee(committee, sets["valid"], plot=out / "calibration.png")
    command = f"OMP_NUM_THREADS=1 python {Path(__file__).relative_to(ROOT)} {args.name}"
    command += f" --members {args.members}"
    command += " --independent" if args.independent else f" --epochs {args.epochs} --lr {args.lr:g}"
    result = {"command": command, "calibration": calibration}
    result["training_wall_s_this_run"] = round(trained_s, 1)
    for label, calc in (
        ("committee", EquivariantCalculator(committee)),
        ("llpr", EquivariantCalculator(args.name)),
    ):
        valid = per_structure(calc, sets["valid"])
        thresholds = {
            q: float(np.percentile(valid["max_u"], p)) for q, p in (("p95", 95), ("p90", 90))
        }
        result[label] = {
            "valid_thresholds_eV_per_A": thresholds,
            "valid_spearman_mean_u": float(spearmanr(valid["mean_u"], valid["rmse"])[0]),
            "test": figures(per_structure(calc, sets["test"]), thresholds),
        }
        print(label, json.dumps(result[label]), flush=True)
    path = ROOT / "benchmarks" / "results" / f"2026-12-01-{kind}-{args.name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(path)


if __name__ == "__main__":
    main()
