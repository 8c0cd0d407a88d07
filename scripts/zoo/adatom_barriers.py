"""Adatom hop barriers on fcc(100) or fcc(111) of a ``metals`` model against EMT, by
climbing-image NEB.

    OMP_NUM_THREADS=1 python scripts/zoo/adatom_barriers.py [--model metals] [--out FILE.json]
    OMP_NUM_THREADS=1 python scripts/zoo/adatom_barriers.py --facet 111

For each of the seven metals: a 3×3×4 fcc(100) slab at EMT's own lattice constant
(``generate_metals_v3.emt_lattice_constant``), 8 Å of vacuum, the two lower layers fixed,
one adatom of the same element in a hollow site; initial and final states (neighbouring
hollows) relaxed to fmax 0.01 eV/Å with each calculator, then 5 intermediate images,
``NEB(climb=True, method="improvedtangent")`` with FIRE to fmax 0.02 eV/Å. The barrier is the
highest image's energy minus the initial state's. Each calculator runs the whole path itself
(its own endpoints and band), so the figure compares the two potentials' barriers, not one
path's energies. The model's largest atomic ``forces_uncertainty`` at the initial state and at
the highest image is printed beside the card's threshold (``valid_p95``). The training data of
``metals`` hold surfaces, vacancies and vacancy hops, but no adatoms (README, zoo table).

``--facet 111``: the hop of an adatom from the fcc to the neighbouring hcp hollow of a 3×3×4
fcc(111) slab (built as ``generate_metals_v5.slab_with_adatom`` builds it); the barrier is
measured from the fcc site, and ``end_difference_eV`` is E(hcp) − E(fcc). Set v5
(``generate_metals_v5.py``) holds both (111) sites but no (111) path, so for a model trained on
it this hop is a check on something it was not trained on.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from ase.build import add_adsorbate, fcc100
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.mep import NEB
from ase.optimize import BFGS, FIRE
from generate_metals_v3 import emt_lattice_constant
from generate_metals_v5 import slab_with_adatom

from ase_equi import EquivariantCalculator, load_model

METALS = ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")


def endpoints(symbol: str, a: float, facet: str = "100") -> tuple:
    """The unrelaxed initial and final states of the hop (the adatom is the last atom)."""
    if facet == "111":
        return slab_with_adatom(symbol, a, "111", "fcc"), slab_with_adatom(symbol, a, "111", "hcp")
    slab = fcc100(symbol, size=(3, 3, 4), a=a, vacuum=8.0)
    add_adsorbate(slab, symbol, 0.5 * a / np.sqrt(2) + 0.2, "hollow")
    slab.set_constraint(FixAtoms(mask=[atom.tag > 2 for atom in slab]))
    final = slab.copy()
    final.positions[-1, 0] += slab.cell[0, 0] / 3
    return slab, final


def barrier(symbol: str, a: float, make_calc, facet: str = "100") -> dict:
    start = time.perf_counter()
    initial, final = endpoints(symbol, a, facet)
    for atoms in (initial, final):
        atoms.calc = make_calc()
        BFGS(atoms, logfile=None).run(fmax=0.01)
    images = [initial] + [initial.copy() for _ in range(5)] + [final]
    for image in images[1:-1]:
        image.calc = make_calc()
    band = NEB(images, climb=True, method="improvedtangent")
    band.interpolate()
    converged = FIRE(band, logfile=None).run(fmax=0.02, steps=500)
    energies = [image.get_potential_energy() for image in images]
    result = {
        "barrier_eV": float(max(energies) - energies[0]),
        "end_difference_eV": float(energies[-1] - energies[0]),
        "converged": bool(converged),
        "seconds": round(time.perf_counter() - start, 1),
    }
    if isinstance(initial.calc, EquivariantCalculator):  # the largest atomic uncertainty, eV/Å
        saddle = images[int(np.argmax(energies))]
        for key, atoms in (("initial", initial), ("saddle", saddle)):
            try:
                u = float(atoms.calc.get_property("forces_uncertainty", atoms).max())
            except PropertyNotImplementedError:  # a model without an uncertainty section
                u = None
            result[f"forces_uncertainty_max_{key}_eV_per_A"] = u
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="metals")
    parser.add_argument("--out", help="write the table as JSON here")
    parser.add_argument("--facet", choices=("100", "111"), default="100")
    args = parser.parse_args()
    loaded = load_model(args.model)  # one load; each image's calculator shares its weights
    rows = {}
    card_uncertainty = loaded.card.get("uncertainty", {})
    threshold = card_uncertainty.get("uncertainty_threshold_eV_per_A", {}).get("valid_p95")
    print(f"largest atomic forces_uncertainty against the card's valid_p95 = {threshold} eV/Å")
    print(f"fcc({args.facet}) adatom hop")
    print("| metal | EMT barrier (eV) | model barrier (eV) | deviation | u initial / saddle |")
    print("|---|---|---|---|---|")
    for symbol in METALS:
        a = emt_lattice_constant(symbol)
        reference = barrier(symbol, a, EMT, args.facet)
        model = barrier(symbol, a, lambda: EquivariantCalculator(loaded), args.facet)
        deviation = 100 * (model["barrier_eV"] / reference["barrier_eV"] - 1)
        rows[symbol] = {"a0_A": a, "emt": reference, "model": model, "deviation_pct": deviation}
        u = [model[f"forces_uncertainty_max_{key}_eV_per_A"] for key in ("initial", "saddle")]
        print(
            f"| {symbol} | {reference['barrier_eV']:.3f} | {model['barrier_eV']:.3f} | "
            f"{deviation:+.1f} % | {' / '.join('–' if x is None else f'{x:.3f}' for x in u)} |",
            flush=True,
        )
    if args.out:
        command = "OMP_NUM_THREADS=1 python scripts/zoo/adatom_barriers.py"
        if args.facet != "100":
            command += f" --facet {args.facet}"
        with open(args.out, "w") as fh:
            json.dump(
                {"command": command, "model": args.model, "facet": args.facet,
                 "threshold_valid_p95": threshold, "metals": rows}, fh, indent=1,
            )  # fmt: skip


if __name__ == "__main__":
    main()
