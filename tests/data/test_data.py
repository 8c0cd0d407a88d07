"""Reading labelled data, validation errors, E0 least squares and data statistics."""

from __future__ import annotations

import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress
from conftest import broken_emt_structures, emt_structures

from ase_equi.data import DataKeys, Frame, read_frames, split_indices
from ase_equi.data.batch import frames_to_graphs, make_batch
from ase_equi.data.statistics import data_statistics, fit_reference_energies
from ase_equi.errors import DataFileError


def _with_ref_labels(atoms: Atoms, stress_3x3: bool = False) -> Atoms:
    """A copy with labels moved to REF_energy / REF_forces / REF_stress (info and arrays)."""
    res = atoms.calc.results
    out = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    out.info["REF_energy"] = res["energy"]
    out.arrays["REF_forces"] = res["forces"].copy()
    out.info["REF_stress"] = (
        voigt_6_to_full_3x3_stress(res["stress"]) if stress_3x3 else res["stress"].copy()
    )
    return out


def test_read_extxyz_default_keys(tmp_path):
    images = emt_structures(3)
    ase.io.write(tmp_path / "d.xyz", images)
    frames = read_frames(tmp_path / "d.xyz", elements=[13, 29])
    assert [f.index for f in frames] == [0, 1, 2]
    for frame, atoms in zip(frames, images, strict=True):
        res = atoms.calc.results
        assert frame.energy == pytest.approx(res["energy"], abs=1e-9)
        np.testing.assert_allclose(frame.forces, res["forces"], atol=1e-7)
        np.testing.assert_allclose(frame.stress, res["stress"], atol=1e-9)
        assert frame.has_stress and frame.atoms.calc is None


@pytest.mark.parametrize("stress_3x3", [False, True])
def test_read_ref_keys_and_3x3_stress(tmp_path, stress_3x3):
    images = emt_structures(2)
    ase.io.write(tmp_path / "d.xyz", [_with_ref_labels(a, stress_3x3) for a in images])
    frames = read_frames(tmp_path / "d.xyz", keys=DataKeys.ref())
    np.testing.assert_allclose(frames[1].stress, images[1].calc.results["stress"], atol=1e-9)
    np.testing.assert_allclose(frames[1].forces, images[1].calc.results["forces"], atol=1e-7)
    # without an explicit choice the default names are missing: the error lists what is there
    with pytest.raises(ValueError, match=r"frame 0 .* no energy under 'energy'.*REF_energy"):
        read_frames(tmp_path / "d.xyz")


def test_ambiguous_keys_need_a_choice():
    atoms = emt_structures(1)[0]
    atoms.info["REF_energy"] = atoms.calc.results["energy"] + 0.5  # e.g. a DFT relabelling
    with pytest.raises(ValueError, match=r"frame 0: energy is ambiguous.*REF_energy"):
        read_frames([atoms])
    atoms.arrays["REF_forces"] = atoms.calc.results["forces"]
    atoms.info["REF_stress"] = atoms.calc.results["stress"]
    (frame,) = read_frames([atoms], keys=DataKeys.ref())
    assert frame.energy == pytest.approx(atoms.calc.results["energy"] + 0.5)
    (frame,) = read_frames([atoms], keys=DataKeys())
    assert frame.energy == pytest.approx(atoms.calc.results["energy"])
    atoms.info["REF_energy"] = atoms.calc.results["energy"]  # same value: not ambiguous
    assert read_frames([atoms])[0].energy == pytest.approx(atoms.calc.results["energy"])


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing forces", r"frame 1 has no forces under 'forces'"),
        ("nan position", r"frame 1: positions contain NaN or inf at atom 2"),
        ("nan energy", r"frame 1: energy is nan"),
        ("inf forces", r"frame 1: forces contain NaN or inf at atom 3"),
        ("forces shape", r"frame 1: forces have shape \(3, 3\), expected \(4, 3\)"),
        ("unknown element", r"frame 1: element Xe \(Z=54\) is not in"),
        ("missing energy", r"frame 1 has no energy under 'energy'. Keys found: calculator"),
    ],
)
def test_invalid_frames_name_the_frame(kind, message):
    with pytest.raises(ValueError, match=message):
        read_frames(broken_emt_structures(kind), elements=[13, 29])


def test_forces_optional_when_asked():
    images = broken_emt_structures("missing forces")
    frames = read_frames(images, require_forces=False)
    assert frames[1].forces is None
    graphs = frames_to_graphs(frames, [13, 29], 3.5)
    batch = make_batch(frames, graphs)
    assert batch.forces_mask.tolist() == [True] * 4 + [False] * 4


def test_read_ase_db(tmp_path):
    images = emt_structures(2)
    with ase.db.connect(tmp_path / "d.db") as db:
        for atoms in images:
            bare = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True)
            res = atoms.calc.results
            db.write(
                bare,
                REF_energy=res["energy"],
                data={"REF_forces": res["forces"], "REF_stress": res["stress"]},
            )
    frames = read_frames(tmp_path / "d.db", keys=DataKeys.ref())
    np.testing.assert_allclose(frames[1].forces, images[1].calc.results["forces"])
    assert frames[0].energy == pytest.approx(images[0].calc.results["energy"])


def test_reference_energies_least_squares_exact():
    rng = np.random.default_rng(3)
    e0 = {1: -13.6, 8: -2041.0, 29: -1.25}
    frames = []
    for k in range(8):
        numbers = rng.choice(list(e0), size=int(rng.integers(2, 7)))
        atoms = Atoms(numbers=numbers, positions=rng.uniform(0, 6, (len(numbers), 3)))
        frames.append(Frame(atoms, float(sum(e0[int(z)] for z in numbers)), index=k))
    fitted = fit_reference_energies(frames, [1, 8, 29])
    np.testing.assert_allclose(fitted, [e0[1], e0[8], e0[29]], rtol=0, atol=1e-9)


def test_isolated_atoms_fix_their_element():
    e0 = {13: -0.5, 29: -0.25}
    frames = [Frame(Atoms("Cu"), -0.3, index=0)]  # isolated Cu: wins over the fit
    for k, formula in enumerate(["CuAl", "Cu2Al", "Al3", "CuAl2"], start=1):
        atoms = Atoms(formula, positions=np.arange(3 * len(Atoms(formula))).reshape(-1, 3))
        frames.append(Frame(atoms, sum(e0[int(z)] for z in atoms.numbers), index=k))
    fitted = fit_reference_energies(frames, [13, 29])
    assert fitted[1] == pytest.approx(-0.3)
    # Al from min || n_Al E0_Al - (E - n_Cu (-0.3)) ||, by hand: normal equations
    n_al = np.array([1, 1, 3, 2])
    n_cu = np.array([1, 2, 0, 1])
    target = n_al * -0.5 + n_cu * -0.25 - n_cu * -0.3
    assert fitted[0] == pytest.approx(float(n_al @ target / (n_al @ n_al)))


def test_statistics_shift_scale_neighbours():
    rng = np.random.default_rng(0)
    frames = []
    for k, a in enumerate((3.6, 3.65)):
        atoms = bulk("Cu", "fcc", a=a)  # one atom, 12 neighbours within 3.0 Å
        frames.append(Frame(atoms, -1.0 - k, rng.normal(size=(1, 3)), index=k))
    frames.append(Frame(Atoms("Cu"), -0.25, np.zeros((1, 3)), index=2))
    stats = data_statistics(frames, [29], 3.0)
    assert stats.reference_energies == (-0.25,)
    assert stats.shift == pytest.approx(np.mean([-1.0 + 0.25, -2.0 + 0.25]))
    forces = np.concatenate([frames[0].forces, frames[1].forces])  # isolated atom left out
    assert stats.scale == pytest.approx(np.sqrt(np.mean(forces**2)))
    assert stats.avg_num_neighbors == pytest.approx(12.0)


def test_split_is_fixed_by_seed_and_disjoint():
    a = split_indices(20, valid_fraction=0.2, test_fraction=0.1, seed=7)
    assert a == split_indices(20, valid_fraction=0.2, test_fraction=0.1, seed=7)
    assert a != split_indices(20, valid_fraction=0.2, test_fraction=0.1, seed=8)
    assert sorted(a["train"] + a["valid"] + a["test"]) == list(range(20))
    assert (len(a["train"]), len(a["valid"]), len(a["test"])) == (14, 4, 2)
    with pytest.raises(ValueError, match="no training frame"):
        split_indices(2, valid_fraction=0.5, test_fraction=0.5, seed=0)


def test_batch_labels_and_stress_mask():
    images = emt_structures(2)
    molecule = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]])
    molecule.calc = SinglePointCalculator(
        molecule, energy=-1.0, forces=np.zeros((2, 3)), stress=np.zeros(6)
    )
    frames = read_frames(images + [molecule])
    batch = make_batch(frames, frames_to_graphs(frames, [13, 29], 3.5))
    assert batch.stress_mask.tolist() == [True, True, False]  # no cell: stress label unused
    assert not batch.stress_computable
    assert batch.num_atoms.tolist() == [4, 4, 2]
    assert batch.forces.shape == (10, 3) and batch.stress.shape == (3, 3, 3)
    expected = voigt_6_to_full_3x3_stress(images[0].calc.results["stress"])
    torch.testing.assert_close(batch.stress[0], torch.as_tensor(expected))


# ---------------------------------------------------------------------------------------------
# Damaged data files: each error is a DataFileError naming the file, the frame (from 0) and the
# line (from 1). The files below hold frames of 4 atoms, so frame k starts on line 6k + 1, its
# comment line is 6k + 2 and atom i of it is on line 6k + 3 + i.


def _write_lines(tmp_path, edit=None, name="d.xyz") -> tuple[str, list[str]]:
    """Two labelled 4-atom frames written by ASE, with ``edit(lines)`` applied; path, lines."""
    path = tmp_path / name
    ase.io.write(path, emt_structures(2))
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 12 and lines[6].strip() == "4"
    if edit is not None:
        edit(lines)
    path.write_text("".join(lines))
    return str(path), lines


def _replace_token(lines, line_number, column, value):
    tokens = lines[line_number - 1].split()
    tokens[column] = value
    lines[line_number - 1] = " ".join(tokens) + "\n"


def _drop_last_column(lines):
    lines[10] = " ".join(lines[10].split()[:-1]) + "\n"  # line 11: frame 1, atom 2


def _insert_a_column(lines):  # between positions and forces: ASE would shift the forces
    tokens = lines[10].split()
    lines[10] = " ".join([*tokens[:4], "0.5", *tokens[4:]]) + "\n"


FRAME_1 = r"frame 1 of .*d\.xyz"
COUNTED = r"frames are counted from 0"


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            _drop_last_column,
            r"frame 1 \(" + COUNTED + r"\), line 11 \(atom 2\): 6 columns, but "
            r"Properties=species:S:1:pos:R:3:forces:R:3 needs 7",
        ),
        (
            _insert_a_column,
            r"frame 1 \(" + COUNTED + r"\), line 11 \(atom 2\): 8 columns, but "
            r"Properties=species:S:1:pos:R:3:forces:R:3 declares 7",
        ),
        (
            lambda ls: _replace_token(ls, 12, 5, "abc"),
            r"frame 1 .*line 12 \(atom 3\), column 'forces': 'abc' is not a number",
        ),
        (
            lambda ls: _replace_token(ls, 3, 2, "1.0.0"),
            r"frame 0 .*line 3 \(atom 0\), column 'pos': '1.0.0' is not a number",
        ),
        (
            lambda ls: _replace_token(ls, 10, 0, "Xx"),
            r"frame 1 .*line 10 \(atom 1\), column 'species': 'Xx' is not a chemical element",
        ),
        (
            lambda ls: ls.__setitem__(7, ls[7].replace("energy=", "other=")),
            FRAME_1 + r" has no energy under 'energy'.* \[line 8; " + COUNTED,
        ),
        (
            lambda ls: ls.__setitem__(7, ls[7].replace("energy=", "energy=nan other=")),
            FRAME_1 + r": energy is nan \[line 8; " + COUNTED,
        ),
        (
            lambda ls: _replace_token(ls, 12, 4, "nan"),
            FRAME_1 + r": forces contain NaN or inf at atom 3 \[line 12; " + COUNTED,
        ),
        (
            lambda ls: ls.__setitem__(7, ls[7].replace('stress="', 'REF_stress="1 2 3 4" old="')),
            FRAME_1 + r": stress has shape \(4,\), expected Voigt .*\[line 8; " + COUNTED,
        ),
        (
            lambda ls: ls.__setitem__(7, ls[7].replace('stress="', 'stress="1 2 3 4" old="')),
            r"frame 1 \(" + COUNTED + r"\), line 8: the comment line is not .*stress",
        ),
        (
            lambda ls: ls.insert(6, "\n"),
            r"d\.xyz, line 7: blank line after frame 0 .*more text follows at line 8",
        ),
        (
            lambda ls: ls.__setitem__(6, "four\n"),
            r"frame 1 \(" + COUNTED + r"\), line 7: expected the number of atoms .*'four'",
        ),
        (
            lambda ls: ls.__setitem__(6, "9\n"),
            r"frame 1 .*line 7: the frame declares 9 atoms but the file ends after 4 atom lines",
        ),
    ],
    ids=[
        "columns",
        "extra-column",
        "word",
        "two-dots",
        "element",
        "no-energy",
        "nan-energy",
        "nan-forces",
        "ref-stress-4",
        "stress-4",
        "blank-line",
        "not-a-count",
        "truncated",
    ],
)
def test_damaged_extxyz_names_file_frame_and_line(tmp_path, edit, message):
    path, _ = _write_lines(tmp_path, edit)
    with pytest.raises(DataFileError, match=message) as info:
        keys = DataKeys(stress="REF_stress") if r"shape \(4,\)" in message else None
        read_frames(path, keys=keys)
    assert path in str(info.value)


def test_unknown_element_for_the_model_names_the_atom_line(tmp_path):
    path, _ = _write_lines(tmp_path)
    with pytest.raises(DataFileError, match=r"element Al \(Z=13\).*\[line (3|9|10|11|12); "):
        read_frames(path, elements=[29])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"empty\.xyz contains no structures \(it is empty\)"),
        (b"\n\n", r"empty\.xyz contains no structures"),
        (b"POSCAR of Cu\n1.0\n3.6 0 0\n", r"line 1: expected the number of atoms .*extxyz"),
        (b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary", r"line 1: not a text \(UTF-8\) file"),
    ],
    ids=["empty", "blank", "poscar", "binary"],
)
def test_files_that_are_not_extxyz(tmp_path, content, message):
    path = tmp_path / "empty.xyz"
    path.write_bytes(content)
    with pytest.raises(DataFileError, match=message):
        read_frames(path)


def test_compressed_extxyz_and_overlong_line(tmp_path, monkeypatch):
    import lzma

    from ase_equi.data import extxyz

    path, lines = _write_lines(tmp_path)
    packed = tmp_path / "d.xyz.xz"
    packed.write_bytes(lzma.compress("".join(lines).encode()))
    assert [f.index for f in read_frames(packed)] == [0, 1]
    monkeypatch.setattr(extxyz, "MAX_LINE_CHARS", 200)  # comment lines are ~400 characters
    with pytest.raises(DataFileError, match=r"d\.xyz\.xz, line 2: longer than 200 characters"):
        read_frames(packed)


HOSTILE_CHILD = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from ase_equi.data import read_frames
from ase_equi.errors import DataFileError
for path in sys.argv[1:]:
    try:
        read_frames(path)
        print("read without error")
    except DataFileError as err:
        print("DataFileError:", err)
"""

HOSTILE_FILES = {
    "huge-count": (
        b"1000000000000\nenergy=1\nCu 0 0 0\n",
        "declares 1000000000000 atoms but the file ends after 1 atom lines",
    ),
    "negative-count": (b"-5\nenergy=1\n", "negative number of atoms -5"),
    "long-comment": (b"1\nenergy=1 " + b"x" * 300_000 + b"\nCu 0 0 0\n", "has no forces"),
}


def test_hostile_counts_fail_fast_in_bounded_memory(tmp_path):
    """In a child limited to 3 GiB of address space and 120 s: a count of 10^12 atoms must not
    allocate for them, a negative count must not loop."""
    import subprocess
    import sys

    paths = []
    for name, (content, _) in HOSTILE_FILES.items():
        paths.append(tmp_path / f"{name}.xyz")
        paths[-1].write_bytes(content)
    done = subprocess.run(
        [sys.executable, "-c", HOSTILE_CHILD, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == len(HOSTILE_FILES)
    for line, (name, (_, message)) in zip(lines, HOSTILE_FILES.items(), strict=True):
        assert line.startswith("DataFileError:") and name in line and message in line, line
