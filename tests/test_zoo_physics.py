"""The zoo card's own logic (``scripts/zoo``): target evaluation, defect and surface energies,
frequency conventions and pairing, the MD radial distribution, the reference cache.

Expected values follow from physics or a hand computation: a nearest-neighbour pair potential
at its minimum has an unrelaxed vacancy energy of −e (e = the crystal's energy per atom) and a
(111) surface energy of √3 ε / d²; a diatomic spring has ω = √(k/μ); diamond has four bonds
of √3/4 · a.
"""

from __future__ import annotations

import doctest
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.lj import LennardJones

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "zoo"))
import defects
import molecules_card
import reference_cache
import targets
from physics import vibrational_wavenumbers

SIGMA, EPSILON = 2.3, 0.4  # Å, eV
D_MIN = 2 ** (1 / 6) * SIGMA  # the pair minimum: nearest neighbours at rest
RC = 1.2 * D_MIN  # between the first (d) and second (√2 d) fcc shells


def lj_phi(r: float) -> float:
    """The Lennard-Jones pair energy (eV), shifted to zero at RC, written out here."""

    def u(x: float) -> float:
        return 4 * EPSILON * ((SIGMA / x) ** 12 - (SIGMA / x) ** 6)

    return u(r) - u(RC)


def nearest_neighbour_lj() -> LennardJones:
    return LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=RC)


@pytest.mark.parametrize("module", [defects, molecules_card, reference_cache, targets])
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


def test_vacancy_of_a_pair_potential_costs_minus_the_energy_per_atom():
    a = D_MIN * np.sqrt(2.0)
    e_per_atom = 6 * lj_phi(D_MIN)  # 12 bonds, each shared by two atoms
    perfect = bulk("Ar", "fcc", a=a, cubic=True).repeat(3)
    result = defects.vacancy_formation_energies(perfect, nearest_neighbour_lj)
    assert result["unrelaxed"] == pytest.approx(-e_per_atom, rel=1e-9)
    # every remaining bond is at the pair minimum: no force, nothing to relax
    assert result["relaxed"] == pytest.approx(-e_per_atom, rel=1e-9)


def test_relaxation_lowers_a_vacancy_energy():
    a = 1.02 * D_MIN * np.sqrt(2.0)  # stretched: the vacancy's neighbours move
    perfect = bulk("Ar", "fcc", a=a, cubic=True).repeat(2)
    result = defects.vacancy_formation_energies(perfect, nearest_neighbour_lj, fmax=1e-4)
    assert result["relaxed"] < result["unrelaxed"] - 1e-4


def test_fcc111_surface_energy_counts_three_broken_bonds_per_surface_atom():
    # a slab of N atoms, n per face: surface atoms keep 9 of 12 bonds, so it has 6N − 3n
    # bonds against 6N in N atoms of bulk; E_slab − N e = 3n ε (ε = −φ(d)), γ = 3n ε / (2A)
    # with A = n · √3/2 d² the area per surface atom: γ = √3 ε / d²; in J/m²
    expected = np.sqrt(3) * -lj_phi(D_MIN) / D_MIN**2 * units._e * 1e20
    result = defects.fcc111_surface_energy("Ar", D_MIN * np.sqrt(2.0), nearest_neighbour_lj)
    assert result["unrelaxed"] == pytest.approx(expected, rel=1e-9)
    assert result["relaxed"] == pytest.approx(expected, rel=1e-9)


def test_split_interstitial_is_a_dumbbell_on_the_removed_site():
    perfect = bulk("Si", "diamond", a=5.43, cubic=True)
    site = perfect.positions[0].copy()
    atoms = defects.split_110_interstitial(perfect, half_length=1.1)
    assert len(atoms) == len(perfect) + 1
    assert atoms.get_distance(0, len(perfect), mic=True) == pytest.approx(2.2)
    mid = atoms.positions[len(perfect)] + 0.5 * atoms.get_distance(
        len(perfect), 0, mic=True, vector=True
    )
    assert np.allclose(np.mod(mid - site + 1.0, 5.43) - 1.0, 0.0, atol=1e-9)


def test_interstitial_energy_uses_n_plus_one_over_n():
    # E(N+1) − (N+1)/N · E(N): 65 atoms at −5.0 eV each plus 2 eV, host at −5.0 eV/atom
    assert defects.point_defect_energy(65 * -5.0 + 2.0, 65, 64 * -5.0, 64) == pytest.approx(2.0)


def test_diatomic_spring_frequency():
    k, masses = 36.0, (1.008, 15.999)  # eV/Å², amu
    atoms = Atoms("HO", positions=[[0, 0, 0], [0, 0, 0.97]])
    hessian = np.zeros((6, 6))
    block = np.diag([0.0, 0.0, k])
    hessian[:3, :3] = hessian[3:, 3:] = block
    hessian[:3, 3:] = hessian[3:, :3] = -block
    mu = masses[0] * masses[1] / (masses[0] + masses[1]) * 1.66053906660e-27  # kg
    omega = np.sqrt(k * 1.602176634e-19 / 1e-20 / mu)  # rad/s
    expected = omega / (2 * np.pi * 2.99792458e10)  # cm⁻¹
    (w,) = vibrational_wavenumbers(hessian, atoms)  # linear: 3N − 5 = 1 mode
    assert w == pytest.approx(expected, rel=1e-4)
    (w_negative,) = vibrational_wavenumbers(-hessian, atoms)
    assert w_negative == pytest.approx(-expected, rel=1e-4)  # imaginary → negative


def test_frequencies_pair_in_ascending_order_and_refuse_other_lengths():
    err = molecules_card.frequency_errors([1600.0, 3700.0, 3800.0], [3790.0, 1610.0, 3690.0])
    assert err.tolist() == [-10.0, 10.0, 10.0]
    with pytest.raises(ValueError, match="3 model frequencies with 2 reference"):
        molecules_card.frequency_errors([1.0, 2.0, 3.0], [1.0, 2.0])


def test_held_out_frequencies_skip_missing_elements(tmp_path):
    path = tmp_path / "frequencies.json"
    path.write_text('{"molecules": [{"name": "NH3", "symbols": ["N", "H", "H", "H"], '
                    '"positions_A": [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], '
                    '"frequencies_cm1": [1, 2, 3, 4, 5, 6]}]}')  # fmt: skip
    rows = molecules_card.held_out_molecules(None, elements=[1, 6, 8], path=path)
    assert rows == {"NH3": {"skipped": "an element the model does not have"}}
    assert molecules_card.held_out_molecules(None, [1], path=tmp_path / "absent.json") == {}


def test_rdf_of_the_diamond_crystal():
    import md_stability

    a = 5.63
    crystal = bulk("Si", "diamond", a=a, cubic=True).repeat(2)
    histogram = np.histogram(md_stability.pair_distances(crystal), md_stability.RDF_BINS)[0]
    summary = md_stability.rdf_summary(histogram, samples=1, n_atoms=len(crystal))
    assert summary["mean_coordination"] == pytest.approx(4.0)
    assert abs(summary["rdf_first_peak_A"] - np.sqrt(3) / 4 * a) <= 0.01  # half a bin


def _checks(deviation: float, force_error: float) -> dict:
    return {
        "equation_of_state": {
            "Cu": {"a0": {"model": 1.0, "reference": 1.0, "deviation_percent": deviation}},
        },
        "short_contact_forces": {"Cu": {"max_force_error": {"value": force_error, "unit": "eV/Å"}}},
    }


def test_targets_judge_percent_absolute_and_missing():
    specs = [
        targets.Target("equation_of_state", "a0", "percent", 3.0),
        targets.Target("short_contact_forces", "max_force_error", "at_most", 0.5),
    ]
    rows = targets.evaluate(_checks(-3.0, 0.5), specs)  # both exactly at the limit
    assert [r.passed for r in rows] == [True, True] and targets.all_met(rows)
    rows = targets.evaluate(_checks(3.01, 0.51), specs)
    assert [r.result() for r in rows] == ["FAIL", "FAIL"] and not targets.all_met(rows)
    missing = targets.evaluate(
        _checks(0.0, 0.0), [targets.Target("md_stability", "stable", "is_true")]
    )
    assert [r.result() for r in missing] == ["not measured"] and not targets.all_met(missing)
    assert "1 not measured" in targets.markdown(missing)


def test_target_rule_is_checked():
    with pytest.raises(ValueError, match="rule 'within'"):
        targets.Target("equation_of_state", "a0", "within", 3.0)


def test_every_target_names_a_check_its_card_writes():
    written = {
        "metals": {"equation_of_state", "elastic_constants_GPa", "vacancy_formation_eV",
                   "surface_energy_111_J_m2", "short_contact_forces"},
        "silicon-xtb": {"equation_of_state", "elastic_constants_GPa", "vacancy_formation_eV",
                        "interstitial_formation_eV", "md_stability"},
        "molecules-pbe": {"test_set_errors", "harmonic_frequencies_cm-1",
                          "training_molecule_frequencies_cm-1"},
    }  # fmt: skip
    for name, specs in targets.TARGETS.items():
        assert {t.check for t in specs} == written[name]


def test_card_domain_and_limits_name_the_elements_and_the_missed_targets():
    import make_card

    assert make_card.domain("metals", [13, 29]).startswith("fcc Al and Cu and their")
    specs = [
        targets.Target("equation_of_state", "a0", "percent", 3.0),
        targets.Target("short_contact_forces", "max_force_error", "at_most", 0.5),
        targets.Target("md_stability", "stable", "is_true"),
    ]
    text = make_card.limits("metals", targets.evaluate(_checks(-4.5, 0.2), specs))
    assert "equation_of_state a0 (within 3 %): Cu -4.50 %" in text
    assert "max_force_error" not in text  # 0.2 eV/Å meets its target
    assert text.endswith("not measured: md_stability stable.")


def test_card_lists_every_stage_of_a_warm_started_run(tmp_path, monkeypatch):
    """A train_strain_pairs.py run started from the installed model (``--start models``) and a
    second run started from the first: the card's stages are the installed model's, then each
    run's own, in order; a run of another script is its own stage only."""
    import json

    import make_card

    def write(folder, description, lr):
        folder.mkdir(parents=True)
        card = {"description": description, "training": {"settings": {"lr": lr}}}
        (folder / "metals.json").write_text(json.dumps({"card": card}))

    installed = [{"settings": {"lr": 1e-2}}, {"settings": {"lr": 1e-3}}]
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "metals.json").write_text(
        json.dumps({"card": {"training_stages": installed}})
    )
    monkeypatch.setattr(make_card, "ROOT", tmp_path)
    runs = tmp_path / "runs"
    write(runs / "a", "set v4; trained further from models with the cutoff set to 6 Å, ...", 5e-3)
    write(runs / "b", "set v4; trained further from a, loss weights of stage 4, ...", 1e-3)
    write(runs / "c", "EMT frames from scripts/zoo/generate_metals_emt.py --set v2", 2e-2)
    rates = [s["settings"]["lr"] for s in make_card.training_stages(runs / "b", "metals")]
    assert rates == [1e-2, 1e-3, 5e-3, 1e-3]
    assert [s["settings"]["lr"] for s in make_card.training_stages(runs / "c", "metals")] == [2e-2]
    assert make_card.started_from({"description": "x; trained further from a, y"}) == "a"


def test_card_lists_the_stages_of_a_recipe_variant(tmp_path):
    """``train_zoo.py --prefix P``: P-stage3's card lists P's, P-stage2's and its own stage, in
    order, as the default prefix NAME-v2 does; a -stageN folder with no stage-1 folder beside
    it is its own stage only."""
    import json

    import make_card

    for folder, lr in [("si-c64", 1e-2), ("si-c64-stage2", 1e-3), ("si-c64-stage3", 5e-4)]:
        (tmp_path / folder).mkdir()
        card = {"description": "GFN1-xTB frames", "training": {"settings": {"lr": lr}}}
        (tmp_path / folder / "silicon-xtb.json").write_text(json.dumps({"card": card}))
    stages = make_card.training_stages(tmp_path / "si-c64-stage3", "silicon-xtb")
    assert [s["settings"]["lr"] for s in stages] == [1e-2, 1e-3, 5e-4]
    (tmp_path / "si-c64").rename(tmp_path / "elsewhere")
    stages = make_card.training_stages(tmp_path / "si-c64-stage3", "silicon-xtb")
    assert [s["settings"]["lr"] for s in stages] == [5e-4]


def test_md_is_judged_stable_only_after_50_ps_at_both_temperatures(tmp_path):
    import json

    import silicon_card

    def run(temperature, ps, stable=True):
        return {"temperature_K": temperature, "simulated_ps": ps, "complete": True,
                "stable": stable, "shortest_contact_A": 2.2, "mean_temperature_K": temperature,
                "rdf_first_peak_A": 2.4, "mean_coordination": 4.0}  # fmt: skip

    path = tmp_path / "md-stability.json"
    for runs, expected in (
        ([run(300.0, 50.0), run(1200.0, 50.0)], [True, True]),
        ([run(300.0, 0.1), run(1200.0, 50.0, stable=False)], [False, False]),
        ([run(300.0, 50.0)], [True, False]),  # no 1,200 K run
    ):
        path.write_text(json.dumps({"weights_sha256": "abc", "runs": runs}))
        rows = silicon_card.md_check(path, "abc")
        assert [rows[k]["stable"]["value"] for k in ("300 K", "1200 K")] == expected
    assert silicon_card.md_check(path, "another model") is None
