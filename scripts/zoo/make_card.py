"""Finish a zoo model: measure its physics against the reference calculator, judge it against
issue 17's targets, write the card, and install the model file into the zoo (``models/``).

    export OMP_NUM_THREADS=1
    python scripts/zoo/make_card.py metals --run runs/metals-v2          # measure and install
    python scripts/zoo/make_card.py metals --check-only      # the installed models/metals.json
    python scripts/zoo/make_card.py metals --model runs/x/metals.json --check-only
    python scripts/zoo/make_card.py silicon-xtb --run runs/silicon-xtb-v2 --check-only --out DIR

``--model`` may be a committee file (checked as its members' mean).
``--check-only`` measures every check and writes ``checks.json`` (the card's
``physics_checks``, the targets, the domain sentence, timings) and ``targets.md`` (the TARGETS
table) to ``--out`` (default ``runs/cards/NAME``), and installs nothing. Without it the model
is installed as well: ``models/NAME.*`` and ``docs/zoo/NAME.json``.

Every number on a card comes from this script (the checks in ``metals_card.py``,
``silicon_card.py``, ``molecules_card.py``) or from the training run's test report (test-set
MAE/RMSE). Expensive reference results (GFN1-xTB, PBE) are cached in ``--cache`` (default
``runs/cards/NAME/reference-cache.json``), keyed by what was computed, so a rerun for another
model does not recompute them. The script also stores a few sample structures with the model's
own float64 energies, which the test suite recomputes from the installed file.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
from reference_cache import ReferenceCache  # noqa: E402
from targets import TARGETS, all_met, as_json, evaluate, markdown  # noqa: E402

from ase_equi import EquivariantCalculator, load_model, save_model  # noqa: E402

RECIPES = {
    "metals": {
        "data": "data/metals-emt-v2.xyz.xz",
        "generate": "python scripts/zoo/generate_metals_emt.py --set v2",
        "level_of_theory": "ASE EMT (effective-medium theory; ASE 3.29 default parameters)",
        "domain": "fcc {elements} and their random alloys: bulk crystals strained, sheared and "
        "compressed to contacts of 0.72 × the nearest-neighbour distance, vacancies and vacancy "
        "hops, (111)/(100)/(110) surfaces, small clusters, and MD from 300 K to liquids at "
        "2,000–2,800 K.",
        "intended_use": "MD, relaxations, elastic, defect and surface properties of fcc Cu, "
        "Ag, Au, Ni, Pd, Pt, Al and their alloys, 0 K into the liquid — as a stand-in for EMT "
        "itself (a demonstration of the pipeline).",
        "limits": "Reproduces EMT, not experiment or DFT. No training data far from fcc "
        "(bcc/hcp), no other elements.",
        "dispersion": "Do not add D3: EMT has no exchange-correlation functional for D3 to "
        "correct (ase_equi.engines.dispersion.d3_corrected refuses it).",
    },
    "molecules-pbe": {
        "data": "data/molecules-pbe-v2.xyz.xz",
        "generate": "python scripts/zoo/generate_molecules_v2.py labels",
        "level_of_theory": "DFT PBE/def2-SVP, density fitting (def2-universal-jkfit), "
        "PySCF 2.14, gas phase",
        "domain": "Single neutral gas-phase molecules made of {elements} (35 small molecules of "
        "ASE's G2 set: alkanes, alcohols, carbonyls, acids, amines, nitriles, aromatics, CO2, "
        "HCN, NH3, …) sampled by MD at 300–1,000 K.",
        "intended_use": "Gas-phase MD, relaxations and vibrations of small closed-shell "
        "H/C/N/O molecules near those of the training set.",
        "limits": "One molecule at a time: no intermolecular interactions, no bond breaking "
        "or reactions, no charged or open-shell species. def2-SVP is a small basis: the model "
        "inherits its errors.",
        "dispersion": "PBE has no dispersion: add D3(BJ) with PBE's parameters for "
        "intermolecular or conformational work (ase_equi.engines.dispersion.d3_corrected "
        "takes PBE from this card).",
    },
    "silicon-xtb": {
        "data": "data/silicon-gfn1xtb-v2.xyz.xz",
        "generate": "python scripts/zoo/generate_silicon_v2.py labels",
        "level_of_theory": "GFN1-xTB (tblite 0.8), periodic, Γ point of a 64-atom cell",
        "domain": "{elements} at GFN1-xTB's density (64-atom cells): the diamond crystal "
        "strained and sheared, MD at 300–1,600 K, the liquid at 2,000 K and amorphous Si, the "
        "relaxed vacancy and split-⟨110⟩ interstitial, and (001)/(111) surfaces.",
        "intended_use": "Diamond, liquid and amorphous Si near GFN1-xTB's density (a0 5.63 Å): "
        "MD, NPT and cell relaxations, elastic response, point defects, surfaces.",
        "limits": "GFN1-xTB, not DFT (its a0 is 3.7 % above experiment); cells should be ≥ 64 "
        "atoms to match the Γ-point data; contacts under 1.65 Å were left out of training.",
        "dispersion": "Do not add D3: GFN1-xTB already contains a D3-type dispersion term "
        "(ase_equi.engines.dispersion.d3_corrected refuses it).",
    },
}


# a model of ``train_zoo.py --stage 4`` was trained on set v3 (set v2's frames first)
STAGE4 = {
    "metals": {
        "data": "data/metals-emt-v3.xyz.xz",
        "generate": "python scripts/zoo/generate_metals_emt.py --set v2; "
        "python scripts/zoo/generate_metals_v3.py",
    },
    "silicon-xtb": {
        "data": "data/silicon-gfn1xtb-v3.xyz.xz",
        "generate": "python scripts/zoo/generate_silicon_v2.py labels; … combine; "
        "python scripts/zoo/generate_silicon_v3.py labels; … combine",
    },
}


# a model of stage 5, 6 or 7 (``train_strain_pairs.py``) was trained on set v4 (set v3's frames
# first)
STAGE5 = {
    "metals": {
        "data": "data/metals-emt-v4.xyz.xz",
        "generate": f"{STAGE4['metals']['generate']}; python scripts/zoo/generate_metals_v4.py",
    },
    "silicon-xtb": {
        "data": "data/silicon-gfn1xtb-v4.xyz.xz",
        "generate": f"{STAGE4['silicon-xtb']['generate']}; "
        "python scripts/zoo/generate_silicon_v4.py",
    },
}


def run_checks(name: str, model_file: Path, out: Path, cache: ReferenceCache) -> tuple[dict, list]:
    """The recipe's checks of the model in ``model_file``: (physics_checks, sample Atoms).
    ``out`` holds the results of separate runs (``md-stability.json``). A committee file is
    checked as its members' mean."""
    header = json.loads(model_file.read_text())
    trained = str(model_file) if header.get("committee") else load_model(model_file, dtype=None)

    def calc():
        return EquivariantCalculator(trained, dtype="float64")

    if name == "metals":
        from metals_card import metals_checks

        return metals_checks(calc)
    if name == "silicon-xtb":
        from silicon_card import silicon_checks

        weights = json.loads(model_file.read_text())["weights_sha256"]
        return silicon_checks(calc, cache, out / "md-stability.json", weights)
    from molecules_card import molecules_checks

    elements = list(header["config"]["elements"])
    return molecules_checks(calc, cache, header["card"].get("test_errors", {}), elements)


def domain(name: str, elements: list[int]) -> str:
    """The card's one-sentence domain: the recipe's sentence with the model's elements."""
    from ase.data import chemical_symbols

    symbols = [chemical_symbols[z] for z in elements]
    text = ", ".join(symbols[:-1]) + f" and {symbols[-1]}" if len(symbols) > 1 else symbols[0]
    return RECIPES[name]["domain"].format(elements=text)


def limits(name: str, rows) -> str:
    """The recipe's limits, then the targets this model misses (or that it meets them all),
    grouped by check and property: ``C11 (within 3 %): Ni +6.72 %, Al -3.69 %``."""
    missed: dict[str, list[str]] = {}
    for r in rows:
        if r.passed is False:
            key = f"{r.check} {r.property} ({r.target})"
            missed.setdefault(key, []).append(
                f"{r.subject} {r.deviation if r.reference else r.model}"
            )
    absent = [
        f"{r.check} {r.property}"
        for r in rows
        if r.model == "not measured" and r.passed is None and r.target != "—"
    ]
    verdict = "meets every measured issue-17 target" if not missed else (
        "misses issue-17 targets: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in missed.items())
    )  # fmt: skip
    if absent:
        verdict += "; not measured: " + ", ".join(absent)
    return f"{RECIPES[name]['limits']} Fidelity: {verdict}."


def sample_energies(samples: list, trained) -> list[dict]:
    rows = []
    for atoms in samples:
        atoms.calc = EquivariantCalculator(trained, dtype="float64")
        rows.append(
            {
                "formula": atoms.get_chemical_formula(),
                "numbers": atoms.numbers.tolist(),
                "positions": atoms.positions.round(6).tolist(),
                "cell": atoms.cell.array.round(6).tolist(),
                "pbc": atoms.pbc.tolist(),
                "energy_eV": float(atoms.get_potential_energy()),
            }
        )
    return rows


def install(name: str, model_file: Path, run: Path, card: dict, checks: dict) -> None:
    """``models/NAME.*`` (weights in their training precision, float32) and ``docs/zoo``."""
    model = load_model(model_file, dtype=None).model.float()
    out = save_model(model, ROOT / "models" / name, card=card)
    docs = ROOT / "docs" / "zoo"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / f"{name}.json").write_text(json.dumps(checks, indent=2, ensure_ascii=False))
    for png in ("parity.png", "learning_curves.png"):
        if (run / png).exists():
            shutil.copy(run / png, docs / f"{name}-{png}")
    print(f"wrote {out}")
    # a new header has no prediction-rigidity section (it belongs to these weights): refit it
    print(f"then: python scripts/uncertainty/zoo_rigidity.py {name} (uncertainty, card)")


def trained_data(name: str, run: Path, recipe: dict) -> tuple[dict, str]:
    """The recipe with the data set the run in ``run`` was trained on, and a sentence for the
    card when the run's ``split.json`` leaves frames out. The set is the one of the model's
    chain (:func:`make_replay_sets.data_chain`) with as many frames as the split covers:
    the recipe's own; a later one (``train_strain_pairs.py --data``); or, for a split that
    gives roles (train, valid, test) only to the first K of its N frames, the earlier set of K
    frames, which is what it was trained on (``train_strain_pairs.py`` made such splits on a
    machine without stage 4's run folder until 2026-12-02). Any other split is refused."""
    path = run / "split.json"
    if not path.exists():
        return recipe, ""
    split = json.loads(path.read_text())
    roles = ("train", "valid", "test", "isolated", "replay")
    used = sorted(k for role in roles for k in split.get(role, []))
    n = int(split["n_frames"])
    if used != list(range(len(used))):
        raise SystemExit(f"{path}: frames without a role among the first {len(used)}")
    from make_replay_sets import data_chain, kept_frames
    from train_strain_pairs import LATER_DATA

    from ase_equi.data import read_frames

    chain = data_chain(name)
    if Path(recipe["data"]).name not in chain:  # a set from outside the chain: as given
        return recipe, ""
    for data in chain:
        if len(read_frames(kept_frames(name, data))) == len(used):
            break
    else:
        raise SystemExit(
            f"{path}: its split covers {len(used)} of {n} frames, and no data set of the "
            f"{name} chain has {len(used)}: the card cannot say what the model was trained on"
        )
    later = LATER_DATA.get(name, {})
    generate = {
        RECIPES[name]["data"]: RECIPES[name]["generate"],
        **{t[name]["data"]: t[name]["generate"] for t in (STAGE4, STAGE5) if name in t},
    }
    for extra, (_, command) in later.items():  # sets that extend stage 5's
        generate[f"data/{extra}"] = f"{generate[STAGE5[name]['data']]}; {command}"
    trained = {**recipe, "data": f"data/{data}", "generate": generate[f"data/{data}"]}
    note = "" if len(used) == n else (
        f"; trained on {data}'s {len(used)} frames only: the run's split.json gives no role "
        f"to the {n - len(used)} frames that follow them, so they were not trained on"
    )  # fmt: skip
    return trained, note


def training_stages(run: Path, name: str) -> list[dict]:
    """The card's ``training`` entry of every stage that led to ``run``: for a run folder
    ``PREFIX-stageN`` beside a folder ``PREFIX`` (``scripts/zoo/train_zoo.py --stage N``, by
    default PREFIX ``NAME-v2``), stage 1 (``PREFIX``) and stages 2 … N, in order; for a run of
    ``train_strain_pairs.py --start X`` (its card says "trained further from X"), X's stages
    and then its own (X ``models``: the stages on the installed zoo model's card, the model it
    started from until this run is installed); for any other run folder, that run's alone."""
    staged = re.fullmatch(r"(.+)-stage(\d+)", run.name)
    if staged is None or not (run.with_name(staged[1]) / f"{name}.json").exists():
        card = json.loads((run / f"{name}.json").read_text())["card"]
        start = started_from(card)
        if start is None:
            return [card["training"]]
        if start == "models":
            installed = json.loads((ROOT / "models" / f"{name}.json").read_text())["card"]
            return [*installed["training_stages"], card["training"]]
        return [*training_stages(run.with_name(start), name), card["training"]]
    folders = [run.with_name(staged[1])]
    folders += [run.with_name(f"{staged[1]}-stage{n}") for n in range(2, int(staged[2]) + 1)]
    return [json.loads((f / f"{name}.json").read_text())["card"]["training"] for f in folders]


def started_from(card: dict) -> str | None:
    """The start folder's name of a ``train_strain_pairs.py`` run (from its card's
    description, "trained further from X"), or None for any other run."""
    words = card.get("description", "").split("trained further from ")
    return words[1].split(" ")[0].rstrip(",;") if len(words) == 2 else None


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--run", help="training output folder (default: runs/NAME-v2)")
    parser.add_argument(
        "--model",
        help="a model file to check instead (with --check-only; default there: the zoo's own "
        "models/NAME.json when no --run is given)",
    )
    parser.add_argument("--check-only", action="store_true", help="measure, install nothing")
    parser.add_argument("--out", help="folder for checks.json and targets.md")
    parser.add_argument("--cache", help="reference cache (JSON)")
    args = parser.parse_args()
    if args.model and not args.check_only:
        parser.error("--model is for --check-only: a zoo model is installed from its --run")
    if args.model and args.run:
        parser.error("give --run or --model, not both")
    if args.check_only and not args.model and not args.run:
        args.model = f"models/{args.name}.json"  # relative: it goes into checks.json
    return args


def main() -> None:
    args = parse()
    run_text = args.run or f"runs/{args.name}-v2"  # relative: it goes on the card
    run = Path(args.run) if args.run else ROOT / run_text
    model_text = args.model or f"{run_text}/{args.name}.json"
    model_file = Path(args.model) if args.model else run / f"{args.name}.json"
    if args.model == f"models/{args.name}.json" and not model_file.exists():
        model_file = ROOT / args.model  # the default, from any working folder
    out = Path(args.out or ROOT / "runs" / "cards" / args.name)
    out.mkdir(parents=True, exist_ok=True)
    cache = ReferenceCache(Path(args.cache) if args.cache else out / "reference-cache.json")
    started, cpu = time.perf_counter(), time.process_time()
    checks, samples = run_checks(args.name, model_file, out, cache)
    rows = evaluate(checks, TARGETS[args.name])
    seconds = round(time.perf_counter() - started)
    cpu_seconds = round(time.process_time() - cpu)
    sentence = domain(args.name, list(json.loads(model_file.read_text())["config"]["elements"]))
    report = {
        "model": model_text,
        "domain": sentence,
        "physics_checks": checks,
        "targets": as_json(rows),
        "targets_met": all_met(rows),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # this process only (the wall time depends on the load)
    }
    (out / "checks.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    title = f"# TARGETS: {args.name} ({model_text}; {seconds} s, {cpu_seconds} s CPU)"
    table = f"{title}\n\n{markdown(rows)}\n"
    (out / "targets.md").write_text(table)
    print(table)
    print(f"wrote {out / 'checks.json'} and {out / 'targets.md'}")
    if args.check_only:
        return
    trained = load_model(model_file, dtype=None)
    recipe = RECIPES[args.name]
    if run.name == f"{args.name}-v2-stage4":
        recipe = {**recipe, **STAGE4[args.name]}
    if run.name in {f"{args.name}-v2-stage{n}" for n in (5, 6, 7)} or started_from(trained.card):
        recipe = {**recipe, **STAGE5[args.name]}  # stages 6 and 7 train on set v4 as well
    recipe, note = trained_data(args.name, run, recipe)
    card = dict(trained.card)
    if note:
        card["training_data"] = {
            **card["training_data"],
            "description": card["training_data"]["description"] + note,
        }
    card.update(
        name=args.name,
        level_of_theory=recipe["level_of_theory"],
        domain=sentence,
        intended_use=recipe["intended_use"],
        limits=limits(args.name, rows),
        dispersion=recipe["dispersion"],
        data_generation=f"{recipe['generate']} → {recipe['data']}",
        physics_checks=checks,
        targets=report["targets"],
        targets_met=report["targets_met"],
        sample_energies=sample_energies(samples, trained),
        card_script=f"python scripts/zoo/make_card.py {args.name} --run {run_text}",
        training_stages=training_stages(run, args.name),
    )
    install(args.name, model_file, run, card, checks)


if __name__ == "__main__":
    main()
