"""Does the metals model's 5 Å cutoff limit its elastic constants? One element, two cutoffs.

    export OMP_NUM_THREADS=1
    python scripts/zoo/metals_cutoff_study.py train --r-max 5.0     # runs/metals-cutoff/Al-r5
    python scripts/zoo/metals_cutoff_study.py train --r-max 6.0     # runs/metals-cutoff/Al-r6
    python scripts/zoo/metals_cutoff_study.py report                # → benchmarks/results/

ASE's EMT smooths its pair sums to zero around ``rc`` = β s0 (√3 + 2)/2 (a Fermi function
centred there, zero by ``rr`` = 4 rc / (√3 + 2)), with s0 the largest Wigner–Seitz radius of
all its elements (``asap_cutoff`` off, the default): rc = 5.377 Å for every element (``EMT().rc``
after a calculation; an earlier version of this text gave each element its own rc, 4.64–5.38 Å,
which is ASE's ``asap_cutoff=True``). The third neighbour shell of Al, Ag, Au, Pd and Pt
(4.76–4.99 Å) lies where a 5 Å model's radial envelope is nearly zero. The
metals zoo model (r_max 5 Å) misses C11/C12 of Al and C44 of Pt and Pd by 3–6.5 %, and adding
near-equilibrium strain frames (set v3, stage 4) did not move them.

This study trains two models of the zoo's architecture on the same frames — every pure-Al
frame of set v3 (``data/metals-emt-v3.xyz.xz``) — from the same seed and settings (stage 1
of ``train_zoo.py``: 40 epochs here), differing only in ``r_max`` (5 Å or 6 Å), and reports
each one's test errors and its a0, C11, C12, C44 against EMT's (``physics``'s checks, as
on the card). Each ``train`` resumes. ``--strain-weight W`` trains a third kind: r_max 5 Å
with the homogeneously strained cells' squared errors weighted by W (does a loss that asks
for the small-strain response get it?).

    python scripts/zoo/metals_cutoff_study.py train --r-max 5.0 --strain-weight 100
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write

sys.path.insert(0, str(Path(__file__).resolve().parent))
from physics import cubic_elastic_constants, equation_of_state
from train_zoo import COMMON_ARCHITECTURE, COMMON_SETTINGS

from ase_equi import EquivariantCalculator, ModelConfig, TrainConfig, train
from ase_equi.data import read_frames, read_structures

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "runs" / "metals-cutoff"
ELEMENT, Z, A_GUESS = "Al", 13, 4.0
EPOCHS = 40
RESULT = ROOT / "benchmarks" / "results" / "2026-11-30-metals-cutoff"


def frames_path() -> Path:
    """Every frame of set v3 made of ``ELEMENT`` alone, written once to ``RUNS``."""
    path = RUNS / f"{ELEMENT}-frames.xyz"
    if not path.exists():
        frames = [
            a
            for a in (s.atoms for s in read_structures(ROOT / "data" / "metals-emt-v3.xyz.xz"))
            if set(a.numbers) == {Z} and len(a) > 1
        ]
        RUNS.mkdir(parents=True, exist_ok=True)
        write(path, frames, format="extxyz")
    return path


def run_name(r_max: float, strain_weight: float) -> str:
    weight = "" if strain_weight == 1.0 else f"-w{strain_weight:g}"
    return f"{ELEMENT}-r{r_max:g}{weight}"


def train_one(r_max: float, strain_weight: float) -> None:
    """Train one model; with ``strain_weight`` ≠ 1 the homogeneously strained cells of set v3
    (``config_type`` ``elastic``) have their squared errors weighted by it."""
    name = run_name(r_max, strain_weight)
    architecture = dict(COMMON_ARCHITECTURE, elements=[Z], max_ell=2, r_max=r_max)
    config = TrainConfig(**{**COMMON_SETTINGS, "epochs": EPOCHS}, output_dir=str(RUNS / name))
    frames = [
        dataclasses.replace(f, weight=strain_weight) if f.config_type == "elastic" else f
        for f in read_frames(frames_path(), elements=[Z])
    ]
    train(ModelConfig(**architecture), frames, config, name=name)


def fcc(a: float):
    return bulk(ELEMENT, "fcc", a=a, cubic=True)


def measure(make_calc) -> dict[str, float]:
    eos = equation_of_state(fcc, A_GUESS, make_calc)
    elastic = cubic_elastic_constants(fcc(eos["a0"]), make_calc)
    return {"a0": eos["a0"], "B": eos["B"], **elastic}


def report() -> None:
    rows = {"EMT": measure(EMT)}
    errors = {}
    for path in sorted(RUNS.glob(f"{ELEMENT}-r*/{ELEMENT}-r*.json")):  # every run's model
        label = path.stem
        rows[label] = measure(lambda p=path: EquivariantCalculator(str(p), dtype="float64"))
        errors[label] = json.loads(path.read_text())["card"]["test_errors"]
    lines = [
        f"# Metals cutoff study: {ELEMENT}, r_max 5 Å against 6 Å",
        "",
        "`OMP_NUM_THREADS=1 python scripts/zoo/metals_cutoff_study.py train --r-max 5.0` (and "
        "`6.0`), then `... report`; one CPU core each. Same frames "
        f"(every pure-{ELEMENT} frame of set v3), seed, settings and {EPOCHS} epochs.",
        "",
        "| model | a0 (Å) | B (GPa) | C11 | C12 | C44 (GPa) | test E MAE (meV/atom) "
        "| F MAE (meV/Å) | σ MAE (meV/Å³) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ref = rows["EMT"]
    for label, row in rows.items():
        cells = [f"{row['a0']:.4f}", f"{row['B']:.2f}"]
        for key in ("C11", "C12", "C44"):
            dev = "" if label == "EMT" else f" ({100 * (row[key] / ref[key] - 1):+.1f} %)"
            cells.append(f"{row[key]:.2f}{dev}")
        err = errors.get(label, {})
        cells += [str(err.get(k, "–")) for k in ("energy_mae", "forces_mae", "stress_mae")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    RESULT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    RESULT.with_suffix(".json").write_text(json.dumps({"rows": rows, "errors": errors}, indent=1))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("train", "report"))
    parser.add_argument("--r-max", type=float, default=5.0)
    parser.add_argument("--strain-weight", type=float, default=1.0)
    args = parser.parse_args()
    train_one(args.r_max, args.strain_weight) if args.what == "train" else report()


if __name__ == "__main__":
    main()
