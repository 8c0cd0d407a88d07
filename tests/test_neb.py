"""Nudged elastic band (ASE's NEB) with the calculator: the band's images are several Atoms
objects evaluated in turn, so nothing the calculator keeps between calls (graph, neighbour
list, results) may leak from one image into another."""

from __future__ import annotations

import numpy as np
from ase.build import add_adsorbate, fcc100
from ase.constraints import FixAtoms
from ase.mep import NEB
from ase.optimize import FIRE


def _band(n_images: int = 3) -> list:
    """An Al adatom hopping between neighbouring hollows of a small Cu(100) slab."""
    slab = fcc100("Cu", size=(2, 2, 3), a=3.6, vacuum=5.0)
    add_adsorbate(slab, "Al", 1.6, "hollow")
    slab.set_constraint(FixAtoms(mask=[atom.tag > 1 for atom in slab]))
    final = slab.copy()
    final.positions[-1, 0] += slab.cell[0, 0] / 2
    images = [slab] + [slab.copy() for _ in range(n_images)] + [final]
    NEB(images, method="improvedtangent").interpolate()
    for k, image in enumerate(images):  # break the band's symmetry so every image differs
        image.positions[-1] += 0.05 * np.sin(np.arange(3) + k)
    return images


def _run(images: list, shared: bool, make_calc) -> tuple[np.ndarray, np.ndarray]:
    """Positions and energies after a few FIRE steps of a climbing-image band."""
    calc = make_calc()
    for image in images:
        image.calc = calc if shared else make_calc()
    band = NEB(images, climb=True, method="improvedtangent", allow_shared_calculator=shared)
    FIRE(band, logfile=None).run(fmax=1e-6, steps=6)
    energies = np.array([image.get_potential_energy() for image in images])
    return np.array([image.positions for image in images]), energies


def test_band_with_one_shared_calculator_equals_one_calculator_per_image(make_calc):
    alone_positions, alone_energies = _run(_band(), False, make_calc)
    shared_positions, shared_energies = _run(_band(), True, make_calc)
    assert np.ptp(alone_energies) > 1e-4  # the images are different structures
    np.testing.assert_allclose(shared_positions, alone_positions, rtol=0, atol=1e-10)
    np.testing.assert_allclose(shared_energies, alone_energies, rtol=0, atol=1e-10)


def test_each_image_energy_is_that_of_a_fresh_calculator(make_calc):
    images = _band()
    calc = make_calc()
    for image in images:
        image.calc = calc
    band = NEB(images, method="improvedtangent", allow_shared_calculator=True)
    band.get_forces()  # every inner image evaluated once, in turn, on the shared calculator
    for image in images[1:-1]:
        fresh = image.copy()
        fresh.calc = make_calc()
        assert calc.get_potential_energy(image) == fresh.get_potential_energy()
        np.testing.assert_array_equal(
            calc.get_forces(image), fresh.get_forces(apply_constraint=False)
        )
