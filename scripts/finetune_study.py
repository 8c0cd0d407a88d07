"""Fine-tuning with the defaults against training from scratch, on "user" data sets at a level
of theory other than the parent's.

The parent is the zoo model ``metals`` (ASE EMT). Each user data set is labelled by ASE's EMT
with **modified parameters** (``ase.calculators.emt.parameters``), so its equation of state
differs from the parent's:

- ``cu-s0x1.05``: copper with the neighbour-distance parameter s0 × 1.05 (lattice constant
  about +5 %);
- ``ni-s0x0.97-v0x1.3``: nickel with s0 × 0.97 and V0 × 1.3 (smaller, stiffer);
- ``au-e0x1.2-eta2x0.9``: gold with E0 × 1.2 and eta2 × 0.9 (another cohesive energy and
  curvature).

A fifth set, ``molecules-gfn2``, fine-tunes ``molecules-pbe`` on GFN2-xTB labels of molecules
of its own domain (``finetune_user_sets.py``: no cell, so no stress and no equation of state).

Each EMT set (about 150 frames): an 11-point volume scan of the 4-atom fcc cell, strained and
rattled 8-atom cells, rattled 32-atom cells, vacancies and (111) slabs. For each set:

- **fine-tuned**: ``finetune("metals", data, out=..., level_of_theory=...)`` and nothing else
  (the defaults; ``--epochs`` only when asked);
- **from scratch**: ``train()`` of the parent's architecture with the training defaults and the
  same number of epochs and split.

Reported: test errors (E, F, σ) on the user test split, lattice constant and bulk modulus of
the volume scan against the labels, force MAE per element on the parent's test set (the
forgetting; the parent's own numbers beside them), and time. Every run checkpoints in
``--out``; rerunning resumes and skips finished runs.

    OMP_NUM_THREADS=1 python scripts/finetune_study.py --out runs/finetune-study
    python scripts/finetune_study.py --out runs/finetune-study --table  # the markdown table

Screening a variant of the defaults: ``--option KEY=JSON`` (repeatable) passes a fine-tuning
option, ``--scratch-from DIR`` takes the data and the from-scratch result of an earlier study
with the same epochs instead of training it again (``--no-scratch``: none at all)::

    OMP_NUM_THREADS=1 python scripts/finetune_study.py --out runs/ft-screen-a --epochs 8 \
        --sets ni-s0x0.97-v0x1.3 --option trunk_lr_scale=1.0 --scratch-from runs/finetune-study-v2

``--summary`` prints one README row per finished set (test MAE E / F / σ, lattice-constant
errors, the worst forgetting ratio); the parent pull's λ (``--option parent_pull=...``) is in
each set's ``result.json`` and table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import time
from pathlib import Path

import ase.calculators.emt as emt
import ase.io
import numpy as np
from ase.build import bulk, fcc111
from ase.calculators.singlepoint import SinglePointCalculator
from finetune_user_sets import OTHER_SETS

QUANT = ("energy", "forces", "stress")
SETS = {
    "cu-s0x1.05": ("Cu", {1: 1.05}),
    "ni-s0x0.97-v0x1.3": ("Ni", {1: 0.97, 2: 1.3}),
    "au-e0x1.2-eta2x0.9": ("Au", {0: 1.2, 3: 0.9}),
    # the hold-out set: not looked at while the defaults were chosen
    "pd-s0x1.06-v0x0.8": ("Pd", {1: 1.06, 2: 0.8}),
}


@contextlib.contextmanager
def modified_emt(symbol: str, factors: dict[int, float]):
    """ASE's EMT with parameters of ``symbol`` scaled (index in EMT's parameter tuple)."""
    old = emt.parameters[symbol]
    emt.parameters[symbol] = tuple(v * factors.get(k, 1.0) for k, v in enumerate(old))
    try:
        yield emt.EMT
    finally:
        emt.parameters[symbol] = old


def _label(atoms, calc_class, kind: str):
    atoms.calc = calc_class()
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)
    atoms.info["config_type"] = kind
    return atoms


def _lattice_constant(symbol: str, calc_class) -> float:
    from ase.eos import EquationOfState

    a_ref = bulk(symbol).cell.cellpar()[0] * 2**0.5
    scale = np.linspace(0.9, 1.12, 23)
    vols, energies = [], []
    for s in scale:
        atoms = bulk(symbol, "fcc", a=a_ref * s, cubic=True)
        atoms.calc = calc_class()
        vols.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    v0 = EquationOfState(vols, energies).fit()[0]
    return float((v0) ** (1 / 3))


def make_set(name: str, path: Path, seed: int = 0) -> dict:
    """Write the user data set ``name`` (extxyz) and return what its labels' EOS is."""
    symbol, factors = SETS[name]
    rng = np.random.default_rng(seed)
    with modified_emt(symbol, factors) as calc:
        a0 = _lattice_constant(symbol, calc)
        images = []
        for s in np.linspace(0.94, 1.06, 11):  # volume scan
            images.append(_label(bulk(symbol, "fcc", a=a0 * s, cubic=True), calc, "eos"))
        for _ in range(80):  # strained, rattled 8-atom cells
            atoms = bulk(symbol, "fcc", a=a0, cubic=True).repeat((2, 1, 1))
            strain = np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))
            atoms.set_cell(atoms.cell @ (strain + strain.T) / 2, scale_atoms=True)
            atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
            images.append(_label(atoms, calc, "bulk_strained"))
        for _ in range(30):  # rattled 32-atom cells
            atoms = bulk(symbol, "fcc", a=a0 * rng.uniform(0.98, 1.02), cubic=True).repeat(2)
            atoms.rattle(0.1, seed=int(rng.integers(1 << 30)))
            images.append(_label(atoms, calc, "bulk_hot"))
        for _ in range(15):  # vacancies
            atoms = bulk(symbol, "fcc", a=a0, cubic=True).repeat(2)
            del atoms[int(rng.integers(len(atoms)))]
            atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
            images.append(_label(atoms, calc, "vacancy"))
        for _ in range(15):  # (111) slabs
            atoms = fcc111(symbol, (2, 2, 4), a=a0, vacuum=6.0, periodic=True)
            atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
            images.append(_label(atoms, calc, "surface_111"))
    for atoms in images:
        atoms.info["level_of_theory"] = f"ASE EMT, {symbol} parameters scaled {factors}"
    ase.io.write(path, images, format="extxyz")
    return {"symbol": symbol, "factors": factors, "a0_labels_generation": a0, "frames": len(images)}


def _scan_fit(model, frames):
    from ase_equi.training.adaptation import predict_energies
    from ase_equi.training.finetune_eos import find_volume_scan, fit_eos

    scan = find_volume_scan(frames)
    if not scan:
        return None
    try:
        return fit_eos(scan, predict_energies(model, scan))
    except (RuntimeError, ValueError) as err:
        return {"error": str(err)}


def _earlier(name: str, scratch_from: Path | None) -> dict | None:
    """The result of set ``name`` in the earlier study ``scratch_from``, or None."""
    path = scratch_from / name / "result.json" if scratch_from else None
    if path is None or not path.exists():
        return None
    return json.loads(path.read_text())


def run_set(
    name: str,
    out: Path,
    epochs: int | None,
    options: dict | None = None,
    scratch_from: Path | None = None,
    scratch: bool = True,
    parent: str = "metals",
) -> dict:
    """Fine-tune (the defaults, plus ``options``) and train from scratch on set ``name`` (or
    take that from ``scratch_from``); cached in JSON."""
    from ase_equi import finetune
    from ase_equi.data import read_frames
    from ase_equi.training.finetune_eos import find_volume_scan, fit_eos

    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    data = folder / "data.xyz"
    earlier = _earlier(name, scratch_from)
    if earlier is not None and not data.exists():
        shutil.copy(scratch_from / name / "data.xyz", data)
    zoo, generator = OTHER_SETS.get(name, ("metals", lambda path: make_set(name, path)))
    parent = zoo if parent == "metals" else parent  # a set of another zoo parent: that parent
    info = generator(data) if not data.exists() else {}
    frames = read_frames(data)
    level = ase.io.read(data, 0).info["level_of_theory"]
    extra = {**({} if epochs is None else {"epochs": epochs}), **(options or {})}
    started = time.perf_counter()
    if parent != zoo:  # a copy of the zoo model's file elsewhere: its shipped sets, named
        from ase_equi.training.replay import zoo_sets

        replay, test = zoo_sets(zoo)
        extra = {"replay_data": str(replay), "parent_test_data": str(test), **extra}
    ft = finetune(
        parent, str(data), out=folder / "finetuned", level_of_theory=level, verbose=False, **extra
    )
    t_ft = time.perf_counter() - started
    n_epochs = ft.train_result.history[-1]["epoch"] if ft.train_result.history else epochs
    scan = find_volume_scan(frames)  # none for molecules
    labels = fit_eos(scan, np.array([f.energy for f in scan])) if scan else None
    if earlier is not None and earlier["epochs"] == int(n_epochs):  # its scratch: as many
        from_scratch = {**earlier["scratch"], "from": str(scratch_from)}
    elif scratch:
        from_scratch = _from_scratch(folder, data, frames, level, int(n_epochs), parent)
    else:
        from_scratch = {"test": {}, "eos": None, "seconds": None}
    result = {
        "set": name,
        **info,
        "epochs": int(n_epochs),
        "labels_eos": labels,
        "finetuned": {
            "test": ft.report["new_test"]["after"],
            "before": ft.report["new_test"]["before"],
            "eos": ft.report.get("eos", {}).get("after"),
            "eos_before": ft.report.get("eos", {}).get("before"),
            "forgetting": ft.report.get("parent_test", {}).get("after_per_element"),
            "parent_per_element": ft.report.get("parent_test", {}).get("before_per_element"),
            "seconds": round(t_ft, 1),
            "defaults": ft.report["defaults"],
            "replay": ft.report["replay"],
            "parent_pull": ft.report.get("parent_pull", {}),
            "options": options or {},
            "parent_test": ft.report.get("parent_test", {}),
            "history": ft.train_result.history,
        },
        "scratch": from_scratch,
    }
    done.write_text(json.dumps(result, indent=2))
    return result


def _from_scratch(folder: Path, data: Path, frames, level: str, epochs: int, parent: str) -> dict:
    """Train the parent's architecture on the set's elements from scratch (training defaults)."""
    from ase_equi import load_model, train
    from ase_equi.data import split_frames
    from ase_equi.training import TrainConfig
    from ase_equi.training.finetune_report import measure_errors

    parent = load_model(parent)
    cfg = TrainConfig(epochs=epochs, output_dir=str(folder / "scratch"), plots=False)
    started = time.perf_counter()
    symbol_z = sorted({int(z) for f in frames for z in f.atoms.numbers})
    # the parent's architecture, the data's elements; E0, scale, shift fitted by train()
    fresh = dataclasses.replace(parent.config, elements=tuple(symbol_z), reference_energies=None)
    scratch = train(fresh, str(data), cfg, name="scratch", level_of_theory=level, verbose=False)
    seconds = time.perf_counter() - started
    split = split_frames(frames, valid_fraction=0.1, test_fraction=0.1, seed=0)
    test = [frames[k] for k in split["test"]]
    return {
        "test": measure_errors(scratch.model, test),
        "eos": _scan_fit(scratch.model, frames),
        "seconds": round(seconds, 1),
    }


def probe(folder: Path) -> dict:
    """Errors of a fine-tune still running in ``folder``: the EMA weights of its newest
    checkpoint, the new head on the set's test split, the parent's head per element on the
    parent's shipped test set (meV units)."""
    from ase_equi.data import read_frames, split_frames
    from ase_equi.model.config import ModelConfig
    from ase_equi.model.mace import MaceModel
    from ase_equi.training.checkpoint_file import load_checkpoint
    from ase_equi.training.finetune_report import _per_element, measure_errors
    from ase_equi.training.replay import zoo_sets

    state = load_checkpoint(folder / "finetuned" / "checkpoints" / "last.pt")
    model = MaceModel(ModelConfig.from_dict(state["model_config"]), init_coupling=False)
    model = model.double()
    model.load_state_dict(state["ema"])
    model.eval()
    frames = read_frames(folder / "data.xyz")
    split = split_frames(frames, valid_fraction=0.1, test_fraction=0.1, seed=0)
    model.active_head = 1
    new = measure_errors(model, [dataclasses.replace(frames[k], head=1) for k in split["test"]])
    own = read_frames(zoo_sets("metals")[1], elements=model.config.elements)
    model.active_head = 0
    forgetting = _per_element(model, [dataclasses.replace(f, head=0) for f in own])
    return {
        "epoch": state["epoch"],
        "step": state["step"],
        "new_test": new,
        "parent_head": forgetting,
    }


def table(results: list[dict]) -> str:
    """The markdown tables of the study."""
    lines = []
    for r in results:
        f, s, lab = r["finetuned"], r["scratch"], r["labels_eos"]
        lines += [f"### {r['set']} ({r['epochs']} epochs)", ""]
        lines += ["| | parent after E0 refit | fine-tuned (defaults) | from scratch |"]
        lines += ["|---|---|---|---|"]
        for q, unit in (("energy", "meV/atom"), ("forces", "meV/Å"), ("stress", "meV/Å³")):
            key = f"{q}_mae"
            cells = [f"{d.get(key, float('nan')):.3g}" for d in (f["before"], f["test"], s["test"])]
            lines.append(f"| test {q} MAE ({unit}) | " + " | ".join(cells) + " |")

        def eos(d, k, lab=lab):
            if not d or k not in d:
                return "no minimum"
            rel = 100 * (d[k] / lab[k] - 1)
            return f"{d[k]:.4g} ({rel:+.2f} %)"

        for k, label in (("a0", "lattice constant a0 (Å)"), ("B", "bulk modulus (GPa)")):
            if lab is None:  # no volume scan in the data (molecules)
                continue
            lines.append(
                f"| {label}, labels {lab[k]:.4g} | {eos(f['eos_before'], k)} | "
                f"{eos(f['eos'], k)} | {eos(s['eos'], k)} |"
            )
        if f["forgetting"]:
            per = ", ".join(
                f"{z} {f['parent_per_element'][z]:.3g} → {v:.3g}"
                for z, v in f["forgetting"].items()
            )
            lines.append(
                f"| forgetting: parent-test force MAE (meV/Å), parent → parent head | {per} | | |"
            )
            ratio = {z: v / f["parent_per_element"][z] for z, v in f["forgetting"].items()}
            worst = max(ratio, key=ratio.get)
            lines.append(
                f"| forgetting: largest ratio (goal ≤ 1.5) | | {ratio[worst]:.2f} ({worst}) | |"
            )
        lines.append(f"| time (s, one thread) | | {f['seconds']} | {s['seconds']} |")
        lines += [
            "",
            f"Defaults: {json.dumps({k: v['value'] for k, v in f['defaults'].items()})}; "
            f"replay: {f['replay'].get('count')} frames from {f['replay'].get('source')}"
            f"; parent pull λ = {_strength(f)}.",
            "",
        ]
    return "\n".join(lines)


def _strength(f: dict):
    """λ of the parent pull of a fine-tune (from its report; else as given)."""
    pull = f.get("parent_pull") or {}
    return pull.get("strength", f.get("options", {}).get("parent_pull", "not recorded"))


def summary(results: list[dict]) -> str:
    """One row per set, as in the README: test MAE E / F / σ fine-tuned and from scratch, the
    lattice-constant errors, the worst forgetting ratio (parent head over parent, per element)."""
    lines = [
        "| user data | fine-tuned (defaults) | from scratch | a0: fine-tuned / scratch "
        "| forgetting |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        f, s, lab = r["finetuned"], r["scratch"], r["labels_eos"]
        cells = []
        for d in (f["test"], s["test"]):
            cells.append(" / ".join(f"{d.get(f'{q}_mae', float('nan')):.3g}" for q in QUANT))

        def a0(d, lab=lab):
            if lab is None:
                return "n/a"
            return f"{100 * (d['a0'] / lab['a0'] - 1):+.2f}" if d and "a0" in d else "none"

        ratio = {z: v / f["parent_per_element"][z] for z, v in (f["forgetting"] or {}).items()}
        worst = max(ratio, key=ratio.get) if ratio else None
        forget = f"{ratio[worst]:.2f}× ({worst})" if worst else "–"
        lines.append(
            f"| {r['set']} ({r['epochs']} epochs) | {cells[0]} | {cells[1]} | "
            f"{a0(f['eos'])} / {a0(s['eos'])} % | {forget} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/finetune-study")
    parser.add_argument("--sets", nargs="*", default=[*SETS, *OTHER_SETS])
    parser.add_argument("--epochs", type=int, help="(default: fine-tuning's default)")
    parser.add_argument("--table", action="store_true", help="print the tables of finished sets")
    parser.add_argument("--summary", action="store_true", help="one README row per finished set")
    parser.add_argument(
        "--option", action="append", default=[], help="KEY=JSON: a fine-tuning option"
    )
    parser.add_argument("--scratch-from", type=Path, help="earlier study: data + from-scratch")
    parser.add_argument("--no-scratch", action="store_true", help="no from-scratch training")
    parser.add_argument("--probe", action="store_true", help="errors of running fine-tunes")
    parser.add_argument("--parent", default="metals", help="the zoo name, or a copy of its file")
    args = parser.parse_args()
    options = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
    out = Path(args.out)
    results = []
    for name in args.sets:
        if args.probe:
            if (out / name / "finetuned" / "checkpoints" / "last.pt").exists():
                print(name, json.dumps(probe(out / name)), flush=True)
            continue
        if args.table or args.summary:
            path = out / name / "result.json"
            if path.exists():
                results.append(json.loads(path.read_text()))
            continue
        results.append(
            run_set(
                name,
                out,
                args.epochs,
                options,
                args.scratch_from,
                not args.no_scratch,
                args.parent,
            )
        )
        print(table(results[-1:]), flush=True)
    if args.table:
        print(table(results))
    if args.summary:
        print(summary(results))


if __name__ == "__main__":
    main()
