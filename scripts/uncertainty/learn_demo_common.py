"""What the two on-the-fly learning demonstrations share (``learn_demo_metals.py``,
``learn_demo_molecules.py``): the two strategies with the same budget, the test errors, the MD
stability check, the results files.

Two strategies, each one :func:`ase_equi.learning.learn_on_the_fly` run from the same start
(positions, momenta), with the same MD, reference, fine-tuning settings, replay and budget K:

- ``on_the_fly``: a reference call when the largest atomic ``forces_uncertainty`` (LLPR of the
  zoo model, refitted after each call) passes the threshold;
- ``every_nth``: a reference call every N = steps // K steps, whatever the uncertainty.

Both resume after a kill (the loop's own checkpoint); the wall time of each is summed over the
invocations that ran steps (``wall.json`` in its folder).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from ase.md.verlet import VelocityVerlet

import ase_equi.learning as learning
from ase_equi import EquivariantCalculator
from ase_equi.errors import ReferenceFailed
from ase_equi.io.model_file import read_header
from ase_equi.learning import LearnResult, learn_on_the_fly, plot_learning
from ase_equi.learning_retraining import RefitRate, parent_card, retraining_config
from ase_equi.model.prediction_rigidity import JACOBIAN_RANK4

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
#: where ``llpr_rank_form.py NAME --write`` puts the zoo model's copy with the rank-4 form
JACOBIAN_DIR = Path("runs") / "llpr-jacobian"
STRATEGIES = ("on_the_fly", "every_nth")
PARENT = "the parent's last training stage (learn_on_the_fly's default)"
PLAIN = "TrainConfig's 1 : 100 : 1 (the ablation, --plain-weights)"
UNPACED = "none: calls whenever a window is flagged (the ablation, --unpaced)"
RATE = "per call from the force error on the labelled structure (learn_on_the_fly's default)"
BROKEN_BOND = 2.0  # Å: a bond of the start structure stretched beyond this counts as broken
FIXED_LR = 0.005  # the earlier default, at every call (the ablation, --fixed-lr)


def add_ablations(parser: argparse.ArgumentParser) -> None:
    """``--seed`` (start momenta), ``--plain-weights`` and ``--unpaced`` (the two ablations)."""
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the start momenta (a replicate if not 0)"
    )
    parser.add_argument(
        "--plain-weights",
        action="store_true",
        help="ablation: retrain with TrainConfig's loss weights 1 : 100 : 1, not the parent's",
    )
    parser.add_argument(
        "--fixed-lr",
        action="store_true",
        help=f"ablation: retrain at lr {FIXED_LR} at every call (the earlier default; its runs "
        "keep their earlier names, without '-rate')",
    )
    parser.add_argument(
        "--rate-ceiling",
        type=float,
        default=None,
        help="ablation: the error-scaled rate's ceiling (default: RefitRate.from_card's, the "
        "first stage's rate at most 5e-3; 0.01 = the first stage's, as first shipped)",
    )
    parser.add_argument(
        "--selection",
        choices=("llpr", JACOBIAN_RANK4),
        default="llpr",
        help="the uncertainty on the fly acts on: the model's shipped LLPR estimate, or the "
        "rank-4 Jacobian form (a copy of the model written by llpr_rank_form.py --write "
        f"{JACOBIAN_DIR}; its results under '-{JACOBIAN_RANK4.replace('_', '')}')",
    )
    parser.add_argument(
        "--unpaced",
        action="store_true",
        help="ablation: no pacing of the budget (a call at every flagged window's end)",
    )


def selection_model(name: str, config: dict[str, Any]) -> str:
    """The model the on-the-fly strategy runs: zoo model ``name``, or for ``--selection
    jacobian_rank4`` its copy with the rank-4 form (then the threshold is that copy's card's
    validation p95 and the replay set, given by path, is the zoo model's shipped one)."""
    if config["selection"] == "llpr":
        return name
    path = ROOT / JACOBIAN_DIR / f"{name}.json"
    if not path.is_file():
        raise SystemExit(
            f"{path.relative_to(ROOT)} is missing: first run "
            f"OMP_NUM_THREADS=1 python scripts/uncertainty/llpr_rank_form.py {name} "
            f"--write {JACOBIAN_DIR}"
        )
    card = json.loads(path.read_text())["card"]
    config["threshold"] = float(card["uncertainty"]["uncertainty_threshold_eV_per_A"]["valid_p95"])
    config["threshold_from"] = f"{JACOBIAN_DIR}/{name}.json card, valid_p95 of the rank-4 form"
    config["replay"] = f"models/{name}-replay.xyz.xz"  # relative to the repository
    return str(path)


def apply_ablations(
    args: argparse.Namespace, config: dict[str, Any], out: Path, stem: str
) -> tuple[Path, str, str]:
    """Record the seed and ablations in ``config``; switch the pacing off for ``--unpaced``
    (``budget_so_far`` of the loop then releases the whole budget at once); the run's folder,
    results stem and the command-line flags to print."""
    config["start_momenta_seed"] = args.seed
    config["loss_weights"] = PLAIN if args.plain_weights else PARENT
    config["lr"] = FIXED_LR if args.fixed_lr else RATE
    if args.rate_ceiling is not None and args.fixed_lr:
        raise SystemExit("--rate-ceiling caps the error-scaled rate: it has no use with --fixed-lr")
    if args.rate_ceiling is not None:
        config["lr"] += f", at most {args.rate_ceiling:g}"
        config["rate_ceiling"] = args.rate_ceiling
    if args.unpaced:
        config["pace"] = UNPACED
        learning.budget_so_far = lambda max_calls, step, steps: max_calls
    config["selection"] = args.selection
    flags = [("--plain-weights", args.plain_weights), ("--unpaced", args.unpaced)]
    suffix = "".join(f"-{flag[2:].replace('-', '')}" for flag, on in flags if on)
    if args.selection != "llpr":
        suffix += f"-{args.selection.replace('_', '')}"
    suffix += "" if args.fixed_lr else "-rate"
    suffix += f"-ceiling{args.rate_ceiling:g}" if "rate_ceiling" in config else ""
    suffix += f"-seed{args.seed}" if args.seed else ""
    flags.append(("--fixed-lr", args.fixed_lr))
    command = (
        (f" --seed {args.seed}" if args.seed else "")
        + (f" --selection {args.selection}" if args.selection != "llpr" else "")
        + (f" --rate-ceiling {args.rate_ceiling:g}" if "rate_ceiling" in config else "")
        + "".join(f" {flag}" for flag, on in flags if on)
    )
    return out.with_name(out.name + suffix), stem + suffix, command


def run_strategy(
    name: str, atoms: Atoms, model: str, reference: Any, out: Path, settings: dict[str, Any]
) -> dict[str, Any]:
    """One strategy (``on_the_fly`` or ``every_nth``) with ``settings`` (steps, timestep_fs,
    budget, threshold, epochs, lr, replay_count); its log summary and wall time (s)."""
    folder = out / name
    trigger = (
        {"threshold": settings["threshold"], "min_interval": settings.get("min_interval")}
        if name == "on_the_fly"
        else {"every": settings["steps"] // settings["budget"]}
    )
    card = None if settings.get("loss_weights") == PLAIN else parent_card(model)
    lr = settings["lr"]
    ceiling = settings.get("rate_ceiling")
    refit_lr = lr if isinstance(lr, float) else RefitRate.from_card(parent_card(model), ceiling)
    wall_file = folder / "wall.json"
    wall = json.loads(wall_file.read_text()) if wall_file.exists() else {"seconds": 0.0}
    state = folder / "state.json"
    done = json.loads(state.read_text())["step"] if state.exists() else 0
    started = time.perf_counter()
    failed = None
    try:
        result = learn_on_the_fly(
            atoms.copy(),
            model,
            reference,
            out=folder,
            steps=settings["steps"],
            timestep_fs=settings["timestep_fs"],
            max_calls=settings["budget"],
            replay=ROOT / settings["replay"] if "replay" in settings else "auto",
            replay_count=settings["replay_count"],
            train_config=retraining_config(settings["epochs"], parent_card=card),
            refit_lr=refit_lr,
            **trigger,
        )
    except ReferenceFailed as exc:  # the run stops there; its models so far are measured
        state_now = json.loads(state.read_text())
        failed = {
            "at_step": state_now["step"] + 1,
            "message": str(exc).replace(str(ROOT) + "/", ""),
        }
        in_out = state_now.get("model_in_out")
        model_now = folder / in_out if in_out else Path(state_now["model"])
        result = LearnResult(state_now["step"], state_now["calls"], model_now, "")
    if done < settings["steps"] and not (failed and result.steps == done):  # retries: not counted
        wall["seconds"] += time.perf_counter() - started
        folder.mkdir(parents=True, exist_ok=True)
        wall_file.write_text(json.dumps(wall))
    plot_learning(folder, folder / "learning.png")
    u = np.loadtxt(folder / "uncertainty.txt", ndmin=2)
    return {
        "trigger": trigger,
        "calls": len(result.calls),
        "call_steps": [c["step"] for c in result.calls],
        "calls_detail": relative(result.calls),
        "final_model": str(Path(result.model).relative_to(ROOT)),
        "replay": result.replay,
        "wall_s": round(wall["seconds"], 1),
        "max_uncertainty_first_last_100_steps": [float(u[:100, 2].max()), float(u[-100:, 2].max())],
        **({"reference_failed": failed} if failed else {}),
    }


def relative(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The call log with each model path relative to the repository (no machine paths in the
    results)."""
    return [{**c, "model": str(Path(c["model"]).relative_to(ROOT))} for c in calls]


def errors_on(model: str, frames: list[Atoms]) -> dict[str, float]:
    """Force RMSE and largest atomic force error (eV/Å), energy MAE (meV/atom) of ``model``
    against the labels of ``frames``."""
    calc = EquivariantCalculator(model)
    diffs, e_err, worst = [], [], 0.0
    for atoms in frames:
        work = atoms.copy()
        work.calc = calc
        d = work.get_forces() - atoms.get_forces()
        diffs.append(d)
        worst = max(worst, float(np.linalg.norm(d, axis=1).max()))
        e_err.append(abs(work.get_potential_energy() - atoms.get_potential_energy()) / len(atoms))
    all_d = np.concatenate(diffs)
    return {
        "force_rmse_eV_per_A": float(np.sqrt(np.mean(all_d**2))),
        "max_atomic_force_error_eV_per_A": worst,
        "energy_mae_meV_per_atom": 1000 * float(np.mean(e_err)),
        "frames": len(frames),
    }


def stability(
    model: str,
    atoms: Atoms,
    steps: int,
    timestep_fs: float,
    bonds: list[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """NVE velocity Verlet of ``atoms`` (their momenta) with ``model``: the largest drift of
    the total energy (meV/atom), the smallest interatomic distance (Å), the mean temperature
    (K); ``stable`` False at the first step with a distance under 0.6 Å or a NaN, or with one
    of ``bonds`` (atom pairs) longer than :data:`BROKEN_BOND` (then ``longest_bond_A``, the
    longest of them, is reported too)."""
    work = atoms.copy()
    work.calc = EquivariantCalculator(model)
    dyn = VelocityVerlet(work, timestep=timestep_fs * units.fs)
    e0 = work.get_total_energy()
    drift, d_min, temps, longest = 0.0, np.inf, [], 0.0
    for step in range(steps):
        dyn.run(1)
        e = work.get_total_energy()
        d = work.get_all_distances(mic=bool(work.pbc.any()))
        d_min = min(d_min, float(d[np.triu_indices(len(work), 1)].min()))
        longest = max([longest, *(float(d[i, j]) for i, j in bonds or [])])
        if not np.isfinite(e) or d_min < 0.6 or longest > BROKEN_BOND:
            failed = {"stable": False, "failed_at_step": step + 1, "min_distance_A": d_min}
            return {**failed, **({"longest_bond_A": longest} if bonds else {})}
        drift = max(drift, abs(e - e0))
        temps.append(work.get_temperature())
    bonded = {"longest_bond_A": longest} if bonds else {}
    return {
        "stable": True,
        "steps": steps,
        "max_energy_drift_meV_per_atom": 1000 * drift / len(work),
        "min_distance_A": d_min,
        "mean_temperature_K": float(np.mean(temps)),
        **bonded,
    }


def weights_sha(model: str) -> str:
    """The SHA-256 of a model file's weights (its header's ``weights_sha256``)."""
    path = ROOT / "models" / f"{model}.json" if not model.endswith(".json") else Path(model)
    return str(read_header(path)["weights_sha256"])


class CachedReference(Calculator):
    """An ASE calculator that asks ``compute(atoms) -> (energy eV, forces eV/Å)`` once per
    structure and keeps every answer in ``folder`` (one ``.npz`` per structure, named by the
    SHA-256 of its numbers and positions), so that a killed run loses no reference result."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, compute: Any, folder: Path) -> None:
        super().__init__()
        self.compute, self.folder = compute, folder
        self.computed = 0  # reference evaluations made (not read from the cache)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        key = hashlib.sha256(
            self.atoms.numbers.tobytes() + np.ascontiguousarray(self.atoms.positions).tobytes()
        ).hexdigest()[:24]
        path = self.folder / f"{key}.npz"
        if not path.exists():
            energy, forces = self.compute(self.atoms.copy())
            self.folder.mkdir(parents=True, exist_ok=True)
            np.savez(path.with_suffix(".tmp.npz"), energy=energy, forces=forces)
            path.with_suffix(".tmp.npz").replace(path)
            self.computed += 1
        with np.load(path) as data:
            self.results = {"energy": float(data["energy"]), "forces": data["forces"].copy()}


def markdown(title: str, intro: list[str], result: dict[str, Any]) -> str:
    """The results file for people: settings, then one row per model on the test set."""
    lines = [f"# {title}", "", *intro, "", "```", json.dumps(result["settings"]), "```", ""]
    if "partial" in result:
        steps = {k: v["steps_done"] for k, v in result["strategies"].items()}
        lines += [f"**Partial**: {result['partial']} (steps done: {steps}).", ""]
    lines += [
        "| model | reference calls | call steps | wall (s) | test force RMSE (eV/Å) | "
        "largest atomic force error (eV/Å) | test energy MAE (meV/atom) | NVE stability |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in (("parent", "parent (zoo)"), ("on_the_fly", "on the fly (LLPR)"),
                       ("window_only", "on the fly, labelled frames not kept apart (run 1)"),
                       ("spaced_full", "on the fly, labelled frames 50 steps apart (run 2)"),
                       ("every_nth", "every N-th step"),
                       ("every_nth_same_calls", "every N-th step, its model after as many "
                        "calls as on the fly made")):  # fmt: skip
        if key not in result["test"]:
            continue
        s = result["strategies"].get(key, {})
        if key == "every_nth_same_calls":
            s = {**result["strategies"]["every_nth"], "compared_after_calls": result["same_calls"]}
            s["wall_s"] = "–"
        calls = s.get("compared_after_calls", s.get("calls", 0))
        t, st = result["test"][key], result["stability"][key]
        bond = f", longest bond {st['longest_bond_A']:.2f} Å" if "longest_bond_A" in st else ""
        stable = (
            f"stable, drift {st['max_energy_drift_meV_per_atom']:.2g} meV/atom, "
            f"d_min {st['min_distance_A']:.2f} Å{bond}"
            if st["stable"]
            else f"failed at step {st['failed_at_step']}{bond}"
        )
        stable += f" ({st.get('steps', st.get('failed_at_step'))} steps)" if st["stable"] else ""
        lines.append(
            f"| {label} | {calls} | {s.get('call_steps', [])[:calls]} | "
            f"{s.get('wall_s', '–')} | {t['force_rmse_eV_per_A']:.4f} | "
            f"{t['max_atomic_force_error_eV_per_A']:.3f} | {t['energy_mae_meV_per_atom']:.2f} | "
            f"{stable} |"
        )
    for key, s in result["strategies"].items():
        if "reference_failed" in s:
            f = s["reference_failed"]
            lines += ["", f"**{key} stopped at step {f['at_step']}**: {f['message']}"]
    return "\n".join(lines) + "\n"


def compared_models(
    parent: str, result: dict[str, Any], out: Path, partial: bool
) -> dict[str, str]:
    """The models to test: the parent, each strategy's final model and, when on the fly made
    fewer calls than every N-th, every N-th's model after as many calls (``result["same_calls"]``
    records that number)."""
    models = {"parent": parent}
    strategies = result["strategies"].items()
    models.update({k: str(ROOT / v["final_model"]) for k, v in strategies if v["final_model"]})
    k = result["strategies"]["on_the_fly"]["calls"]
    if not partial and 0 < k < result["strategies"]["every_nth"]["calls"]:  # equal calls
        models["every_nth_same_calls"] = str(out / "every_nth" / f"model-{k}.json")
        result["same_calls"] = k
    return models


def so_far(out: Path) -> dict[str, Any]:
    """Each strategy's progress from its folder (no MD run): the steps done, the calls and the
    model after the same number k of calls in both (the smaller count), for a comparison at
    an equal budget while the runs are unfinished."""
    logs = {}
    for name in STRATEGIES:
        state = json.loads((out / name / "state.json").read_text())
        wall = out / name / "wall.json"
        logs[name] = {
            "steps_done": state["step"],
            "calls": len(state["calls"]),
            "call_steps": [c["step"] for c in state["calls"]],
            "calls_detail": relative(state["calls"]),
            "wall_s": json.loads(wall.read_text())["seconds"] if wall.exists() else None,
        }
    k = min(s["calls"] for s in logs.values())
    for name, s in logs.items():
        s["compared_after_calls"] = k
        s["final_model"] = str((out / name / f"model-{k}.json").relative_to(ROOT)) if k else ""
    return logs
