"""Can the zoo's architecture hold EMT Al's bulk modulus and elastic constants together? A test
of capacity, not of data: fit one-atom Al cells only, and vary the radial resolution.

    export OMP_NUM_THREADS=1
    python scripts/zoo/al_radial_resolution.py train --r-max 6 --num-bessel 8
    python scripts/zoo/al_radial_resolution.py train --r-max 6 --num-bessel 20
    python scripts/zoo/al_radial_resolution.py report     # → benchmarks/results/

The zoo's ``metals`` misses Al's C11 by −4.3 % while its B, from the card's Birch–Murnaghan fit
over 4.05 Å × (1 ± 5 %) (EMT's a0 × 0.963–1.065), is +2.9 %. EMT's Al E(V) has a sharp
feature near a0 × 0.94–0.97, where the fourth neighbour shell crosses EMT's cutoff (a Fermi
function at 5.38 Å, 0.18 Å wide; ``benchmarks/results/2026-12-01-zoo-cutoff.md``): EMT's B
is 39.6 GPa fitted over ±1 % and 36.1 GPa over ±5 %, and every trained model's B stays within
1 % across those ranges. The elastic constants at a0 set the local curvature
((C11 + 2 C12)/3 = 39.7 GPa for EMT), so C11 and C12 within 3 % need (C11 + 2 C12)/3 ≥ 38.5
GPa, while the card's B within 3 % needs ≤ 38.4: a model must make B fall across the fit
range, as EMT does. The last stop's note proposed a
model with r_max ≥ 6 Å and about 20 radial basis functions (today 8).

This script asks whether that is enough, on the easiest possible data: one-atom primitive fcc
Al cells (a perfect crystal: energies and stresses only, no forces), labelled with EMT: 65
lattice constants a0 × (0.92 … 1.08), 0.25 % apart (about 18 across the feature), and 60
cells at a0 under random symmetric strains up to 2 % per component (seed 0). The zoo's
architecture (``train_zoo.COMMON_ARCHITECTURE``, Al only, ``max_ell`` 2) at the given
``r_max`` and ``num_bessel``, trained from scratch on these frames (energy : stress weights
1000 : 10000, lr 0.01 cosine, 150 epochs, batch 4, seed 0, 10 % validation), then measured
with the card's own functions: B over the card's range (4.05 Å × (1 ± 5 %)), over a0 × (1 ± 5 %)
and over a0 × (1 ± 1 %) (11 points each), and C11, C12, C44 by ±0.5 % strains at the model's
own a0.

``--slope-weight W`` adds stage 5's stress-slope loss (``strain_pairs.StrainPairPenalty``, 16
pairs a step, steps up to 3 %; all frames are one strain group, the validation frames included,
which the measurement does not use). Runs after the first two (decided after seeing them):
32 functions at 150 epochs, then 20 and 8 at 400 epochs (the same rule, at a budget where the
fit is closer to its training data). Two runs with the slope loss (8 and 20 functions, weight
1000) were stopped after 30 epochs to free the machine and are not reported. ``--seed S`` trains
another instance (its own validation draw too; run name ``-sS``): 20 functions at 400 epochs
with seed 1, to see whether the result holds beyond one seed.
Then (2026-12-03) the same two at ``--r-max 7`` (150 and 400 epochs, seeds 0 and 1), to see
whether a cutoff where the envelope leaves more of the fourth shell (5.4–5.7 Å) makes the fit
follow EMT in both seeds; as it did in one, two more seeds at 7 Å and a third at 6 Å (400
epochs), to count how often each holds all of EMT's numbers (7 Å: 1 of 4; 6 Å: 2 of 3).
``report`` measures the runs on disk and keeps the rows of the JSON
for runs measured before and no longer there.

Decision, written before any run: if a model at 20 basis functions has B(±1 %), B(±5 %), C11
and C12 each within 3 % of EMT's, and the 8-function model at the same r_max does not, the
radial resolution is the lever and the from-scratch metals model at that resolution is the
next step for issue 17; if neither does, resolution alone is not enough (the model misses its
own training curve), and the note says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metals_card import LATTICE
from paired_frames import PairSampling
from physics import cubic_elastic_constants, equation_of_state
from strain_pairs import StrainPairPenalty
from train_zoo import COMMON_ARCHITECTURE

from ase_equi import EquivariantCalculator, ModelConfig, TrainConfig, train
from ase_equi.data import read_frames

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "runs" / "al-radial-resolution"
RESULT = ROOT / "benchmarks" / "results" / "2026-12-01-al-radial-resolution"
A0_EMT = 3.9943  # Å, EMT's Al (benchmarks/results/2026-12-01-zoo-cutoff.md); only sets the grid
EPOCHS = 150


def primitive(a: float) -> Atoms:
    return bulk("Al", "fcc", a=a)


def cubic(a: float) -> Atoms:
    return bulk("Al", "fcc", a=a, cubic=True)


def labelled(atoms: Atoms) -> Atoms:
    atoms.calc = EMT()
    energy, stress = atoms.get_potential_energy(), atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, energy=energy, stress=stress, forces=np.zeros((1, 3)))
    return atoms


def frames_path() -> Path:
    """The 125 EMT-labelled one-atom frames, written once to ``RUNS``."""
    path = RUNS / "frames.xyz"
    if path.exists():
        return path
    frames = [labelled(primitive(A0_EMT * s)) for s in np.linspace(0.92, 1.08, 65)]
    rng = np.random.default_rng(0)
    for _ in range(60):
        strain = rng.uniform(-0.02, 0.02, (3, 3))
        atoms = primitive(A0_EMT)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (strain + strain.T)), scale_atoms=True)
        frames.append(labelled(atoms))
    RUNS.mkdir(parents=True, exist_ok=True)
    write(path, frames, format="extxyz")
    return path


def train_one(r_max: float, num_bessel: int, epochs: int, slope_weight: float, seed: int) -> None:
    name = f"r{r_max:g}-b{num_bessel}" + ("" if epochs == EPOCHS else f"-e{epochs}")
    name += (f"-slope{slope_weight:g}" if slope_weight else "") + (f"-s{seed}" if seed else "")
    architecture = dict(COMMON_ARCHITECTURE, elements=[13], max_ell=2, r_max=r_max)
    architecture.update(num_bessel=num_bessel)
    config = TrainConfig(seed=seed, epochs=epochs, batch_size=4, lr=0.01, scheduler="cosine",
                         energy_weight=1000.0, forces_weight=1.0, stress_weight=10000.0,
                         valid_fraction=0.1, test_fraction=0.0, output_dir=str(RUNS / name),
                         plots=False)  # fmt: skip
    frames = read_frames(frames_path(), elements=[13])
    penalty = None
    if slope_weight:  # every frame is the one-atom cell under some strain: one strain group
        sampling = PairSampling([13], r_max, dtype=getattr(torch, config.dtype), pairs_per_step=16)
        term = StrainPairPenalty(frames, range(len(frames)), sampling, weight=slope_weight,
                                 max_strain=0.03, relative=False)  # fmt: skip
        penalty = term
    train(ModelConfig(**architecture), frames, config, name=name, penalty=penalty)


def measure(make_calc) -> dict[str, float]:
    """a0 (Å), B (GPa) three ways and C11, C12, C44 (GPa). ``B_card``: the card's fit, over
    4.05 Å × (1 ± 5 %) (``metals_card.LATTICE``, not centred on a0: a0 × 0.963–1.065 for
    EMT); ``B_5pc`` and ``B_1pc``: over a0 × (1 ± 5 %) and (1 ± 1 %)."""
    card = equation_of_state(cubic, LATTICE["Al"], make_calc, span=0.05)
    wide = equation_of_state(cubic, A0_EMT, make_calc, span=0.05)
    narrow = equation_of_state(cubic, wide["a0"], make_calc, span=0.01)
    elastic = cubic_elastic_constants(cubic(narrow["a0"]), make_calc)
    bulk_moduli = {"B_card": card["B"], "B_5pc": wide["B"], "B_1pc": narrow["B"]}
    return {"a0": narrow["a0"], **bulk_moduli, **elastic}


def table(rows: dict[str, dict[str, float]], title: str, command: str) -> list[str]:
    """Markdown lines: ``title``, ``command``, and one row per model of ``rows`` (each a
    :func:`measure` result; ``rows["EMT"]`` the reference) with its deviations from EMT and
    whether the card's B, C11 and C12 are within 3 %."""
    keys = ("a0", "B_card", "B_5pc", "B_1pc", "C11", "C12", "C44")
    lines = [
        f"# {title}",
        "",
        command,
        "",
        "| model | " + " | ".join(keys) + " | card's B, C11, C12 within 3 % |",
        "|---" * (len(keys) + 2) + "|",
    ]
    ref = rows["EMT"]
    targets = ("B_card", "C11", "C12")  # the card's targets for Al
    for label, row in rows.items():
        devs = {k: 100 * (row[k] / ref[k] - 1) for k in keys}
        cells = [f"{row[k]:.4f}" if k == "a0" else f"{row[k]:.2f} ({devs[k]:+.1f} %)" for k in keys]
        passed = "–" if label == "EMT" else str(all(abs(devs[k]) <= 3 for k in targets))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {passed} |")
    return lines


def earlier_rows(path: Path) -> dict:
    """What a report wrote to ``path`` (its JSON) before: the rows of runs measured then and
    perhaps no longer on disk; empty if there is none."""
    return json.loads(path.read_text()) if path.exists() else {}


def report() -> None:
    rows = {"EMT": measure(EMT)}
    for path in sorted(RUNS.glob("r*-b*/r*-b*.json")):
        rows[path.stem] = measure(lambda p=path: EquivariantCalculator(str(p), dtype="float64"))
    for name, row in earlier_rows(RESULT.with_suffix(".json")).items():
        rows.setdefault(name, row)
    rows = {"EMT": rows.pop("EMT"), **dict(sorted(rows.items()))}
    command = (
        "`OMP_NUM_THREADS=1 python scripts/zoo/al_radial_resolution.py train --r-max R "
        "--num-bessel N` per row, then `... report` (settings: the script's docstring)."
    )
    lines = table(rows, __doc__.splitlines()[0], command)
    RESULT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    RESULT.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("train", "report"))
    parser.add_argument("--r-max", type=float, default=6.0)
    parser.add_argument("--num-bessel", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="run name gets -eN if not 150")
    parser.add_argument(
        "--slope-weight", type=float, default=0.0, help="stage 5's stress-slope loss (-slopeW)"
    )
    parser.add_argument("--seed", type=int, default=0, help="of the training (run name -sN)")
    args = parser.parse_args()
    if args.what == "train":
        train_one(args.r_max, args.num_bessel, args.epochs, args.slope_weight, args.seed)
    else:
        report()


if __name__ == "__main__":
    main()
