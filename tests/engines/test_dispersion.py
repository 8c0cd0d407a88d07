"""D3 on top of a model: the sum equals the model plus the ``dftd3`` library called directly
(its C API, not its ASE calculator), for a molecule and a periodic cell; the model cards decide
where D3 is refused."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule

from ase_equi import EquivariantCalculator
from ase_equi.engines.dispersion import d3_corrected, d3_functional
from ase_equi.errors import AseEquiError
from ase_equi.loading import load_model

interface = pytest.importorskip(
    "dftd3.interface", reason="dftd3 (simple-dftd3) is not installed: pip install dftd3"
)


@pytest.fixture(scope="module")
def pbe_model():
    return load_model("molecules-pbe")


def _water_dimer(cell: float | None) -> Atoms:
    first, second = molecule("H2O"), molecule("H2O")
    second.rotate(70, "x")
    second.translate([2.9, 0.3, 0.2])
    atoms = first + second
    if cell is not None:
        atoms.cell, atoms.pbc = cell * np.eye(3) + 0.3 * np.tri(3, k=-1), True
        atoms.positions += 1.0
    return atoms


def _library_d3(atoms: Atoms, method: str, damping_class) -> tuple[float, np.ndarray, np.ndarray]:
    """Energy (eV), forces (eV/Å) and virial (eV) from the library's own entry point."""
    model = interface.DispersionModel(
        atoms.numbers, atoms.positions / units.Bohr, atoms.cell[:] / units.Bohr, atoms.pbc
    )
    out = model.get_dispersion(param=damping_class(method=method), grad=True)
    forces = -out["gradient"] * units.Hartree / units.Bohr
    return float(out["energy"]) * units.Hartree, forces, out["virial"] * units.Hartree


@pytest.mark.parametrize(
    ("damping", "damping_class"),
    [("d3bj", "RationalDampingParam"), ("d3zero", "ZeroDampingParam")],
)
def test_molecule_energy_and_forces_are_model_plus_library(pbe_model, damping, damping_class):
    atoms = _water_dimer(None)
    model = EquivariantCalculator(pbe_model)
    atoms.calc = d3_corrected(model, damping=damping)
    e_d3, f_d3, _ = _library_d3(atoms, "pbe", getattr(interface, damping_class))
    reference = atoms.copy()
    reference.calc = model
    e_model, f_model = reference.get_potential_energy(), reference.get_forces()
    assert -0.05 < e_d3 < -1e-3  # a bound water dimer: some meV of attraction
    assert abs(atoms.get_potential_energy() - (e_model + e_d3)) < 1e-10
    np.testing.assert_allclose(atoms.get_forces(), f_model + f_d3, rtol=0, atol=1e-10)
    assert np.abs(f_d3).max() > 1e-4  # the correction does change the forces


def test_periodic_stress_is_model_plus_library(pbe_model):
    atoms = _water_dimer(9.0)
    model = EquivariantCalculator(pbe_model)
    atoms.calc = d3_corrected(model, functional="PBE")
    e_d3, f_d3, virial = _library_d3(atoms, "pbe", interface.RationalDampingParam)
    reference = atoms.copy()
    reference.calc = model
    sigma_d3 = virial / atoms.get_volume()  # the library's virial is ∂E/∂ε (eV): σ V
    voigt = sigma_d3.flat[[0, 4, 8, 5, 2, 1]]
    np.testing.assert_allclose(atoms.get_stress(), reference.get_stress() + voigt, atol=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), reference.get_forces() + f_d3, atol=1e-10)
    # the D3 stress is the strain derivative of the D3 energy (central differences)
    d3_only = d3_corrected(EquivariantCalculator(pbe_model)).mixer.calcs[1]
    eps, strained = 1e-5, []
    for sign in (1, -1):
        a = atoms.copy()
        a.set_cell(atoms.cell[:] @ (np.eye(3) + sign * eps * np.diag([1, 0, 0])), True)
        a.calc = d3_only
        strained.append(a.get_potential_energy())
    assert abs((strained[0] - strained[1]) / (2 * eps) / atoms.get_volume() - voigt[0]) < 1e-8


@pytest.mark.parametrize(
    ("model", "reason"),
    [("metals", "names no density functional"), ("silicon-xtb", "already contains a dispersion")],
)
def test_cards_without_a_functional_or_with_dispersion_are_refused(model, reason):
    with pytest.raises(AseEquiError, match=reason):
        d3_corrected(EquivariantCalculator(model))


def test_functional_must_agree_with_the_card_and_damping_must_be_known(pbe_model):
    calc = EquivariantCalculator(pbe_model)
    with pytest.raises(AseEquiError, match="functional='b3lyp', but the model was trained on"):
        d3_corrected(calc, functional="b3lyp")
    with pytest.raises(AseEquiError, match="damping must be one of"):
        d3_corrected(calc, damping="d4")
    with pytest.raises(AseEquiError, match="no d3bj parameters for functional 'pbx'"):
        d3_functional(None, "pbx", "d3bj")
    with pytest.raises(AseEquiError, match="records no level of theory"):
        d3_functional(None, None, "d3bj")
    assert d3_functional("revPBE/TZ2P", None, "d3bj") == "revpbe"
    with pytest.raises(AseEquiError, match="already contains a dispersion term"):
        d3_functional("B3LYP-D3(BJ)/def2-TZVP", None, "d3bj")
