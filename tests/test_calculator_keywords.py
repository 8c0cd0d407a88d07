"""The calculator uses every keyword it accepts and refuses the others.

- ``head=`` selects a multi-head model's head (checked against mace-torch's own numbers per
  head); an unknown head raises and lists the heads;
- an unknown keyword raises ``TypeError`` naming it (mace-torch's ``default_dtype`` with a
  hint); every option is in ``parameters``; ``set(...)`` of each takes effect or raises;
- odd inputs: no atoms (energy 0), a CUDA device on a machine without one, properties the
  calculator does not implement.
"""

from __future__ import annotations

import json
import lzma

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from mace_data import DATA

from ase_equi import EquivariantCalculator
from ase_equi.calculator import OPTIONS
from ase_equi.graph import ResidentGraph

# ---------------------------------------------------------------------------------------------
# head=


@pytest.fixture(scope="module")
def multihead(tmp_path_factory):
    """(path of the decompressed multi-head MACE file, mace-torch's reference numbers)."""
    path = tmp_path_factory.mktemp("multihead") / "multihead.model"
    path.write_bytes(lzma.decompress((DATA / "multihead.model.xz").read_bytes()))
    return path, json.loads((DATA / "reference_multihead.json").read_text())


def _reference_atoms(ref: dict) -> Atoms:
    a = ref["atoms"]
    return Atoms(numbers=a["numbers"], positions=a["positions"], cell=a["cell"], pbc=a["pbc"])


def test_head_keyword_gives_that_heads_energy(multihead):
    path, ref = multihead
    atoms = _reference_atoms(ref)
    n = len(atoms)
    assert abs(ref["pbe"]["energy"] - ref["Default"]["energy"]) / n > 1e-3  # heads differ
    for head in ("pbe", "Default"):
        atoms.calc = EquivariantCalculator(path, head=head)
        assert abs(atoms.get_potential_energy() - ref[head]["energy"]) / n <= 1e-8, head
        assert np.abs(atoms.get_forces() - ref[head]["forces"]).max() <= 1e-8, head
        assert atoms.calc.parameters["head"] == head
    # no head: MACE's default head, recorded in parameters
    atoms.calc = EquivariantCalculator(path)
    assert abs(atoms.get_potential_energy() - ref["Default"]["energy"]) / n <= 1e-8
    assert atoms.calc.parameters["head"] == "Default"
    assert atoms.calc.todict()["head"] == "Default"


def test_relax_and_cli_eval_take_a_head(multihead, tmp_path, capsys):
    """relax(head=) and ``ase-equi eval --head`` use that head: relax's energy at step 0 and
    the CLI's printed energy are the head's reference."""
    from ase.io import write

    from ase_equi import relax
    from ase_equi.cli import main

    path, ref = multihead
    atoms = _reference_atoms(ref)
    out = relax([atoms], path, head="pbe", steps=0, verbose=False)
    assert abs(out.structures[0].get_potential_energy() - ref["pbe"]["energy"]) <= 1e-8 * len(atoms)
    write(tmp_path / "one.xyz", atoms)
    assert main(["eval", str(path), str(tmp_path / "one.xyz"), "--head", "pbe", "-q"]) == 0
    assert f"E = {ref['pbe']['energy']:.6f} eV" in capsys.readouterr().out


def test_unknown_head_raises_and_lists_heads(multihead):
    path, _ = multihead
    with pytest.raises(ValueError, match=r"no head 'nonexistent'.*'Default', 'pbe'"):
        EquivariantCalculator(path, head="nonexistent")


def test_set_head_switches_the_head(multihead):
    path, ref = multihead
    atoms = _reference_atoms(ref)
    atoms.calc = calc = EquivariantCalculator(path)
    assert abs(atoms.get_potential_energy() - ref["Default"]["energy"]) / len(atoms) <= 1e-8
    assert calc.set(head="pbe") == {"head": "pbe"}
    assert calc.results == {}
    assert abs(atoms.get_potential_energy() - ref["pbe"]["energy"]) / len(atoms) <= 1e-8
    with pytest.raises(ValueError, match="no head 'xyz'"):
        calc.set(head="xyz")
    assert calc.parameters["head"] == "pbe"  # unchanged after the refusal


def test_head_on_a_model_without_heads_is_refused(model_path):
    with pytest.raises(ValueError, match="head 'pbe'"):
        EquivariantCalculator(model_path, head="pbe")


# ---------------------------------------------------------------------------------------------
# Unknown keywords, parameters, set()


def test_unknown_keyword_is_a_type_error_naming_it(model_path):
    with pytest.raises(TypeError, match=r"unknown keyword 'skn'; it accepts .*skin.*head"):
        EquivariantCalculator(model_path, skn=0.5)
    with pytest.raises(TypeError, match=r"'default_dtype'.*dtype='float64' or 'float32'"):
        EquivariantCalculator(model_path, default_dtype="float64")


def test_ase_label_and_directory_are_accepted(model_path, tmp_path):
    calc = EquivariantCalculator(model_path, label="run", directory=tmp_path)
    assert calc.directory == str(tmp_path)


def test_every_option_is_in_parameters(model_path):
    calc = EquivariantCalculator(model_path, skin=0.5, chunk_mib=64.0, retain_memory=True)
    assert set(OPTIONS) <= set(calc.parameters)
    assert set(OPTIONS) <= set(EquivariantCalculator.default_parameters)
    assert calc.parameters["skin"] == 0.5 and calc.parameters["chunk_mib"] == 64.0
    shown = calc.todict()
    assert shown["skin"] == 0.5 and shown["chunk_mib"] == 64.0
    assert json.loads(json.dumps(shown)) == shown


def test_set_takes_effect(structure, model_path):
    atoms = structure("bulk")
    atoms.calc = calc = EquivariantCalculator(model_path)
    energy64 = atoms.get_potential_energy()
    calls = calc.model_calls

    calc.set(skin=0.0)
    assert calc.graph_source.neighbours.skin == 0.0
    calc.set(chunk_mib=64)
    assert calc.max_chunk_bytes == 64 * 2**20
    calc.set(chunk_mib=None)
    assert calc.max_chunk_bytes is None
    calc.set(skin=0.5, resident_graph=True)
    assert isinstance(calc.graph_source, ResidentGraph) and calc.graph_source.neighbours.skin == 0.5
    calc.set(resident_graph=False)
    assert not isinstance(calc.graph_source, ResidentGraph)

    calc.set(dtype="float32")
    assert calc.results == {}  # a change clears the results
    assert next(calc.model.parameters()).dtype == torch.float32
    energy32 = atoms.get_potential_energy()
    assert calc.model_calls == calls + 1
    assert energy32 != energy64 and abs(energy32 - energy64) < 1e-3 * len(atoms)
    calc.set(dtype="float64")
    assert atoms.get_potential_energy() == energy64  # reloaded from the file: exact again


def test_set_refuses_what_it_cannot_do(model_path):
    calc = EquivariantCalculator(model_path)
    before = dict(calc.parameters)
    with pytest.raises(ValueError, match="cannot be changed.*new EquivariantCalculator"):
        calc.set(model="metals")
    with pytest.raises(ValueError, match="skin must be a finite number >= 0"):
        calc.set(skin=-1.0)
    with pytest.raises(ValueError, match="dtype must be 'float64' or 'float32'"):
        calc.set(dtype="float16")
    with pytest.raises(ValueError, match="chunk_mib must be None or a number > 0"):
        calc.set(chunk_mib=0)
    with pytest.raises(ValueError, match="retain_memory=False.*whole process"):
        calc.set(retain_memory=False)
    with pytest.raises(TypeError, match="unknown keyword 'foo'"):
        calc.set(foo=1)
    assert dict(calc.parameters) == before


def test_cuda_without_cuda_names_the_problem(model_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r'no CUDA device is available.*device="cpu"'):
        EquivariantCalculator(model_path, device="cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        EquivariantCalculator(model_path, device="gpu0")


# ---------------------------------------------------------------------------------------------
# Odd atoms


def test_no_atoms_energy_zero(calc):
    atoms = Atoms(cell=[5.0, 5.0, 5.0], pbc=True)
    atoms.calc = calc
    assert atoms.get_potential_energy() == 0.0
    assert atoms.get_potential_energies().shape == (0,)
    assert atoms.get_forces().shape == (0, 3)
    np.testing.assert_array_equal(atoms.get_stress(), np.zeros(6))
    assert calc.get_property("free_energy", atoms) == 0.0
    no_cell = Atoms()
    no_cell.calc = calc
    assert no_cell.get_potential_energy() == 0.0
    with pytest.raises(PropertyNotImplementedError):
        no_cell.get_stress()


def test_property_not_implemented_is_refused(structure, calc):
    atoms = structure("bulk")
    with pytest.raises(PropertyNotImplementedError, match="'magmom' not implemented"):
        calc.calculate(atoms, ["energy", "magmom"])


def test_a_shared_loaded_model_is_not_changed_by_another_dtype(structure, model_path):
    """One LoadedModel given to a float64 calculator, then to evaluate(dtype="float32") and a
    float32 calculator: those take a float32 copy, the float64 calculator goes on with its
    unrounded weights (the same numbers as a fresh float64 load, to the last bit)."""
    from ase_equi import evaluate, load_model

    loaded = load_model(model_path, dtype=torch.float64)
    atoms, fresh = structure("bulk"), structure("bulk")
    atoms.calc = EquivariantCalculator(loaded, dtype="float64")
    fresh.calc = EquivariantCalculator(model_path, dtype="float64")
    atoms.get_forces()
    evaluate([atoms.copy()], loaded, dtype="float32", verbose=False)
    single = EquivariantCalculator(loaded, dtype="float32")
    assert next(single.loaded.model.parameters()).dtype == torch.float32
    assert next(loaded.model.parameters()).dtype == torch.float64
    for a in (atoms, fresh):
        a.positions[0, 1] += 0.05  # a new geometry: a new model call
    assert atoms.get_potential_energy() == fresh.get_potential_energy()
    np.testing.assert_array_equal(atoms.get_forces(), fresh.get_forces())


def test_numpy_scalars_are_numbers(structure, model_path):
    """Options computed with numpy (np.float32, np.int64) are taken as the numbers they are."""
    from ase_equi import relax

    calc = EquivariantCalculator(
        model_path, skin=np.float32(0.5), chunk_mib=np.int64(64), uncertainty_threshold=None
    )
    atoms = structure("bulk")
    atoms.calc = calc
    reference = structure("bulk")
    reference.calc = EquivariantCalculator(model_path, skin=0.5, chunk_mib=64)
    assert atoms.get_potential_energy() == reference.get_potential_energy()
    out = relax([structure("small_cell")], model_path, fmax=np.float32(0.5), steps=np.int64(3),
                verbose=False)  # fmt: skip
    assert out.steps.tolist()[0] <= 3
    from ase_equi.uncertainty import check_uncertainty_options

    check_uncertainty_options(np.float32(0.1), "warn")  # no error
    with pytest.raises(ValueError, match="uncertainty_threshold must be"):
        check_uncertainty_options(np.float32(-0.1), "warn")
