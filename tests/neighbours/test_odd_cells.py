"""Odd atoms and cells: bounded time and memory, and a clear refusal where no answer exists.

- A periodic cell far thinner than the cutoff would need hundreds of periodic images along
  the thin direction: refused, naming the height, the cutoff and the images, before anything
  large is allocated.
- A lattice given in a badly skewed basis (a cubic cell whose third vector is c + 10^4 a) is
  an ordinary crystal: searched in its reduced basis, with the same edges and the same
  energy, forces and stress as in its own basis (float32 included), in milliseconds. It used
  to be refused as "thin", or computed slowly with float32 errors of 2 meV/Å.
- A lattice with a period under 0.5 Å (one Cu atom in a cell 0.01 Å long used to give
  -6e19 eV), or so dense that an atom has six images within 1 Å (a sheared 4 x 4 x 0.02 Å
  cell: 0.32 Å³ an atom), is no material: refused, naming the period or the count.
- Two atoms in a box of 10^4-10^6 Å: the search must cost what two atoms cost (it used to bin
  the whole box: seconds and gigabytes), and give the same edges as ASE.

The calls that used to take seconds and gigabytes run in a child process with an address-space
limit and a timeout, so that a regression fails instead of taking the machine down.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list as ase_neighbor_list

from ase_equi import EquivariantCalculator
from ase_equi.neighbours import neighbour_list_from_atoms
from ase_equi.neighbours.device import device_neighbour_list

LIMIT_BYTES = 2 * 2**30  # 2 GiB of address space for the child (torch alone maps ~1 GiB)


def run_limited(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python with RLIMIT_AS = LIMIT_BYTES and a wall-clock timeout."""
    prelude = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, ({LIMIT_BYTES}, {LIMIT_BYTES}))
        """
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"OMP_NUM_THREADS": "1", "PATH": "", "PYTHONPATH": ":".join(sys.path)},
    )


def edge_set(nl) -> set:
    return set(
        zip(nl.senders.tolist(), nl.receivers.tolist(), map(tuple, nl.shifts.tolist()), strict=True)
    )


def ase_edge_set(atoms: Atoms, cutoff: float) -> set:
    i, j, shifts = ase_neighbor_list("ijS", atoms, cutoff)
    return set(zip(i.tolist(), j.tolist(), map(tuple, shifts.tolist()), strict=True))


# ---------------------------------------------------------------------------------------------
# A periodic cell far thinner than the cutoff


def test_a_cutoff_far_beyond_the_cell_is_refused_naming_height_cutoff_and_images():
    """One H in a 1.2 Å cube with a 60 Å cutoff: 101^3 lattice shifts, over the limit."""
    atoms = Atoms("H", cell=[1.2, 1.2, 1.2], pbc=True)
    with pytest.raises(ValueError, match=r"cell vector \d is 1\.2 Å.*cutoff 60 Å.*50 periodic"):
        neighbour_list_from_atoms(atoms, 60.0)
    with pytest.raises(ValueError, match=r"cell vector \d is 1\.2 Å.*cutoff 60 Å"):
        device_neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 60.0)


@pytest.mark.parametrize(
    "cell, pbc, period",
    [
        ([0.01, 3.0, 3.0], True, "0.01"),
        ([3.0, 3.0, 0.3], (True, True, False), None),  # 0.3 Å along a non-periodic direction
        ([[3.0, 0.0, 0.0], [2.9, 0.2, 0.0], [0.0, 0.0, 3.0]], True, "0.224"),  # 0.1 x 0.2 Å
        ([0.4, 0.0, 0.0], (True, False, False), "0.4"),  # a wire of period 0.4 Å
    ],
)
def test_a_lattice_period_under_half_an_angstrom_is_refused(cell, pbc, period):
    """Every atom meets its own periodic image at the lattice's shortest vector; under 0.5 Å
    (shorter than any bond) no material has one. A thin but legal cell is not."""
    atoms = Atoms("Cu", cell=cell, pbc=pbc)
    if period is None:
        assert len(neighbour_list_from_atoms(atoms, 5.0)) > 0
        return
    with pytest.raises(ValueError, match=rf"period of {period} Å .*own periodic image"):
        neighbour_list_from_atoms(atoms, 5.0)
    with pytest.raises(ValueError, match=rf"period of {period} Å"):
        device_neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)


def test_the_calculator_refuses_a_sub_half_angstrom_period_instead_of_minus_1e19_ev():
    atoms = Atoms("Cu", cell=[0.01, 3.0, 3.0], pbc=True)
    atoms.calc = EquivariantCalculator("metals")
    with pytest.raises(ValueError, match=r"period of 0\.01 Å"):
        atoms.get_potential_energy()


@pytest.mark.parametrize(
    "cell, pbc",
    [([1e300] * 3, True), ([1e200] * 3, True), ([0.0, 0.0, 1e250], (False, False, True))],
)
def test_an_absurdly_long_periodic_cell_vector_is_refused_by_name(cell, pbc):
    """A 1e300 Å cell (squares overflow) was refused as having "zero volume"."""
    atoms = Atoms("Cu2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 2.5]], cell=cell, pbc=pbc)
    with pytest.raises(ValueError, match=r"component of 1e\+\d+ Å, beyond the 1e\+09 Å"):
        neighbour_list_from_atoms(atoms, 5.0)
    atoms.calc = EquivariantCalculator("metals")
    with pytest.raises(ValueError, match=r"beyond the 1e\+09 Å .*check the units"):
        atoms.get_potential_energy()


# ---------------------------------------------------------------------------------------------
# A lattice in a skewed basis, and lattices too dense for any material


def skewed_copper(tilt: int) -> tuple[Atoms, np.ndarray]:
    """32 rattled fcc Cu atoms in their cubic cell given as (a, b, c + tilt a), and the matrix
    T taking a shift S in that basis to the cubic one (S @ cell = (S @ T) @ cubic)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    cell = atoms.cell.array.copy()
    cell[2] += tilt * cell[0]
    atoms.set_cell(cell, scale_atoms=False)
    return atoms, np.array([[1, 0, 0], [0, 1, 0], [tilt, 0, 1]])


@pytest.mark.parametrize("tilt", [3, 300, 10**4, 10**6])
def test_a_skewed_basis_gives_the_edges_of_its_lattice_in_milliseconds(tilt):
    """Tilt 10^4 needed 1.4e5 lattice shifts and was refused as a "thin" cell; 3000 took
    1.4 s for 32 atoms. Both searches now give the cubic basis's edges, the shifts in the
    caller's basis, at the cost of the cubic cell."""
    cubic, _ = skewed_copper(0)
    expected = edge_set(neighbour_list_from_atoms(cubic, 5.0))
    atoms, to_cubic = skewed_copper(tilt)
    start = time.perf_counter()
    nl = neighbour_list_from_atoms(atoms, 5.0)
    seconds = time.perf_counter() - start
    in_cubic = map(tuple, (nl.shifts @ to_cubic).tolist())
    assert set(zip(nl.senders.tolist(), nl.receivers.tolist(), in_cubic, strict=True)) == expected
    assert seconds < 0.2
    i, j, shifts = device_neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)
    in_cubic = map(tuple, (shifts.numpy() @ to_cubic).tolist())
    on_device = zip(i.tolist(), j.tolist(), in_cubic, strict=True)
    assert set(on_device) == expected


@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-9), ("float32", 1e-5)])
def test_a_skewed_basis_gives_the_energy_forces_and_stress_of_its_lattice(dtype, tolerance):
    """In its own basis, tilt 10^5 put shifts of 10^5 into ``shifts @ cell``: float32 was off
    by 0.07 eV/Å (tilt 3000: 2 meV/Å). The graph now carries the reduced basis."""
    calc = EquivariantCalculator("metals", dtype=dtype)
    cubic, _ = skewed_copper(0)
    cubic.calc = calc
    expected = (cubic.get_potential_energy(), cubic.get_forces(), cubic.get_stress())
    for resident in (False, True):
        atoms, _ = skewed_copper(10**5)
        atoms.calc = EquivariantCalculator("metals", dtype=dtype, resident_graph=resident)
        got = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
        for value, reference in zip(got, expected, strict=True):
            np.testing.assert_allclose(value, reference, rtol=0, atol=tolerance)


def test_a_lattice_too_dense_for_any_material_is_refused_in_any_basis():
    """A sheared 4 x 4 x 0.02 Å cell is a lattice of 0.32 Å³ an atom (periods 0.61, 0.78,
    0.80 Å): each atom has 14 images within 1 Å. It was refused only by accident of its
    basis (as "thin"), and a simple cubic lattice of 0.76 Å (six images at 0.76 Å) was
    computed. Both are refused by name, by both searches and through the calculator."""
    sheared = Atoms("Cu", cell=[[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [1.3, 1.7, 0.02]], pbc=True)
    cubic = Atoms("Cu", cell=[0.76, 0.76, 0.76], pbc=True)
    for atoms, count in ((sheared, 14), (cubic, 6)):
        message = rf"atom 0 has {count} neighbours closer than 1 Å .*is the cell right"
        with pytest.raises(ValueError, match=message):
            neighbour_list_from_atoms(atoms, 5.0)
        with pytest.raises(ValueError, match=message):
            device_neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)
        atoms.calc = EquivariantCalculator("metals")
        with pytest.raises(ValueError, match=message):
            atoms.get_potential_energy()


def test_small_but_legitimate_cells_are_not_refused():
    """One atom in a 1.2 Å cube with a 6 Å cutoff (11^3 = 1331 shifts) is a legal, dense case."""
    atoms = Atoms("H", cell=[1.2, 1.2, 1.2], pbc=True)
    nl = neighbour_list_from_atoms(atoms, 6.0)
    assert edge_set(nl) == ase_edge_set(atoms, 6.0)


# ---------------------------------------------------------------------------------------------
# Few atoms in a huge box


@pytest.mark.parametrize("pbc", [True, False, (True, False, True)])
def test_few_atoms_in_large_box_same_edges_as_ase(pbc):
    """Atoms at opposite corners (bonded through the boundary when periodic), one pair inside
    and one cluster straddling a face: the edges are ASE's, with the right shifts."""
    size = 300.0
    positions = [
        [0.1, 0.1, 0.1],
        [size - 1.0, size - 1.0, size - 1.0],
        [size - 2.0, 1.0, 0.5],
        [size / 2, size / 2, size / 2],
        [size / 2 + 2.0, size / 2, size / 2 + 1.0],
    ]
    atoms = Atoms("Cu5", positions=positions, cell=[size, size, size], pbc=pbc)
    nl = neighbour_list_from_atoms(atoms, 5.0)
    assert edge_set(nl) == ase_edge_set(atoms, 5.0)
    if atoms.pbc.all():
        assert (0, 1, (-1, -1, -1)) in edge_set(nl)  # the corner atoms, through the boundary


@pytest.mark.parametrize("seed", range(4))
def test_sparse_random_structures_same_edges_as_ase(seed):
    """Few atoms in triclinic boxes much larger than the cutoff, any periodicity."""
    rng = np.random.default_rng(seed)
    for case in range(8):
        cell = np.diag([60.0, 50.0, 70.0]) + rng.normal(0.0, 5.0, (3, 3))
        n_atoms = int(rng.integers(1, 30))
        fractional = rng.random((n_atoms, 3)) * rng.choice([0.05, 0.3, 1.0])
        pbc = rng.random(3) < 0.7
        atoms = Atoms(f"H{n_atoms}", scaled_positions=fractional, cell=cell, pbc=pbc)
        atoms.positions += rng.normal(0.0, 3.0, (n_atoms, 3))  # some outside the cell
        cutoff = float(rng.uniform(3.0, 9.0))
        nl = neighbour_list_from_atoms(atoms, cutoff)
        assert edge_set(nl) == ase_edge_set(atoms, cutoff), f"seed {seed}, case {case}"


def test_two_atoms_in_a_giant_box_cost_milliseconds_and_megabytes():
    """It used to take 5-25 s and 2-4 GB (periodic); now two atoms cost what two atoms cost.

    One child process for the four cases (starting Python with torch costs seconds).
    """
    result = run_limited(
        """
        import resource, time
        from ase import Atoms
        from ase_equi.neighbours import neighbour_list_from_atoms
        for size in (1e4, 1e6):
            for pbc in (True, False):
                atoms = Atoms("Cu2", positions=[[0.5, 0.5, 0.5], [size - 1.5, 0.5, 0.5]],
                              cell=[size, size, size], pbc=pbc)
                before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                start = time.perf_counter()
                nl = neighbour_list_from_atoms(atoms, 6.0)
                seconds = time.perf_counter() - start
                grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
                print(size, pbc, len(nl), seconds, grown)
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.split("\n")[:4]
    assert len(lines) == 4, result.stdout
    for line in lines:
        size, pbc, edges, seconds, grown_kib = line.split()
        # periodic: the atoms are 2 Å apart through the boundary; open: far apart, no edge
        assert int(edges) == (2 if pbc == "True" else 0), line
        assert float(seconds) < 0.5, line
        assert int(grown_kib) < 50 * 1024, line  # peak RSS grows by less than 50 MB


def test_positions_given_in_nm_are_refused_as_crowded_not_computed():
    """A Cu cluster whose positions were written in nm (0.1 x the Å values) gave -4e5 eV: every
    atom has dozens of neighbours within 0.75 Å, which no material has. Both searches refuse it,
    naming the atom; a pair or three atoms that close (a collision cascade, a dimer scan) are
    still computed."""
    from ase.cluster import Octahedron

    cluster = Octahedron("Cu", 4)
    cluster.positions *= 0.1
    message = r"atom \d+ has \d+ neighbours closer than 0\.75 Å .*positions in Å \(not nm\)"
    with pytest.raises(ValueError, match=message):
        neighbour_list_from_atoms(cluster, 5.0)
    with pytest.raises(ValueError, match=message):
        device_neighbour_list(cluster.positions, cluster.cell.array, cluster.pbc, 5.0)
    cluster.calc = EquivariantCalculator("metals")
    with pytest.raises(ValueError, match=message):
        cluster.get_potential_energy()
    for close in ("Cu2", "Cu3", "Cu4"):  # up to three neighbours each within 0.75 Å
        n = len(Atoms(close))
        atoms = Atoms(close, positions=0.3 * np.eye(4, 3)[:n], pbc=False)
        assert len(neighbour_list_from_atoms(atoms, 5.0)) == n * (n - 1)
    square = Atoms("Cu", cell=[0.6, 0.6, 5.0], pbc=True)  # four images at 0.6 Å
    with pytest.raises(ValueError, match="atom 0 has 4 neighbours closer than 0.75 Å"):
        neighbour_list_from_atoms(square, 5.0)
