"""evaluate() and label_errors() against hand-computed errors, ``ase-equi eval`` end to end, and
batched evaluation against the calculator on one structure at a time."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress
from conftest import STRUCTURES, emt_structures, make_structure

from ase_equi import EquivariantCalculator
from ase_equi.batched import PEAK_PER_INTERMEDIATE, graphs_of, plan_batches, structure_bytes
from ase_equi.cli import main
from ase_equi.evaluate import evaluate, label_errors
from ase_equi.graph.build import batch_graphs
from ase_equi.model.gradients import energy_forces_stress

# Known offsets added to EMT labels to make "predictions": frame k is off by (k + 1) meV/atom,
# every Al atom by +3 meV/Å in x, every Cu atom by −1 meV/Å in y, every stress by +0.1 meV/Å³
# in xx.
D_FORCE = {13: (0, 3e-3), 29: (1, -1e-3)}  # Z -> (component, eV/Å)
D_STRESS_XX = 1e-4  # eV/Å³


def _offset_predictions(labelled: list[Atoms]) -> list[Atoms]:
    out = []
    for k, atoms in enumerate(labelled):
        res = atoms.calc.results
        forces = res["forces"].copy()
        for z, (component, shift) in D_FORCE.items():
            forces[atoms.numbers == z, component] += shift
        stress = res["stress"].copy()
        stress[0] += D_STRESS_XX
        pred = atoms.copy()
        pred.calc = SinglePointCalculator(
            pred, energy=res["energy"] + len(atoms) * (k + 1) * 1e-3, forces=forces, stress=stress
        )
        out.append(pred)
    return out


def test_label_errors_against_hand_computed_numbers():
    labelled = emt_structures(4)  # Cu4, Cu2Al2, Al4, Cu4 (4 atoms each)
    for k, atoms in enumerate(labelled):
        atoms.info["config_type"] = "a" if k < 2 else "b"
    n_al = sum(int((a.numbers == 13).sum()) for a in labelled)
    n_cu = 16 - n_al
    assert (n_al, n_cu) == (6, 10)

    errors = label_errors(_offset_predictions(labelled), labelled)

    assert errors.n_frames == 4
    e = errors.overall.energy  # per-frame errors 1, 2, 3, 4 meV/atom
    assert (e.mae, e.rmse, e.count) == pytest.approx((2.5, np.sqrt(30 / 4), 4))
    f = errors.overall.forces  # one component of 48 per atom: 3 (Al) or 1 (Cu) meV/Å
    assert f.count == 48
    assert f.mae == pytest.approx((3 * n_al + 1 * n_cu) / 48)
    assert f.rmse == pytest.approx(np.sqrt((9 * n_al + 1 * n_cu) / 48))
    s = errors.overall.stress  # 0.1 meV/Å³ in one of 6 components
    assert s.count == 24
    assert (s.mae, s.rmse) == pytest.approx((0.1 / 6, np.sqrt(0.01 / 6)))

    al, cu = errors.forces_by_element["Al"], errors.forces_by_element["Cu"]
    assert (al.mae, al.rmse, al.count) == pytest.approx((1.0, np.sqrt(3.0), 3 * n_al))
    assert (cu.mae, cu.rmse, cu.count) == pytest.approx((1 / 3, np.sqrt(1 / 3), 3 * n_cu))

    a, b = errors.by_config_type["a"].energy, errors.by_config_type["b"].energy
    assert (a.mae, a.rmse) == pytest.approx((1.5, np.sqrt(2.5)))
    assert (b.mae, b.rmse) == pytest.approx((3.5, np.sqrt(12.5)))
    assert list(errors.by_config_type) == ["a", "b"]
    table = errors.table()
    assert "| config_type=b | 3.5 / 3.54 |" in table and "| Al | 1 / 1.73 | 18 |" in table


def test_label_errors_without_forces_or_stress_labels():
    molecule = Atoms("CuAl", positions=[[0, 0, 0], [0, 0, 2.4]])  # no cell: no stress
    molecule.calc = SinglePointCalculator(molecule, energy=-1.0)  # energy label only
    pred = molecule.copy()
    pred.calc = SinglePointCalculator(pred, energy=-1.1, forces=np.ones((2, 3)))
    errors = label_errors([pred], [molecule])
    assert errors.overall.energy.mae == pytest.approx(50.0)  # 100 meV over 2 atoms
    assert errors.overall.forces is None and errors.overall.stress is None
    assert errors.forces_by_element == {} and errors.by_config_type == {}


def test_label_errors_refuses_mismatched_lists():
    labelled = emt_structures(2)
    pred = _offset_predictions(labelled)
    with pytest.raises(ValueError, match="1 predicted structures but 2 labelled frames"):
        label_errors(pred[:1], labelled)
    pred[1].numbers[0] = 13 if pred[1].numbers[0] == 29 else 29
    with pytest.raises(ValueError, match="frame 1: predicted and labelled structures have other"):
        label_errors(pred, labelled)
    with pytest.raises(ValueError, match="predicted structure 0 carries no energy"):
        label_errors([a.copy() for a in labelled], labelled)


def test_label_errors_refuses_another_cell_or_periodicity():
    """Labels of the same positions in another cell (or without periodicity) belong to
    another structure: refused, not compared (a 10 % larger cell gave a stress error of
    1 meV/Å³ without a word)."""
    labelled = emt_structures(2)
    assert labelled[1].pbc.all() and labelled[1].cell.rank == 3
    pred = _offset_predictions(labelled)
    pred[1].set_cell(pred[1].cell.array * 1.10)  # the same Cartesian positions
    with pytest.raises(ValueError, match="frame 1: predicted and labelled cells differ"):
        label_errors(pred, labelled)
    pred = _offset_predictions(labelled)
    pred[1].pbc = False
    with pytest.raises(ValueError, match=r"frame 1: predicted pbc \[False, False, False\]"):
        label_errors(pred, labelled)


def test_evaluate_matches_the_calculator_and_keeps_info(loaded_model, capsys):
    bulk_cell, molecule = emt_structures(1)[0], Atoms("AlCu", positions=[[0, 0, 0], [0, 0, 2.5]])
    bulk_cell.info["config_type"] = "bulk"
    predicted = evaluate([bulk_cell, molecule], loaded_model, verbose=True)
    assert "evaluate: 2/2 structures" in capsys.readouterr().err
    calc = EquivariantCalculator(loaded_model, dtype="float64")
    for pred, atoms in zip(predicted, [bulk_cell, molecule], strict=True):
        atoms = atoms.copy()
        atoms.calc = calc
        assert pred.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(pred.get_forces(), atoms.get_forces(), atol=1e-10)
        assert pred.calc.results["energies"].sum() == pytest.approx(pred.get_potential_energy())
    np.testing.assert_allclose(predicted[0].calc.results["stress"], calc.get_stress(bulk_cell))
    assert "stress" not in predicted[1].calc.results  # no cell
    assert predicted[0].info == {"config_type": "bulk"}
    evaluate([molecule], loaded_model, verbose=False)
    assert capsys.readouterr().err == ""


def test_cli_eval_compares_with_labels_and_writes_predictions(model_path, tmp_path, capsys):
    labelled = emt_structures(3)
    for atoms in labelled:
        atoms.info["config_type"] = "emt"
    data, out = tmp_path / "data.xyz", tmp_path / "pred.xyz"
    ase.io.write(data, labelled)

    assert main(["eval", str(model_path), str(data), "--output", str(out), "-q"]) == 0
    printed = capsys.readouterr().out

    predicted = ase.io.read(out, index=":")
    assert len(predicted) == 3 and predicted[0].info["config_type"] == "emt"
    calc = EquivariantCalculator(str(model_path), dtype="float64")
    per_atom = []
    for pred, atoms in zip(predicted, labelled, strict=True):
        energy = calc.get_potential_energy(atoms.copy())
        assert pred.get_potential_energy() == pytest.approx(energy, abs=1e-8)
        per_atom.append((energy - atoms.calc.results["energy"]) / len(atoms) * 1e3)
    mae, rmse = np.mean(np.abs(per_atom)), np.sqrt(np.mean(np.square(per_atom)))
    assert f"| all | {mae:.3g} / {rmse:.3g} |" in printed
    assert "| config_type=emt |" in printed and "wrote predictions of 3 structures" in printed

    unlabelled = tmp_path / "bare.xyz"
    ase.io.write(
        unlabelled, [Atoms(a.numbers, a.positions, cell=a.cell, pbc=True) for a in labelled]
    )
    assert main(["eval", str(model_path), str(unlabelled), "-q"]) == 0
    assert "no 'energy' labels" in capsys.readouterr().out


def test_cli_eval_names_the_frame_of_a_damaged_file(model_path, tmp_path, capsys):
    path = tmp_path / "bad.xyz"
    ase.io.write(path, emt_structures(2))
    lines = path.read_text().splitlines(keepends=True)
    lines[9] = " ".join(lines[9].split()[:-2]) + "\n"  # frame 1, atom 1: 5 of 7 columns
    path.write_text("".join(lines))
    assert main(["eval", str(model_path), str(path), "-q"]) == 2
    err = capsys.readouterr().err
    assert "bad.xyz, frame 1 (frames are counted from 0), line 10 (atom 1): 5 columns" in err


# ---------------------------------------------------------------------------------------------
# batched evaluation


def _mixed_structures() -> list[Atoms]:
    """Every conftest structure (bulk, small and one-atom cells, slab with and without a box,
    wire, molecule: 1 to 8 atoms, Al and Cu, any periodicity), an EMT cell and an empty one."""
    mixed = [make_structure(name) for name in STRUCTURES]
    mixed.insert(3, Atoms())  # no atoms: energy 0, no model call
    return [*mixed, emt_structures(1)[0]]


@pytest.mark.parametrize("batch_size", [1, 3, "auto"])
def test_batched_evaluate_equals_one_structure_at_a_time(loaded_model, batch_size):
    structures = _mixed_structures()
    predicted = evaluate(structures, loaded_model, batch_size=batch_size, verbose=False)
    calc = EquivariantCalculator(loaded_model, dtype="float64")
    assert len(predicted) == len(structures)
    for k, (pred, atoms) in enumerate(zip(predicted, structures, strict=True)):
        np.testing.assert_array_equal(pred.positions, atoms.positions)
        results = pred.calc.results
        atoms = atoms.copy()
        atoms.calc = calc
        assert results["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-10), k
        np.testing.assert_allclose(results["energies"], atoms.get_potential_energies(), atol=1e-10)
        np.testing.assert_allclose(results["forces"], atoms.get_forces(), atol=1e-10)
        if atoms.cell.rank == 3:
            np.testing.assert_allclose(results["stress"], atoms.get_stress(), atol=1e-10)
        else:  # molecule, slab without a box: stress undefined, not invented
            assert "stress" not in results, k


def _count_model_calls(monkeypatch) -> list[tuple[int, bool, bool]]:
    """Record (graphs, forces, stress) of every model call that evaluate makes."""
    import ase_equi.batched as batched

    calls: list[tuple[int, bool, bool]] = []
    original = batched.energy_forces_stress

    def counted(model, graph, *, forces, stress, **kwargs):
        calls.append((graph.num_graphs, forces, stress))
        return original(model, graph, forces=forces, stress=stress, **kwargs)

    monkeypatch.setattr(batched, "energy_forces_stress", counted)
    return calls


def test_evaluate_makes_one_model_call_per_batch(loaded_model, monkeypatch):
    calls = _count_model_calls(monkeypatch)
    structures = _mixed_structures()  # 9 structures, one without atoms
    evaluate(structures, loaded_model, batch_size=4, verbose=False)
    assert [n for n, _, _ in calls] == [3, 4, 1]  # batch 1 holds the empty structure
    calls.clear()
    evaluate(structures, loaded_model, verbose=False)  # the tiny model: all fit 256 MiB
    assert [n for n, _, _ in calls] == [8]
    calls.clear()
    evaluate(structures, loaded_model, budget_mib=1e-6, verbose=False)  # one each
    assert [n for n, _, _ in calls] == [1] * 8


def test_evaluate_computes_only_the_properties_asked(loaded_model, monkeypatch):
    calls = _count_model_calls(monkeypatch)
    structures = _mixed_structures()
    energy_only = evaluate(structures, loaded_model, properties=["energy"], verbose=False)
    assert calls == [(8, False, False)]
    for pred in energy_only:
        assert sorted(pred.calc.results) == ["energies", "energy", "free_energy"]
    calls.clear()
    full = evaluate(structures, loaded_model, verbose=False)
    with_stress = evaluate(structures, loaded_model, properties=("stress",), verbose=False)
    assert calls[-1] == (8, False, True)
    for a, b, c in zip(energy_only, full, with_stress, strict=True):
        assert a.calc.results["energy"] == pytest.approx(b.calc.results["energy"], abs=1e-10)
        assert "forces" not in c.calc.results
        assert ("stress" in c.calc.results) == (a.cell.rank == 3)
        if a.cell.rank == 3:
            np.testing.assert_allclose(c.calc.results["stress"], b.calc.results["stress"])


def test_evaluate_of_nothing_and_bad_arguments(loaded_model, monkeypatch):
    calls = _count_model_calls(monkeypatch)
    assert evaluate([], loaded_model, verbose=False) == []
    assert calls == []
    with pytest.raises(ValueError, match="properties 'hessian' not known"):
        evaluate([make_structure("bulk")], loaded_model, properties=("energy", "hessian"))
    for bad in (0, -2, 2.5, "all", True):
        with pytest.raises(ValueError, match="batch_size must be a positive int or 'auto'"):
            evaluate([make_structure("bulk")], loaded_model, batch_size=bad, verbose=False)
    structures = [make_structure("bulk"), make_structure("molecule"), Atoms("AlO")]
    with pytest.raises(ValueError, match=r"structure 2: element O \(Z=8\) is not in"):
        evaluate(structures, loaded_model, verbose=False)
    for budget in (0, -5, float("nan"), float("inf"), True):  # NaN would lift the bound
        with pytest.raises(ValueError, match="budget_mib must be a finite number > 0"):
            evaluate(structures[:1], loaded_model, budget_mib=budget, verbose=False)
    with pytest.raises(TypeError, match=r"evaluate\(\) takes a list of structures"):
        evaluate(make_structure("bulk"), loaded_model, verbose=False)
    assert calls == []  # every refusal before any model call


def test_stress_of_a_mixed_batch_only_where_the_cell_has_volume(loaded_model):
    bulk_cell, molecule = make_structure("bulk"), make_structure("molecule")
    graphs = graphs_of([bulk_cell, molecule], loaded_model)
    joined = batch_graphs(graphs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stress needs a cell of rank 3"):
        energy_forces_stress(loaded_model.model, joined, stress=True)
    out = energy_forces_stress(loaded_model.model, joined, stress=True, flat_cells="nan")
    assert torch.isnan(out["stress"][1]).all()  # the molecule: undefined, not invented
    bulk_cell.calc = EquivariantCalculator(loaded_model, dtype="float64")
    sigma = full_3x3_to_voigt_6_stress(out["stress"][0].detach().numpy())
    np.testing.assert_allclose(sigma, bulk_cell.get_stress(), atol=1e-12)
    with pytest.raises(ValueError, match="flat_cells must be 'raise' or 'nan'"):
        energy_forces_stress(loaded_model.model, joined, stress=True, flat_cells="zero")


def test_cli_eval_batch_size(model_path, tmp_path, capsys):
    data = tmp_path / "data.xyz"
    ase.io.write(data, emt_structures(3))
    assert main(["eval", str(model_path), str(data), "-q"]) == 0
    default = capsys.readouterr().out
    assert main(["eval", str(model_path), str(data), "-q", "--batch-size", "2"]) == 0
    assert capsys.readouterr().out == default
    assert main(["eval", str(model_path), str(data), "-q", "--batch-size", "0"]) == 2
    assert "batch_size must be a positive int or 'auto', not 0" in capsys.readouterr().err


def test_auto_batches_stay_within_the_memory_budget(loaded_model):
    structures = [make_structure(name) for name in ("bulk", "slab", "molecule", "bulk", "wire")]
    graphs = graphs_of(structures * 4, loaded_model)
    budget_mib = PEAK_PER_INTERMEDIATE * structure_bytes(loaded_model, 20, 30) / 2**20
    batches = plan_batches(graphs, loaded_model, "auto", budget_mib=budget_mib)
    assert sorted(k for b in batches for k in b) == list(range(20))  # all, in order
    assert 1 < len(batches) < 20
    for batch in batches:
        atoms = sum(graphs[k].num_atoms for k in batch)
        most = max(int(torch.bincount(graphs[k].receivers).max()) for k in batch)
        peak = PEAK_PER_INTERMEDIATE * structure_bytes(loaded_model, atoms, most)
        assert peak <= budget_mib * 2**20 or len(batch) == 1


def test_default_budget_is_256_mib_on_cpu_and_half_the_free_memory_of_a_gpu(monkeypatch):
    """No GPU here: the CUDA memory queries are replaced by a card with 40 GiB free on the
    device and 8 GiB reserved by torch's allocator of which 2 GiB are in use."""
    from ase_equi.batched import DEFAULT_BUDGET_MIB, default_budget_mib

    assert default_budget_mib(torch.device("cpu")) == DEFAULT_BUDGET_MIB
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 8 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2 * gib)
    # free for the next batch: 40 GiB on the device + 6 GiB cached unused = 46 GiB, half of it
    assert default_budget_mib(torch.device("cuda")) == 0.5 * 46 * 1024
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * 2**20, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    assert default_budget_mib(torch.device("cuda")) == DEFAULT_BUDGET_MIB  # never below


def test_auto_batches_use_the_default_budget_of_the_models_device(loaded_model):
    """``budget_mib=None`` (the default) plans as the CPU's 256 MiB budget does."""
    from ase_equi.batched import DEFAULT_BUDGET_MIB

    names = ("bulk", "slab", "molecule", "bulk", "wire")
    graphs = graphs_of([make_structure(name) for name in names] * 4, loaded_model)
    expected = plan_batches(graphs, loaded_model, "auto", budget_mib=DEFAULT_BUDGET_MIB)
    assert plan_batches(graphs, loaded_model, "auto") == expected


def test_a_calculator_is_evaluated_as_it_is_and_another_dtype_or_head_refused(loaded_model):
    """With a calculator as the model, its own dtype, device and head are used; asking for
    others was silently ignored (a float32 result labelled as asked in float64). The same
    values are accepted."""
    from conftest import make_structure

    atoms = make_structure("bulk")
    calc = EquivariantCalculator(loaded_model, dtype="float32")
    predicted = evaluate([atoms], calc, dtype="float32", device="cpu", verbose=False)
    energy = calc.get_potential_energy(atoms.copy())
    assert predicted[0].get_potential_energy() == pytest.approx(energy, abs=1e-4)
    with pytest.raises(ValueError, match=r"dtype='float64'\) with a calculator whose dtype"):
        evaluate([atoms], calc, dtype="float64", verbose=False)
    with pytest.raises(
        ValueError, match=r"head='other'\) with a calculator whose head is 'Default'"
    ):
        evaluate([atoms], calc, head="other", verbose=False)
