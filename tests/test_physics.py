"""Physics of the calculator: derivatives, symmetries, extensivity, smoothness, conservation.

Every expected value here follows from physics, not from a stored output of the code:

- forces are −∂E/∂r and stress is (1/V) ∂E/∂ε, so both must equal central finite differences of
  the energy (ASE's ``calculate_numerical_forces`` / ``calculate_numerical_stress``);
- E is invariant under rotations, inversion, translations, permutations of identical-role
  atoms and lattice translations of single atoms; forces rotate as vectors, stress as a rank-2
  tensor;
- a 2×2×2 supercell is the same crystal: 8× the energy, the same stress, tiled forces;
- the radial envelope u(r/r_max) vanishes at r_max with its first two derivatives, so energy and
  forces are continuous across the cutoff and exactly constant beyond it;
- velocity Verlet with conservative forces conserves the total energy to O(dt²).

Run with ``-s`` to see the measured deviations.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.neighborlist import neighbor_list
from ase.stress import voigt_6_to_full_3x3_stress
from conftest import R_MAX
from helpers import SYMMETRY_RTOL, assert_covariant, max_relative_error, random_rotation, rotated

PERIODIC_BOX = ["bulk", "small_cell", "slab", "wire"]  # some periodicity, cell of rank 3
ALL = ["bulk", "small_cell", "slab", "wire", "molecule"]

FD_FORCE_STEP = 1e-4  # Å; truncation ~step²·E''' ≈ 1e-9 eV/Å, round-off ~1e-16·E/step ≈ 1e-12
FD_FORCE_TOL = 1e-6  # eV/Å (issue's acceptance tolerance)
FD_STRAIN_STEP = 1e-5  # truncation ~1e-10 relative, round-off ~1e-16·E/(step·V) ≈ 1e-12 eV/Å³
FD_STRESS_RTOL, FD_STRESS_ATOL = 1e-6, 1e-8  # relative, eV/Å³


def evaluate(atoms: Atoms, calc) -> dict[str, np.ndarray | float | None]:
    """Energy, per-atom energies, forces and (for a rank-3 cell) stress as a 3×3 matrix."""
    atoms.calc = calc
    forces = atoms.get_forces()
    stress = None
    if atoms.cell.rank == 3:
        stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
    return {
        "energy": atoms.get_potential_energy(),
        "energies": atoms.get_potential_energies(),
        "forces": forces,
        "stress": stress,
    }


# ---------------------------------------------------------------------------------------------
# Forces and stress are derivatives of the energy


@pytest.mark.parametrize("name", ALL)
def test_forces_equal_finite_differences(name, structure, calc):
    """F = −∂E/∂r for bulk (triclinic, two elements), a cell smaller than the cutoff, a slab,
    a wire and a molecule, against central differences of the energy with a 1e-4 Å step."""
    atoms = structure(name)
    atoms.calc = calc
    forces = atoms.get_forces()
    numerical = calculate_numerical_forces(atoms, eps=FD_FORCE_STEP)
    error = np.abs(forces - numerical).max()
    print(
        f"\nFD forces {name}: max|F| = {np.abs(forces).max():.3g} eV/Å, "
        f"max|F − F_fd| = {error:.2e} eV/Å"
    )
    assert np.abs(forces).max() > 1e3 * FD_FORCE_TOL, "forces too small for a meaningful test"
    assert error <= FD_FORCE_TOL


@pytest.mark.parametrize("name", [*PERIODIC_BOX, "one_atom"])
def test_stress_equals_finite_differences(name, structure, calc):
    """σ = (1/V) ∂E/∂ε for periodic and partially periodic cells of rank 3 (a slab or wire in a
    finite box: the strain moves the atoms along the vacuum direction too)."""
    atoms = structure(name)
    atoms.calc = calc
    stress = atoms.get_stress()
    numerical = calculate_numerical_stress(atoms, eps=FD_STRAIN_STEP)
    error = np.abs(stress - numerical)
    print(
        f"\nFD stress {name}: max|σ| = {np.abs(stress).max():.3g} eV/Å³, "
        f"max|σ − σ_fd| = {error.max():.2e} eV/Å³, "
        f"relative {error.max() / np.abs(numerical).max():.2e}"
    )
    assert np.abs(stress).max() > 1e3 * FD_STRESS_ATOL, "stress too small for a meaningful test"
    np.testing.assert_allclose(stress, numerical, rtol=FD_STRESS_RTOL, atol=FD_STRESS_ATOL)


@pytest.mark.parametrize(
    ("scale", "expected_sign"), [(0.65, -1.0), (0.9, +1.0)], ids=["compressed", "expanded"]
)
def test_stress_sign_follows_energy_under_compression(scale, expected_sign, structure, calc):
    """Sign convention: where E rises on compression, σ_ii < 0 (the cell wants to expand).

    A random model has no built-in repulsion, so "compressed" alone does not fix the sign. Its
    isotropic E(V) curve for the bulk cell has a minimum near 0.7 × the cell (atoms ~1.8 Å
    apart). At 0.65 × the cell it is compressed beyond that minimum, at 0.9 × expanded. We first
    *measure* dE/dε_ii by finite differences of uniaxial strains and require (precondition)
    the expected sign: dE/dε_ii < 0 when compressed (E rises on compression), > 0 when
    expanded. Then σ_ii = (1/V) ∂E/∂ε_ii must have that sign, and the pressure
    p = −tr(σ)/3 = −(1/3V) dE/d(ln s) under isotropic scaling s must have the opposite one.
    """
    atoms = structure("bulk")
    atoms.set_cell(scale * atoms.cell.array, scale_atoms=True)
    atoms.calc = calc
    stress = atoms.get_stress()
    cell, volume, step = atoms.cell.array.copy(), atoms.get_volume(), 1e-4

    def energy_at(deformation: np.ndarray) -> float:
        probe = atoms.copy()
        probe.calc = calc
        probe.set_cell(cell @ deformation, scale_atoms=True)
        return probe.get_potential_energy()

    for i in range(3):
        plus, minus = np.eye(3), np.eye(3)
        plus[i, i], minus[i, i] = 1 + step, 1 - step
        dE_deps = (energy_at(plus) - energy_at(minus)) / (2 * step)
        assert np.sign(dE_deps) == expected_sign, f"precondition on dE/dε along axis {i}"
        assert np.sign(stress[i]) == expected_sign
        assert stress[i] == pytest.approx(dE_deps / volume, rel=1e-6)
    dE_dlns = (energy_at((1 + step) * np.eye(3)) - energy_at((1 - step) * np.eye(3))) / (2 * step)
    pressure = -stress[:3].sum() / 3
    print(f"\nbulk × {scale}: σ_diag = {stress[:3]} eV/Å³, p = {pressure:.3g} eV/Å³")
    assert np.sign(pressure) == -expected_sign
    assert pressure == pytest.approx(-dE_dlns / (3 * volume), rel=1e-6)


def test_molecule_stress_not_implemented(structure, calc):
    """A molecule (zero cell) has no volume, so stress is undefined: ASE's named error."""
    atoms = structure("molecule")
    atoms.calc = calc
    atoms.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="rank"):
        atoms.get_stress()


# ---------------------------------------------------------------------------------------------
# Symmetries


SYMMETRY_CASES = ["bulk", "small_cell", "slab", "wire", "molecule"]


@pytest.mark.parametrize("name", SYMMETRY_CASES)
@pytest.mark.parametrize("improper", [False, True], ids=["rotation", "rotoinversion"])
def test_rotation_and_inversion(name, improper, structure, make_calc):
    """Rotate (and for improper, also invert) positions and cell together: E invariant, forces
    and stress covariant. Inversion alone is also checked (R = −1: F → −F, σ → σ)."""
    rng = np.random.default_rng(10 + SYMMETRY_CASES.index(name) + 100 * improper)
    atoms = structure(name)
    before = evaluate(atoms, make_calc())
    rotations = [random_rotation(rng, improper=improper) for _ in range(2)]
    if improper:
        rotations.append(-np.eye(3))
    worst = 0.0
    for rotation in rotations:
        after = evaluate(rotated(atoms, rotation), make_calc())
        worst = max(worst, assert_covariant(before, after, rotation))
    print(f"\n{'rotoinversion' if improper else 'rotation'} {name}: worst relative {worst:.1e}")


@pytest.mark.parametrize("name", SYMMETRY_CASES)
def test_translation(name, structure, make_calc):
    """A rigid translation changes nothing (E, forces, stress, per-atom energies)."""
    atoms = structure(name)
    before = evaluate(atoms, make_calc())
    moved = atoms.copy()
    moved.positions += np.array([0.731, -1.917, 2.353])
    worst = assert_covariant(before, evaluate(moved, make_calc()), np.eye(3))
    print(f"\ntranslation {name}: worst relative {worst:.1e}")


@pytest.mark.parametrize("name", SYMMETRY_CASES)
def test_permutation(name, structure, make_calc):
    """Relabelling the atoms permutes forces and per-atom energies; E and σ are unchanged."""
    atoms = structure(name)
    before = evaluate(atoms, make_calc())
    permutation = np.random.default_rng(5).permutation(len(atoms))
    if len(atoms) > 1:
        assert (permutation != np.arange(len(atoms))).any()
    worst = assert_covariant(
        before, evaluate(atoms[permutation], make_calc()), np.eye(3), permutation
    )
    print(f"\npermutation {name}: worst relative {worst:.1e}")


@pytest.mark.parametrize("name", ["bulk", "small_cell", "slab", "wire"])
def test_lattice_translation_and_wrapping(name, structure, make_calc):
    """Moving single atoms by lattice vectors (along periodic directions) and wrapping them back
    into the cell describe the same infinite crystal: nothing may change."""
    atoms = structure(name)
    before = evaluate(atoms, make_calc())
    periodic_cell = atoms.cell.array * atoms.pbc[:, None]  # zero rows where not periodic
    rng = np.random.default_rng(6)
    moved = atoms.copy()
    moved.positions += rng.integers(-2, 3, size=(len(atoms), 3)) @ periodic_cell
    assert np.abs(moved.positions - atoms.positions).max() > 1.0
    worst = assert_covariant(before, evaluate(moved, make_calc()), np.eye(3))
    moved.wrap()
    worst = max(worst, assert_covariant(before, evaluate(moved, make_calc()), np.eye(3)))
    print(f"\nlattice translation/wrap {name}: worst relative {worst:.1e}")


# ---------------------------------------------------------------------------------------------
# Extensivity and sums


@pytest.mark.parametrize(
    ("name", "repeat"),
    [("bulk", (2, 2, 2)), ("small_cell", (2, 2, 2)), ("slab", (2, 2, 1)), ("wire", (2, 1, 1))],
)
def test_supercell_consistency(name, repeat, structure, make_calc):
    """A supercell is the same crystal: E scales with the number of copies, stress (an
    intensive quantity) is unchanged, forces and per-atom energies are tiled (ASE's repeat
    stacks whole copies of the cell)."""
    atoms = structure(name)
    cell_results = evaluate(atoms, make_calc())
    supercell = atoms.repeat(repeat)
    copies = int(np.prod(repeat))
    super_results = evaluate(supercell, make_calc())
    errors = {
        "energy": abs(super_results["energy"] - copies * cell_results["energy"])
        / abs(copies * cell_results["energy"]),
        "energies": max_relative_error(
            super_results["energies"], np.tile(cell_results["energies"], copies)
        ),
        "forces": max_relative_error(
            super_results["forces"], np.tile(cell_results["forces"], (copies, 1))
        ),
        "stress": max_relative_error(super_results["stress"], cell_results["stress"]),
    }
    print(f"\nsupercell {name} {repeat}: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    for key, error in errors.items():
        assert error <= SYMMETRY_RTOL, f"{key}: relative error {error:.2e}"


@pytest.mark.parametrize("name", ALL)
def test_energies_sum_to_energy_and_forces_to_zero(name, structure, calc):
    """Σ_i e_i = E (the per-atom partition is exact) and Σ_i F_i = 0 (E is invariant under a
    rigid translation, periodic or not)."""
    atoms = structure(name)
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    energies = atoms.get_potential_energies()
    total_force = atoms.get_forces().sum(axis=0)
    print(
        f"\nsums {name}: |Σe − E| = {abs(energies.sum() - energy):.1e} eV, "
        f"|ΣF| = {np.abs(total_force).max():.1e} eV/Å"
    )
    assert abs(energies.sum() - energy) <= 1e-10
    assert np.abs(total_force).max() <= 1e-10


# ---------------------------------------------------------------------------------------------
# Smoothness at the cutoff


def _dimer(distance: float) -> Atoms:
    """Al at the origin and Cu at ``distance`` along a fixed oblique unit vector, no cell."""
    direction = np.array([0.6, 0.64, 0.48])
    return Atoms("AlCu", positions=[np.zeros(3), distance * direction])


def _isolated_atoms_energy(calc) -> float:
    """E(Al alone) + E(Cu alone): the energy of the dimer at infinite separation."""
    total = 0.0
    for symbol in ("Al", "Cu"):
        atom = Atoms(symbol, positions=[[0.0, 0.0, 0.0]])
        atom.calc = calc
        total += atom.get_potential_energy()
    return total


def test_dimer_energy_exactly_constant_beyond_cutoff(make_calc):
    """Beyond r_max the two atoms do not interact: E = E(Al) + E(Cu) and F = 0, exactly."""
    calc = make_calc()
    isolated = _isolated_atoms_energy(calc)
    for distance in (R_MAX + 1e-6, R_MAX + 0.01, R_MAX + 0.5, 3 * R_MAX):
        atoms = _dimer(distance)
        atoms.calc = calc
        assert atoms.get_forces().tolist() == [[0.0] * 3] * 2
        assert atoms.get_potential_energy() == pytest.approx(isolated, abs=1e-12)


def test_dimer_smooth_across_cutoff(make_calc):
    """Scan the Cu atom from r_max − 0.5 Å to r_max + 0.1 Å in h = 2e-3 Å steps.

    1. No jumps: between neighbouring points the energy change equals the work of the forces,
       ΔE = −½ (F_k + F_{k+1}) · Δr, up to the trapezoid error h³ E'''/12 ≲ 1e-10 eV; a jump of
       the energy by 1e-9 eV, or of the force by ~1e-6 eV/Å (error ≈ jump × h/2), breaks this.
       Beyond r_max, E equals the isolated atoms' energy and F = 0 exactly.
    2. Order of contact: u, u' and u'' vanish at r_max, so E − E(∞) = O(δ³) and F = O(δ²) at
       δ = r_max − r; halving δ must divide them by at least ~8 and ~4.
    """
    calc = make_calc()
    isolated = _isolated_atoms_energy(calc)
    step = 2e-3
    distances = R_MAX + step * np.arange(-250, 51)
    energies, forces_on_cu = [], []
    direction = _dimer(1.0).positions[1]
    for distance in distances:
        atoms = _dimer(distance)
        atoms.calc = calc
        forces_on_cu.append(atoms.get_forces()[1] @ direction)
        energies.append(atoms.get_potential_energy())
    energies, forces_on_cu = np.array(energies), np.array(forces_on_cu)
    assert np.ptp(energies) > 1e-5, "no interaction inside the scan: test is vacuous"
    work = -0.5 * (forces_on_cu[1:] + forces_on_cu[:-1]) * step
    mismatch = np.abs(np.diff(energies) - work).max()
    print(
        f"\ndimer scan: max |ΔE + ∫F dr| = {mismatch:.1e} eV, "
        f"max|F| in scan = {np.abs(forces_on_cu).max():.1e} eV/Å"
    )
    assert mismatch <= 1e-9
    beyond = distances >= R_MAX
    assert np.all(forces_on_cu[beyond] == 0.0)
    assert np.abs(energies[beyond] - isolated).max() <= 1e-12

    def interaction(delta: float) -> tuple[float, float]:
        atoms = _dimer(R_MAX - delta)
        atoms.calc = calc
        return atoms.get_potential_energy() - isolated, np.linalg.norm(atoms.get_forces()[1])

    (e_far, f_far), (e_near, f_near) = interaction(0.04), interaction(0.02)
    print(
        f"dimer contact order: E ratio {e_far / e_near:.2f} (≥ 8), "
        f"F ratio {f_far / f_near:.2f} (≥ 4)"
    )
    assert abs(e_far) > 1e-12 and f_far > 1e-12
    assert abs(e_far / e_near) >= 0.9 * 2**3
    assert f_far / f_near >= 0.9 * 2**2


# ---------------------------------------------------------------------------------------------
# Energy conservation


@pytest.mark.slow
def test_nve_energy_conservation(calc):
    """Velocity Verlet, 500 steps of 2 fs on 8 atoms of fcc AlCu started at 30 K: the total
    energy may not drift by more than 1e-4 eV/atom while the potential energy itself moves by
    ~100× more (so forces inconsistent with the energy would show up).

    The random model has no short-range repulsion (its E(V) minimum for this lattice is near
    0.7 × a), so at higher temperatures atoms can run into each other; 30 K keeps every pair
    above ~1 Å over the run, which the test checks as a precondition.
    """
    atoms = Atoms(
        "Al4Cu4",
        scaled_positions=[
            [0, 0, 0],
            [0, 0.5, 0.25],
            [0.5, 0, 0.25],
            [0.5, 0.5, 0],
            [0, 0, 0.5],
            [0, 0.5, 0.75],
            [0.5, 0, 0.75],
            [0.5, 0.5, 0.5],
        ],
        cell=[3.7, 3.7, 7.4],
        pbc=True,
    )
    atoms.rattle(0.05, seed=4)
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=30.0, rng=np.random.default_rng(4))
    Stationary(atoms)
    n = len(atoms)
    total, potential, closest = [], [], []

    def record() -> None:
        potential.append(atoms.get_potential_energy() / n)
        total.append(potential[-1] + atoms.get_kinetic_energy() / n)
        closest.append(neighbor_list("d", atoms, 3.0).min())

    dynamics = VelocityVerlet(atoms, timestep=2.0 * units.fs)
    dynamics.attach(record, interval=5)
    dynamics.run(500)
    drift = np.abs(np.array(total) - total[0]).max()
    print(
        f"\nNVE: max |E_tot(t) − E_tot(0)| = {drift:.2e} eV/atom, "
        f"E_pot range {np.ptp(potential):.2e} eV/atom, closest pair {min(closest):.2f} Å"
    )
    assert np.ptp(potential) > 10 * 1e-4, "potential energy hardly changed: test is vacuous"
    assert min(closest) > 0.8, "precondition: atoms collided (the random model has no repulsion)"
    assert drift < 1e-4
