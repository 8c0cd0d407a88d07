"""Last-layer prediction rigidity (LLPR) for a zoo model: fit, calibrate, store, measure.

    OMP_NUM_THREADS=1 python scripts/uncertainty/zoo_rigidity.py metals [--jacobian]

For zoo model NAME (``models/NAME.json``), with the split of its training run rebuilt exactly
(``split_frames`` with the seed and fractions on its card, the data file of
``scripts/zoo/make_replay_sets.py``):

1. ``train``: C = Σ_s f_s f_sᵀ and C_loc = Σ_i f_i f_iᵀ over the *training* split
   (:mod:`ase_equi.model.prediction_rigidity`);
2. ``valid``: per structure energy and force errors and features; the regularisers λ/(tr C/d)
   and λ_loc/(tr C_loc/d) (grid 1e-12 … 1e-2), the factors α_E, α_F and the force estimate
   are chosen on the *validation* split, never on the test set: regularisers and factors by
   the Gaussian negative log-likelihood of the validation errors (α in closed form, as
   :func:`ase_equi.uncertainty_calibration.fit_calibration`) for each force estimate
   (``local``: the atom's own rigidity; ``neighbourhood`` / ``neighbourhood_smooth``: summed
   over the atom and its neighbours within r_max, unweighted / weighted (1 + cos πr/r_max)/2,
   :mod:`ase_equi.model.prediction_rigidity`), and the estimate by the validation Spearman ρ
   of the per-structure mean uncertainty against the force RMSE (the ranking it is for);
3. the section is written into ``models/NAME.*`` (energies of the test set checked identical
   before and after);
4. ``test``: on the shipped held-out set ``models/NAME-test.xyz.xz``: Spearman rank correlation
   between the predicted per-structure force uncertainty (the mean over atoms of
   ``forces_uncertainty``; also its maximum) and the actual force RMSE of the structure; the
   fraction of the worst 5 % of structures (by force RMSE) flagged by a threshold on the
   largest atomic uncertainty set at the 95th / 90th percentile of the validation structures
   (what ``uncertainty_threshold`` acts on), and by the thresholds that flag 5 % / 10 % of the
   test structures; the miscalibration area of the force errors; a calibration plot;
5. ``ood``: out-of-domain structures (metals: compressed/sheared cells and pushed pairs down to
   0.8 d_nn from ``scripts/zoo/check_short_contacts.py``, labelled with EMT; silicon-xtb and
   molecules-pbe: structures the card excludes, unlabelled unless their reference calculator
   is installed): are they flagged by the validation thresholds?
6. ``cost``: median time of a force call with and without the uncertainty (calculator).

The test figures of every force estimate (each at its own validation choices) are reported
beside the chosen one's, and the calculator's ``forces_uncertainty`` of the written file is
checked against this script's on the first test structures. ``--calibration-only`` keeps the
previous timing of stage 6 (for a refit of the section alone).

With ``--jacobian`` also the exact LLPR force variance diag(Jᵀ C⁻¹ J) (d backward passes per
structure) on the validation and test sets, calibrated the same way, for comparison.

Every stage is kept in ``runs/zoo_rigidity/NAME/WEIGHTS/`` (WEIGHTS: the first 12 hex digits of
the SHA-256 of the model's own tensors, the section's left out, so a retrained model never
reuses another's stages and a rewritten section does not orphan them; a rerun continues
where it stopped; out-of-domain reference forces are kept there too); the
results go to ``benchmarks/results/2026-11-30-zoo-uncertainty.json`` (one entry per model) and
the calibration plot to ``benchmarks/results/2026-11-30-zoo-uncertainty-NAME.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from scipy.stats import spearmanr

from ase_equi import EquivariantCalculator
from ase_equi.data import read_structures
from ase_equi.graph.build import atoms_to_graph, batch_graphs
from ase_equi.io.model_file import read_model_file, read_weights
from ase_equi.io.rigidity_section import TENSORS, write_rigidity
from ase_equi.learning_rigidity import rigidity_statistics
from ase_equi.model.gradients import energy_forces_stress
from ase_equi.model.prediction_rigidity import (
    FORCES_ESTIMATES,
    LOCAL,
    NEIGHBOURHOOD,
    NEIGHBOURHOOD_SMOOTH,
    LastLayerRigidity,
    RigidityStatistics,
    capture_features,
    feature_dim,
    jacobian_forces_uncertainty,
    neighbour_pairs,
    pair_weights,
    regularised_inverse,
    structure_features,
)
from ase_equi.uncertainty_calibration import calibration_plot, miscalibration_area

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "zoo"))
from make_replay_sets import NAMES, training_data, training_split  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
STEM = "2026-11-30-zoo-uncertainty"
GRID = (1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2)
FEATURES = (
    "f_i = scale * [0e channels fed to the linear readout of every layer but the last, "
    "hidden SiLU activations of the last layer's readout]; per structure f_s = sum_i f_i"
)


def splits(name: str) -> dict[str, list]:
    """Labelled Atoms of the training run's train and valid splits, and the shipped test set."""
    split, images = training_split(name)
    out = {kind: [images[k] for k in split[kind]] for kind in ("train", "valid")}
    out["test"] = [s.atoms for s in read_structures(ROOT / "models" / f"{name}-test.xyz.xz")]
    return out


def graph_of(loaded, atoms):
    cfg = loaded.config
    return atoms_to_graph(atoms, cfg.elements, cfg.r_max, dtype=torch.float64)


def train_statistics(loaded, frames: list, batch: int = 8) -> RigidityStatistics:
    """C and C_loc (no regulariser) over ``frames``, ``batch`` structures per model call."""
    return rigidity_statistics(loaded.model, frames, batch=batch)


def labelled_predictions(loaded, frames: list) -> dict[str, np.ndarray]:
    """Per atom: features ``f_i [N, d]``, force errors ``[N, 3]`` (eV/Å), structure index;
    per structure: ``f_s [S, d]``, energy error (eV), atom count."""
    rows: dict[str, list] = {k: [] for k in ("f_i", "force_err", "owner", "f_s", "e_err", "n")}
    for s, atoms in enumerate(frames):
        graph = graph_of(loaded, atoms)
        with capture_features(loaded.model) as capture:
            out = energy_forces_stress(loaded.model, graph, forces=True)
        f_i = capture.node_features().detach()
        rows["f_i"].append(f_i.numpy())
        rows["f_s"].append(structure_features(f_i, graph.batch, 1).numpy()[0])
        rows["force_err"].append(out["forces"].numpy() - atoms.get_forces())
        rows["e_err"].append(float(out["energy"][0].detach()) - atoms.get_potential_energy())
        rows["owner"].append(np.full(len(atoms), s))
        rows["n"].append(len(atoms))
    stack = {"f_i", "force_err", "owner"}
    return {k: np.concatenate(v) if k in stack else np.array(v) for k, v in rows.items()}


def quad(features: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """sqrt(fᵀ A f) for each row f of ``features``."""
    return np.sqrt(np.clip(np.einsum("nd,de,ne->n", features, inverse, features), 0, None))


def pairs_of(loaded, frames: list) -> dict[str, np.ndarray]:
    """Global atom indices ``centres``, ``neighbours`` and relative length ``x`` = r/r_max of
    every ordered pair closer than the model's r_max in ``frames`` (atoms numbered as in
    :func:`labelled_predictions`)."""
    rows: dict[str, list] = {"centres": [], "neighbours": [], "x": []}
    offset = 0
    for atoms in frames:
        i, j, x = neighbour_pairs(graph_of(loaded, atoms), float(loaded.config.r_max))
        rows["centres"].append(i.numpy() + offset)
        rows["neighbours"].append(j.numpy() + offset)
        rows["x"].append(x.numpy())
        offset += len(atoms)
    return {k: np.concatenate(v) for k, v in rows.items()}


def forces_sigma(
    features: np.ndarray, inverse: np.ndarray, estimate: str, pairs: dict[str, np.ndarray]
) -> np.ndarray:
    """Uncalibrated per-atom force uncertainty of ``estimate`` (``"local"``: sqrt(q_i); the
    neighbourhood ones: sqrt(q_i + Σ_pairs w q_j)), q_i = f_iᵀ C_loc⁻¹ f_i."""
    return sigma_of_rigidity(quad(features, inverse) ** 2, estimate, pairs)


def sigma_of_rigidity(q: np.ndarray, estimate: str, pairs: dict[str, np.ndarray]) -> np.ndarray:
    """:func:`forces_sigma` from the local rigidities ``q [atoms]`` (shared by the estimates)."""
    if estimate != LOCAL:
        w = pair_weights(estimate, torch.from_numpy(pairs["x"])).numpy()
        q = q + np.bincount(pairs["centres"], weights=w * q[pairs["neighbours"]], minlength=len(q))
    return np.sqrt(q)


def gaussian_fit(err2: np.ndarray, sigma: np.ndarray, components: int) -> tuple[float, float]:
    """(α, NLL per component) for errors with squared norms ``err2`` over ``components``
    components, each of variance (α σ)² / components."""
    keep = sigma > 0
    alpha = float(np.sqrt(np.mean(err2[keep] / sigma[keep] ** 2)))
    var = (alpha * sigma[keep]) ** 2 / components
    nll = 0.5 * np.log(2 * np.pi * var) + err2[keep] / (2 * components * var)
    return alpha, float(np.mean(nll))


def calibrate(
    stats: dict[str, np.ndarray], valid: dict[str, np.ndarray], pairs: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Regularisers and factors by validation NLL (energy: per structure; forces: per atom, for
    each estimate of ``FORCES_ESTIMATES``); the force estimate by the validation Spearman ρ
    between the per-structure mean uncertainty and force RMSE (what it is asked to rank)."""
    best: dict[str, Any] = {}
    inverse = {rel: regularised_inverse(torch.from_numpy(stats["C"]), rel).numpy() for rel in GRID}
    trials = []
    for rel, inv in inverse.items():
        alpha, nll = gaussian_fit(valid["e_err"] ** 2, quad(valid["f_s"], inv), 1)
        trials.append({"relative": rel, "alpha": alpha, "nll": nll})
    best["energy"] = {**min(trials, key=lambda t: t["nll"]), "trials": trials}
    err2 = (valid["force_err"] ** 2).sum(1)
    trials = []
    sigmas: dict[tuple[str, float], np.ndarray] = {}
    for rel in GRID:
        local = regularised_inverse(torch.from_numpy(stats["C_loc"]), rel).numpy()
        q = quad(valid["f_i"], local) ** 2
        for estimate in FORCES_ESTIMATES:
            sigma = sigmas[estimate, rel] = sigma_of_rigidity(q, estimate, pairs)
            alpha, nll = gaussian_fit(err2, sigma, 3)
            trials.append({"estimate": estimate, "relative": rel, "alpha": alpha, "nll": nll})
    by_estimate = estimate_figures(valid, trials, sigmas)
    chosen = max(by_estimate.values(), key=lambda t: t["spearman_mean_u_vs_force_rmse"])
    best["forces"] = {**chosen, "by_estimate": by_estimate, "trials": trials}
    return best


def per_structure(owner: np.ndarray, values: np.ndarray, how: str) -> np.ndarray:
    count = owner.max() + 1
    if how == "max":
        out = np.full(count, -np.inf)
        np.maximum.at(out, owner, values)
        return out
    return np.bincount(owner, weights=values, minlength=count) / np.bincount(owner)


def ranking(u: np.ndarray, pred: dict[str, np.ndarray], err: dict[str, np.ndarray]) -> dict:
    """Rank correlation and flagging figures on one labelled set (see the module docstring)."""
    rmse = np.sqrt(per_structure(err["owner"], (err["force_err"] ** 2).mean(1), "mean"))
    mean_u = per_structure(err["owner"], u, "mean")
    max_u = per_structure(err["owner"], u, "max")
    n = len(rmse)
    k = max(1, round(0.05 * n))
    worst = set(np.argsort(-rmse)[:k].tolist())
    out = {
        "structures": n,
        "spearman_mean_u_vs_force_rmse": float(spearmanr(mean_u, rmse)[0]),
        "spearman_max_u_vs_force_rmse": float(spearmanr(max_u, rmse)[0]),
        "worst_5pct": k,
    }
    for q in (5, 10):  # thresholds that flag q % of this set (by the mean uncertainty)
        flagged = set(np.argsort(-mean_u)[: max(1, round(q / 100 * n))].tolist())
        out[f"worst_flagged_at_top{q}pct"] = len(worst & flagged) / k
    for name, t in pred.items():  # validation thresholds on the largest atomic uncertainty
        flagged = set(np.nonzero(max_u > t)[0].tolist())
        out[f"flagged_fraction_{name}"] = len(flagged) / n
        out[f"worst_flagged_{name}"] = len(worst & flagged) / k
    return out


def cached(path: Path, make) -> dict[str, np.ndarray]:
    """The arrays in ``path`` (npz), made by ``make()`` and saved the first time."""
    if path.exists():
        with np.load(path) as data:
            return dict(data)
    arrays = make()
    np.savez(path.with_suffix(".tmp.npz"), **arrays)
    path.with_suffix(".tmp.npz").replace(path)
    return arrays


def emt_forces(atoms) -> np.ndarray:
    from ase.calculators.emt import EMT

    ref = atoms.copy()
    ref.calc = EMT()
    return ref.get_forces()


def pbe_forces(atoms) -> np.ndarray:
    """PBE/def2-SVP forces as the zoo's data were labelled (generate_molecules_pyscf.py)."""
    from generate_molecules_pyscf import dft

    return dft(atoms, "pbe")[1]


def ood_structures(name: str, rng: np.random.Generator) -> list[tuple[str, Any, Any]]:
    """``(kind, atoms, reference forces function or None)`` outside the training domain."""
    from ase.build import bulk, molecule

    out: list[tuple[str, Any, Any]] = []
    if name == "metals":
        from check_short_contacts import draw, issue_case
        from generate_metals_emt import ELEMENTS, LATTICE

        for el in ELEMENTS:  # d_nn at the data's lattice constant (EMT's a0 within 0.5 %)
            d_nn = LATTICE[el] / np.sqrt(2.0)
            for kind in ("compressed_sheared", "short_pair"):
                for _ in range(3):
                    atoms = draw(el, LATTICE[el], kind, rng, 0.8 * d_nn)
                    out.append((f"{el} {kind}", atoms, emt_forces))
        seen: list[Any] = []  # the issue's sheared Ni cell with a 1.90 Å contact: issue_case

        class Keep:  # builds it and hands it to a calculator's get_forces, which keeps it
            def get_forces(self, atoms=None):
                seen.append(atoms.copy())
                return np.zeros((len(atoms), 3))

        issue_case(Keep())
        out.append(("Ni sheared, one 1.90 Å contact (the issue's case)", seen[0], emt_forces))
        return out
    if name == "silicon-xtb":  # no reference here (tblite is not installed): unlabelled
        slab = bulk("Si", "diamond", a=5.63, cubic=True).repeat((2, 2, 2))
        slab.center(vacuum=6.0, axis=2)
        out.append(("Si (001) slab, unreconstructed", slab, None))
        for scale, rattle in ((0.92, 0.05), (1.0, 0.35), (1.08, 0.1)):
            a = bulk("Si", "diamond", a=5.63 * scale, cubic=True).repeat(2)
            a.rattle(rattle, seed=int(rng.integers(1 << 31)))
            out.append((f"Si a×{scale}, rattle {rattle} Å", a, None))
        return out
    try:
        import pyscf  # noqa: F401

        reference = pbe_forces
    except ImportError:
        reference = None
    # five of the held-out molecules of generate_molecules_v2.py (none of the 35 in training)
    for formula in ("C2H6CHOH", "H2CCO", "CH2OCH2", "C4H4NH", "H2CCHCN"):
        for rattle in (0.0, 0.05):
            a = molecule(formula)
            if rattle:
                a.rattle(rattle, seed=int(rng.integers(1 << 31)))
            out.append((f"{formula}" + (f" rattled {rattle} Å" if rattle else ""), a, reference))
    return out


def ood_rows(loaded, name: str, thresholds: dict[str, float], work: Path) -> list[dict]:
    """One row per out-of-domain structure; reference forces are kept in ``work`` (they do
    not depend on the model, and the PBE ones take minutes)."""
    rows = []
    calc = EquivariantCalculator(loaded)
    store_path = work / "ood_reference.npz"
    known: dict[str, np.ndarray] = {}
    if store_path.exists():
        with np.load(store_path) as data:
            known = dict(data)
    for k, (kind, atoms, reference) in enumerate(ood_structures(name, np.random.default_rng(17))):
        atoms.calc = calc
        forces = atoms.get_forces()
        u = calc.get_property("forces_uncertainty", atoms)
        row = {
            "kind": kind,
            "atoms": len(atoms),
            "max_u": float(u.max()),
            "mean_u": float(u.mean()),
        }
        row.update({f"flagged_{k}": bool(u.max() > t) for k, t in thresholds.items()})
        if reference is not None:
            if str(k) not in known:
                known[str(k)] = reference(atoms)
                np.savez(store_path, **known)
            diff = forces - known[str(k)]
            row["force_rmse"] = float(np.sqrt(np.mean(diff**2)))
            row["max_force_error"] = float(np.linalg.norm(diff, axis=1).max())
        rows.append(row)
        print(row, flush=True)
    return rows


def ood_summary(rows: list[dict], thresholds: dict[str, float]) -> dict[str, Any]:
    """Fractions flagged, and the rank correlation of max u with the largest force error."""
    out: dict[str, Any] = {"structures": len(rows)}
    for key in thresholds:
        out[f"flagged_fraction_{key}"] = float(np.mean([r[f"flagged_{key}"] for r in rows]))
    labelled = [r for r in rows if "max_force_error" in r]
    if len(labelled) > 2:
        pred, err = [r["max_u"] for r in labelled], [r["max_force_error"] for r in labelled]
        out["spearman_max_u_vs_max_force_error"] = float(spearmanr(pred, err)[0])
        bad = [r for r in labelled if r["max_force_error"] > 0.5]
        out["structures_with_max_force_error_above_0.5"] = len(bad)
        for key in thresholds:
            flagged = sum(r[f"flagged_{key}"] for r in bad)
            out[f"of_those_flagged_{key}"] = int(flagged)
    return out


def cost(path: Path, atoms, repeats: int = 21) -> dict[str, float]:
    """Median seconds of a force call (new positions each time) without and with the
    uncertainty (``forces_uncertainty`` asked once, then computed in every pass); the two
    calculators alternate, so that a change of the machine's load hits both alike."""
    works = {}
    for label in ("without", "with"):
        work = atoms.copy()
        work.calc = EquivariantCalculator(str(path), skin=0.0)
        if label == "with":
            work.calc.get_property("forces_uncertainty", work)
        work.get_forces()
        works[label] = work
    samples: dict[str, list[float]] = {"without": [], "with": []}
    for k in range(repeats):
        for label, work in works.items():
            work.positions[0, 0] += 1e-4 * (-1) ** k
            start = time.perf_counter()
            work.get_forces()
            samples[label].append(time.perf_counter() - start)
    times = {label: float(np.median(v)) for label, v in samples.items()}
    times["ratio"] = times["with"] / times["without"]
    return times


def jacobian_u(loaded, frames: list, inverse: np.ndarray) -> dict[str, np.ndarray]:
    """Uncalibrated exact LLPR force uncertainty per atom, and seconds per structure."""
    values, seconds = [], []
    inv = torch.from_numpy(inverse)
    for atoms in frames:
        start = time.perf_counter()
        values.append(jacobian_forces_uncertainty(loaded.model, graph_of(loaded, atoms), inv))
        seconds.append(time.perf_counter() - start)
    return {"u": torch.cat(values).numpy(), "seconds": np.array(seconds)}


def estimate_figures(valid, trials: list[dict], sigmas: dict) -> dict[str, dict]:
    """Per force estimate: its best validation trial (NLL) and the validation Spearman ρ of
    the per-structure mean uncertainty (``sigmas[estimate, relative]``, uncalibrated) against
    the force RMSE there."""
    rmse = np.sqrt(per_structure(valid["owner"], (valid["force_err"] ** 2).mean(1), "mean"))
    out = {}
    for estimate in FORCES_ESTIMATES:
        best = min((t for t in trials if t["estimate"] == estimate), key=lambda t: t["nll"])
        sigma = sigmas[estimate, best["relative"]]
        rho = spearmanr(per_structure(valid["owner"], sigma, "mean"), rmse)[0]
        out[estimate] = {**best, "spearman_mean_u_vs_force_rmse": float(rho)}
    return out


def fit(name: str, loaded, sets: dict[str, list], work: Path):
    """Stages 1-2: the rigidity (factors chosen on the validation split) and its figures."""

    def make_stats() -> dict[str, np.ndarray]:
        stats = train_statistics(loaded, sets["train"])
        return {
            "C": stats.covariance.numpy(),
            "C_loc": stats.local_covariance.numpy(),
            "counts": np.array([stats.structures, stats.atoms]),
        }

    stats = cached(work / "train.npz", make_stats)
    valid = cached(work / "valid.npz", lambda: labelled_predictions(loaded, sets["valid"]))
    pairs = pairs_of(loaded, sets["valid"])
    cal = calibrate(stats, valid, pairs)
    forces = cal["forces"]
    inverse = regularised_inverse(torch.from_numpy(stats["C"]), cal["energy"]["relative"])
    local = regularised_inverse(torch.from_numpy(stats["C_loc"]), forces["relative"])
    raw = forces_sigma(valid["f_i"], local.numpy(), forces["estimate"], pairs)
    max_valid = per_structure(valid["owner"], forces["alpha"] * raw, "max")
    thresholds = {f"valid_p{q}": float(np.percentile(max_valid, q)) for q in (95, 90)}
    area = miscalibration_area(valid["force_err"], raw, forces["alpha"])
    info = {
        "method": "llpr",
        "head": loaded.head,
        "feature_dim": feature_dim(loaded.model),
        "features": FEATURES,
        "forces_estimate": forces["estimate"],
        "regulariser": cal["energy"]["relative"],
        "local_regulariser": forces["relative"],
        "n_structures": int(stats["counts"][0]),
        "n_atoms": int(stats["counts"][1]),
        "data": (
            f"training split of {training_data(name).relative_to(ROOT)} "
            "(seed and fractions of the model card)"
        ),
        "calibration": {
            "data": f"validation split, {len(valid['n'])} structures",
            "method": "gaussian_nll (factor in closed form; regulariser from a grid); "
            f"forces_estimate of {list(FORCES_ESTIMATES)} by the Spearman rank correlation "
            "of the per-structure mean uncertainty with the force RMSE",
            "forces_by_estimate": forces["by_estimate"],
            "forces_miscalibration_area": area,
            "thresholds_eV_per_A": thresholds,
        },
    }
    rigidity = LastLayerRigidity(inverse, local, cal["energy"]["alpha"], forces["alpha"], info=info)
    return rigidity, cal, thresholds, valid


def store(path: Path, loaded, rigidity, frames: list, card_entry: dict) -> float:
    """Stage 3: write the section and the card's ``uncertainty`` entry; returns the largest
    energy change (eV) over ``frames`` (0: the weights are untouched)."""

    def energies(model) -> np.ndarray:
        graphs = batch_graphs([graph_of(loaded, a) for a in frames])
        return energy_forces_stress(model, graphs, forces=False)["energy"].numpy()

    before = energies(loaded.model)
    write_rigidity(path, rigidity, card_entry=card_entry)
    after_model = read_model_file(path)
    change = float(np.abs(energies(after_model.model) - before).max())
    if change > 1e-12 or after_model.rigidity is None:
        raise SystemExit(f"{path}: energies changed by {change} eV after writing the section")
    return change


def measure_test(rigidity, test: dict[str, np.ndarray], pairs, thresholds, plot: Path) -> dict:
    """Stage 4 on the held-out set (``pairs``: its :func:`pairs_of`)."""
    local = rigidity.local_inverse_covariance.numpy()
    raw = forces_sigma(test["f_i"], local, rigidity.forces_estimate, pairs)
    u = rigidity.forces_factor * raw
    out = ranking(u, thresholds, test)
    out["forces_estimate"] = rigidity.forces_estimate
    sigma_e = rigidity.energy_factor * quad(test["f_s"], rigidity.inverse_covariance.numpy())
    out["spearman_energy_u_vs_abs_energy_error"] = float(
        spearmanr(sigma_e, np.abs(test["e_err"]))[0]
    )
    out["forces_miscalibration_area"] = miscalibration_area(
        test["force_err"], raw, rigidity.forces_factor
    )
    out["forces_miscalibration_area_uncalibrated"] = miscalibration_area(
        test["force_err"], raw, 1.0
    )
    out["energy_z_rms"] = float(np.sqrt(np.mean((test["e_err"] / sigma_e) ** 2)))
    calibration_plot(
        test["force_err"],
        raw,
        {"uncalibrated": 1.0, "calibrated on valid": rigidity.forces_factor},
        plot,
    )
    return out


def jacobian_figures(loaded, rigidity, sets, valid, test, thresholds_q, work: Path) -> dict:
    """The exact form diag(Jᵀ C⁻¹ J) on valid (calibration) and test (figures); ``sets``:
    the Atoms of :func:`splits`, ``valid`` and ``test``: their :func:`labelled_predictions`."""
    inverse = rigidity.inverse_covariance.numpy()
    jv = cached(work / "jacobian_valid.npz", lambda: jacobian_u(loaded, sets["valid"], inverse))
    jt = cached(work / "jacobian_test.npz", lambda: jacobian_u(loaded, sets["test"], inverse))
    alpha, _ = gaussian_fit((valid["force_err"] ** 2).sum(1), jv["u"], 3)
    max_valid = per_structure(valid["owner"], alpha * jv["u"], "max")
    thresholds = {f"valid_p{q}": float(np.percentile(max_valid, q)) for q in thresholds_q}
    out = ranking(alpha * jt["u"], thresholds, test)
    out["forces_factor"] = alpha
    out["forces_miscalibration_area"] = miscalibration_area(test["force_err"], jt["u"], alpha)
    out["seconds_per_structure_median"] = float(np.median(jt["seconds"]))
    return out


def card_entry(name: str, rigidity, figures: dict, thresholds: dict, n_valid: int) -> dict:
    """The card's ``uncertainty`` entry: the estimate, its calibration and the test figures."""
    calib = rigidity.info["calibration"]
    how = {
        LOCAL: "the atom's own local rigidity",
        NEIGHBOURHOOD: "the local rigidities of the atom and its neighbours within r_max",
        NEIGHBOURHOOD_SMOOTH: "the local rigidities of the atom and its neighbours within "
        "r_max, weighted (1 + cos(pi r/r_max))/2",
    }[rigidity.forces_estimate]
    return {
        "estimate": "last-layer prediction rigidity (LLPR) of this one model: "
        f"energy_uncertainty (eV) and forces_uncertainty (eV/Å per atom, {how}); "
        "no stress_uncertainty",
        "calibration": f"factors and force estimate fitted on the validation split ({n_valid} "
        f"structures): alpha_E {rigidity.energy_factor:.4g}, alpha_F "
        f"{rigidity.forces_factor:.4g}, forces_estimate {rigidity.forces_estimate}; "
        f"force miscalibration area {calib['forces_miscalibration_area']:.3f} there",
        "test": {
            "structures": figures["structures"],
            "spearman_force_uncertainty_vs_force_rmse": round(
                figures["spearman_mean_u_vs_force_rmse"], 3
            ),
            "worst_5pct_flagged_at_valid_p95": round(figures["worst_flagged_valid_p95"], 3),
            "worst_5pct_flagged_at_valid_p90": round(figures["worst_flagged_valid_p90"], 3),
            "forces_miscalibration_area": round(figures["forces_miscalibration_area"], 3),
        },
        "uncertainty_threshold_eV_per_A": {k: round(v, 4) for k, v in thresholds.items()},
        "script": f"OMP_NUM_THREADS=1 python scripts/uncertainty/zoo_rigidity.py {name}",
    }


def weights_key(path: Path) -> str:
    """The first 12 hex digits of the SHA-256 of the model's own tensors (the section's left
    out, so that writing the section does not orphan the cached stages of these weights)."""
    header = json.loads(path.read_text())
    tensors = load_safetensors(read_weights(header, path))
    own = {k: v for k, v in tensors.items() if k not in TENSORS.values()}
    return hashlib.sha256(save_safetensors(own)).hexdigest()[:12]


def other_estimates(work: Path, rigidity, test, pairs) -> dict[str, dict]:
    """Test figures of every force estimate at its own validation-chosen regulariser and
    factor (the chosen one included): the comparison, never the choice."""
    with np.load(work / "train.npz") as data:
        c_loc = torch.from_numpy(data["C_loc"])
    out = {}
    for estimate, best in rigidity.info["calibration"]["forces_by_estimate"].items():
        local = regularised_inverse(c_loc, best["relative"]).numpy()
        u = best["alpha"] * forces_sigma(test["f_i"], local, estimate, pairs)
        figures = ranking(u, {}, test)
        keep = ("spearman_mean_u_vs_force_rmse", "spearman_max_u_vs_force_rmse")
        out[estimate] = {k: v for k, v in figures.items() if k in keep or "top" in k}
    return out


def check_calculator(path: Path, rigidity, frames: list, test, pairs) -> float:
    """Largest relative difference between the calculator's ``forces_uncertainty`` (the
    written file) and this script's on ``frames``, the first test structures."""
    raw = forces_sigma(
        test["f_i"], rigidity.local_inverse_covariance.numpy(), rigidity.forces_estimate, pairs
    )
    calc = EquivariantCalculator(str(path), dtype="float64")
    worst, offset = 0.0, 0
    for atoms in frames:
        got = calc.get_property("forces_uncertainty", atoms.copy())
        want = rigidity.forces_factor * raw[offset : offset + len(atoms)]
        worst = max(worst, float(np.max(np.abs(got - want) / want)))
        offset += len(atoms)
    if worst > 1e-4:  # a wrong formula differs at O(1); C_loc⁻¹ amplifies rounding
        raise SystemExit(f"{path}: calculator's forces_uncertainty differs by {worst:.2g}")
    return worst


def run(name: str, jacobian: bool, calibration_only: bool) -> dict[str, Any]:
    """Every stage for zoo model ``name``; ``calibration_only``: the out-of-domain rows and the
    cost are kept from the previous results (they need no refit of the section to be read)."""
    path = ROOT / "models" / f"{name}.json"
    loaded = read_model_file(path)
    work = ROOT / "runs" / "zoo_rigidity" / name / weights_key(path)
    work.mkdir(parents=True, exist_ok=True)
    sets = splits(name)
    rigidity, cal, thresholds, valid = fit(name, loaded, sets, work)
    test = cached(work / "test.npz", lambda: labelled_predictions(loaded, sets["test"]))
    pairs = pairs_of(loaded, sets["test"])
    plot = RESULTS / f"{STEM}-{name}.png"
    figures = measure_test(rigidity, test, pairs, thresholds, plot)
    figures["by_estimate"] = other_estimates(work, rigidity, test, pairs)
    entry = card_entry(name, rigidity, figures, thresholds, len(valid["n"]))
    change = store(path, loaded, rigidity, sets["test"][:10], entry)
    result: dict[str, Any] = {
        "command": f"OMP_NUM_THREADS=1 python scripts/uncertainty/zoo_rigidity.py {name}",
        "feature_dim": rigidity.info["feature_dim"],
        "train": {"structures": rigidity.info["n_structures"], "atoms": rigidity.info["n_atoms"]},
        "calibration_valid": {
            "structures": len(valid["n"]),
            "energy": {k: v for k, v in cal["energy"].items() if k != "trials"},
            "forces": {k: v for k, v in cal["forces"].items() if k != "trials"},
            "forces_miscalibration_area": rigidity.info["calibration"][
                "forces_miscalibration_area"
            ],
            "thresholds_eV_per_A": thresholds,
        },
        "energy_change_after_writing_eV": change,
        "calculator_vs_script_forces_uncertainty": check_calculator(
            path, rigidity, sets["test"][:5], test, pairs
        ),
        "test": figures,
        "plot": plot.name,
    }
    reloaded = read_model_file(path)
    result["ood"] = ood_rows(reloaded, name, thresholds, work)
    result["ood_summary"] = ood_summary(result["ood"], thresholds)
    if calibration_only:
        result["cost_s"] = previous(name).get("cost_s", {})
    else:
        result["cost_s"] = cost(path, sets["test"][0])
    if jacobian:
        jacobian_form = jacobian_figures(loaded, rigidity, sets, valid, test, (95, 90), work)
        result["jacobian_form"] = jacobian_form
    return result


def previous(name: str) -> dict[str, Any]:
    """The model's entry in the results file so far ({} if none)."""
    out = RESULTS / f"{STEM}.json"
    return json.loads(out.read_text()).get(name, {}) if out.exists() else {}


def markdown(results: dict[str, Any]) -> str:
    """The results file for people: one row per model, then the out-of-domain structures."""
    lines = [
        "# Zoo uncertainty: last-layer prediction rigidity (single model, no retraining)",
        "",
        "Written by `scripts/uncertainty/zoo_rigidity.py NAME` (numbers: the JSON beside this",
        "file). Predicted per-structure force error: the mean over atoms of `forces_uncertainty`;",
        "actual: the force RMSE of the structure. Thresholds act on the largest atomic",
        "uncertainty, set at the 95th / 90th percentile of the validation structures. Test: the",
        "shipped held-out set `models/NAME-test.xyz.xz`.",
        "",
        "The force estimate (the atom's own local rigidity; or summed over its neighbours within",
        "r_max, unweighted or weighted (1 + cos(π r/r_max))/2) is the one of highest validation ρ",
        "(regulariser and factor by validation NLL); the last three columns give the validation",
        "ρ (mean u), the validation NLL per force component and the test ρ (mean u) of each",
        "(local / neighbourhood / smooth), each at its own validation-chosen regulariser and",
        "factor.",
        "",
        "| model | test structures | force estimate | Spearman ρ (mean u) | ρ (max u) | worst 5 % "
        "flagged at valid p95 / p90 | flagged at p95 / p90 | miscal. area before → after | α_F | "
        "energy ρ | force call with / without | valid ρ, each estimate | valid NLL, each "
        "estimate | test ρ, each estimate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        t, c = r["test"], r["cost_s"]
        by_valid = r["calibration_valid"]["forces"].get("by_estimate", {})
        by_test = t.get("by_estimate", {})
        rho_valid = " / ".join(
            f"{by_valid[k]['spearman_mean_u_vs_force_rmse']:.2f}" if k in by_valid else "–"
            for k in FORCES_ESTIMATES
        )
        nll = " / ".join(
            f"{by_valid[k]['nll']:.3f}" if k in by_valid else "–" for k in FORCES_ESTIMATES
        )
        rho = " / ".join(
            f"{by_test[k]['spearman_mean_u_vs_force_rmse']:.2f}" if k in by_test else "–"
            for k in FORCES_ESTIMATES
        )
        lines.append(
            f"| {name} | {t['structures']} (worst 5 %: {t['worst_5pct']}) | "
            f"{t.get('forces_estimate', 'local')} | "
            f"{t['spearman_mean_u_vs_force_rmse']:.2f} | {t['spearman_max_u_vs_force_rmse']:.2f} | "
            f"{t['worst_flagged_valid_p95']:.2f} / {t['worst_flagged_valid_p90']:.2f} | "
            f"{t['flagged_fraction_valid_p95']:.2f} / {t['flagged_fraction_valid_p90']:.2f} | "
            f"{t['forces_miscalibration_area_uncalibrated']:.3f} → "
            f"{t['forces_miscalibration_area']:.3f} | "
            f"{r['calibration_valid']['forces']['alpha']:.3g} | "
            f"{t['spearman_energy_u_vs_abs_energy_error']:.2f} | {c['ratio']:.2f}× | "
            f"{rho_valid} | {nll} | {rho} |"
        )
    for name, r in results.items():
        summary = r.get("ood_summary", {})
        lines += ["", f"## Out of domain: {name}", "", "```", json.dumps(summary), "```", ""]
        lines += ["| structure | max u (eV/Å) | flagged p95 / p90 | largest force error (eV/Å) |"]
        lines += ["|---|---|---|---|"]
        for row in r["ood"]:
            err = row.get("max_force_error")
            lines.append(
                f"| {row['kind']} | {row['max_u']:.3g} | {row['flagged_valid_p95']} / "
                f"{row['flagged_valid_p90']} | {'–' if err is None else f'{err:.3g}'} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=NAMES)
    parser.add_argument("--jacobian", action="store_true", help="also the exact Jacobian form")
    parser.add_argument(
        "--calibration-only",
        action="store_true",
        help="refit and rewrite the section, measure it; keep the previous timing of a call",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = run(args.name, args.jacobian, args.calibration_only)
    out = RESULTS / f"{STEM}.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    results[args.name] = result
    out.write_text(json.dumps(results, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    print(json.dumps({k: v for k, v in result.items() if k != "ood"}, indent=1))
    for row in result["ood"]:
        print(row)


if __name__ == "__main__":
    main()
