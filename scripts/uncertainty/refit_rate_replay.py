"""Offline replays of on-the-fly learning's retrainings: which learning rate lets each call help?

    OMP_NUM_THREADS=1 python scripts/uncertainty/refit_rate_replay.py            # every replay
    OMP_NUM_THREADS=1 python scripts/uncertainty/refit_rate_replay.py --summary  # tables only

The structures labelled by the two demonstrations (``learn_demo_metals.py``,
``learn_demo_molecules.py``) with the earlier default, a learning rate of 5e-3 at every call
(their ``--fixed-lr`` runs: ``runs/learn_demo/{metals,molecules-pbe}-paced[-seed1]/``), are
kept fixed, and the sequence of retrainings is replayed with other settings: retraining k
starts from the model of retraining k − 1 and trains on the first k labelled structures plus
the run's replay sample (``learn_on_the_fly``'s own training: its
:func:`~ase_equi.learning_retraining.retraining_config` with the demonstration's epochs and
the parent's last-stage loss weights, the same seeded replay sample); after each, the test
errors on the demonstration's test set. With ``fixed`` this reproduces the demonstrations'
own curves exactly. The settings compared:

- ``fixed``: lr 5e-3 at every call (the earlier default, ``TrainConfig``'s plateau schedule);
- ``cosine``: 5e-3 annealed to 0 over the epochs of each retraining;
- ``cosine_replay4``: the same with four times the replay sample;
- ``last_stage``: the learning rate the parent's last training stage started from, every call;
- ``parent_pull``: ``fixed`` plus fine-tuning's pull towards the parent's weights (λ = 1000),
  ``cosine_parent_pull`` the same with ``cosine``;
- ``rate``: :class:`~ase_equi.learning_retraining.RefitRate` from the parent's card (the
  rate of each call from the model's force error on the structure it learns: the new default).

Not every setting was replayed on every sequence (``GRID``: the first runs decided which were
worth the time). What is compared is the test force RMSE after the last call of each
sequence (and the path to it); the rule set before the ``rate`` rows were seen: adopt it if
its final force RMSE is within 10 % of the best setting's on each sequence and lower than
``fixed``'s on metals.
Caveat: a real run with another learning rate would move along another trajectory and label
other structures; the replay isolates the retraining.

Results: ``runs/refit_rate/replays.jsonl`` (one line per setting and sequence; a rerun skips
those done) and ``benchmarks/results/2026-12-01-refit-rate.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from ase.io import read

from ase_equi import EquivariantCalculator, save_model
from ase_equi.learning_retraining import RefitRate, parent_card, retraining_config
from ase_equi.learning_rigidity import resolve_replay, sample
from ase_equi.training.parent_pull import parent_pull, shared_parameters
from ase_equi.training.trainer import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learn_demo_common import errors_on

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "runs" / "learn_demo"
LOG = ROOT / "runs" / "refit_rate" / "replays.jsonl"
RESULTS = ROOT / "benchmarks" / "results" / "2026-12-01-refit-rate"
FIXED_LR = 5e-3
#: demonstration: (parent, epochs, replay sample, the folder holding its test set if shared)
DEMOS = {
    "metals": ("metals", 8, 16, ""),
    "molecules": ("molecules-pbe", 10, 24, "molecules-pbe-paced"),
}
SETTINGS = (
    "fixed",
    "cosine",
    "cosine_replay4",
    "last_stage",
    "parent_pull",
    "cosine_parent_pull",
    "rate",
)
#: the replays made (sequence, settings); ``fixed`` on every sequence
GRID = {
    "metals-paced/every_nth": ("fixed", "cosine", "cosine_replay4", "last_stage", "rate"),
    "metals-paced/on_the_fly": ("fixed", "cosine", "cosine_replay4", "last_stage"),
    "metals-paced-seed1/every_nth": ("fixed", "cosine", "last_stage"),
    "metals-paced-seed1/on_the_fly": ("fixed", "cosine", "last_stage"),
    "molecules-pbe-paced/every_nth": SETTINGS,
    "molecules-pbe-paced/on_the_fly": ("last_stage", "rate"),  # fixed: the --fixed-lr run itself
}


def test_errors(model, frames, work: str) -> tuple[float, float]:
    """Force RMSE (eV/Å) and energy MAE (meV/atom) of ``model`` on ``frames`` (the
    demonstrations' :func:`errors_on`; the model saved in a new folder under ``work``)."""
    path = save_model(model, Path(tempfile.mkdtemp(dir=work)) / "model")
    errors = errors_on(str(path), frames)
    return errors["force_rmse_eV_per_A"], errors["energy_mae_meV_per_atom"]


def replay_sequence(demo: str, folder: str, strategy: str, setting: str) -> dict:
    """Replay the retrainings of run ``folder/strategy`` of ``demo`` with ``setting``."""
    parent_name, epochs, count, _ = DEMOS[demo]
    card = parent_card(parent_name)
    config = retraining_config(epochs, FIXED_LR, card)
    if setting.startswith("cosine"):
        config = dataclasses.replace(config, scheduler="cosine")
    if setting == "last_stage":
        config = dataclasses.replace(config, lr=card["training_stages"][-1]["settings"]["lr"])
    replay = sample(
        resolve_replay(parent_name, "auto")[0], 4 * count if "replay4" in setting else count
    )
    learned = read(RUNS / folder / strategy / "learned.xyz", ":")
    test = read(RUNS / (DEMOS[demo][3] or folder) / "test.xyz", ":")
    parent = EquivariantCalculator(parent_name).loaded.model
    anchors = shared_parameters(parent, free=())[0]
    pull = parent_pull(anchors, 1000.0) if setting.endswith("parent_pull") else None
    rate = RefitRate.from_card(card)
    out = {"demo": demo, "run": f"{folder}/{strategy}", "setting": setting, "lr": []}
    out["force_rmse"], out["energy_mae"] = [], []
    model, started = copy.deepcopy(parent), time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        out["parent"] = test_errors(parent, test, work)
        for k in range(len(learned)):
            run = dataclasses.replace(config, output_dir=f"{work}/round{k}")
            if setting == "rate":
                assert rate is not None
                # the model's force RMSE on the structure it is about to learn
                before = test_errors(model, learned[k : k + 1], work)[0]
                run = dataclasses.replace(run, lr=rate(before))
            out["lr"].append(run.lr)
            trainable = copy.deepcopy(model).requires_grad_(True)
            frames = [*learned[: k + 1], *replay]
            model = train(trainable, frames, run, name="model", verbose=False, penalty=pull).model
            model.requires_grad_(False)
            rmse, mae = test_errors(model, test, work)
            out["force_rmse"].append(rmse)
            out["energy_mae"].append(mae)
            print(setting, out["run"], k, rmse, mae, flush=True)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def summary(rows: list[dict]) -> str:
    """Markdown: the final test force RMSE of every setting on every sequence, and the paths."""
    runs = sorted({r["run"] for r in rows})
    by = {(r["run"], r["setting"]): r for r in rows}
    head = "| setting | " + " | ".join(runs) + " |"
    lines = [head, "|" + "---|" * (len(runs) + 1)]
    for setting in SETTINGS:
        cells = []
        for run in runs:
            r = by.get((run, setting))
            cells.append(f"{r['force_rmse'][-1]:.4f} ({r['energy_mae'][-1]:.1f})" if r else "–")
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    parents = {r["run"]: r["parent"] for r in rows}
    lines += [
        "",
        "Parent (zoo) on each test set: "
        + ", ".join(
            f"{run}: {p[0]:.4f} eV/Å ({p[1]:.1f} meV/atom)" for run, p in sorted(parents.items())
        ),
        "",
        "Test force RMSE (eV/Å) after each retraining (learning rates of `rate` in brackets):",
        "",
    ]
    for (run, setting), r in sorted(by.items()):
        path = ", ".join(f"{x:.4f}" for x in r["force_rmse"])
        rates = f" [{', '.join(f'{x:.2g}' for x in r['lr'])}]" if setting == "rate" else ""
        lines.append(f"- {run}, {setting}: {path}{rates}")
    lines += ["", "The rule (docstring), on the sequences replayed with `rate`:", ""]
    for run in runs:
        if (run, "rate") not in by:
            continue
        finals = {k: by[run, k]["force_rmse"][-1] for k in SETTINGS if (run, k) in by}
        best = min(finals, key=finals.__getitem__)
        ratio = finals["rate"] / finals[best]
        lines.append(
            f"- {run}: rate {finals['rate']:.4f}, best {best} {finals[best]:.4f} "
            f"({ratio:.3f}x; within 10 %: {'yes' if ratio <= 1.1 else 'no'})"
        )
    lines += [
        "",
        "`fixed` on molecules-pbe-paced/on_the_fly is that --fixed-lr run itself (final "
        "0.2917 eV/Å, `2026-12-01-learn-on-the-fly-molecules-paced.md`); `parent_pull` equals "
        "`fixed` to every digit shown (λ = 1000 makes no measurable difference here).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", action="store_true", help="write the tables only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in LOG.read_text().splitlines()] if LOG.exists() else []
    done = {(r["run"], r["setting"]) for r in rows}
    for sequence, settings in {} if args.summary else GRID.items():
        folder, strategy = sequence.split("/")
        demo = "molecules" if folder.startswith("molecules") else "metals"
        for setting in settings:
            if (sequence, setting) in done:
                continue
            if not (RUNS / sequence / "learned.xyz").exists():
                sys.exit(f"{sequence}: run its demonstration with --fixed-lr first")
            row = replay_sequence(demo, folder, strategy, setting)
            with open(LOG, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            rows.append(row)
    RESULTS.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    title = "# Offline replays of the retrainings of on-the-fly learning\n\n"
    intro = (
        "Written by `OMP_NUM_THREADS=1 python scripts/uncertainty/refit_rate_replay.py` "
        "(settings and the rule: its docstring). Final test force RMSE in eV/Å (energy MAE, "
        "meV/atom, in brackets); each column one run's labelled structures, replayed.\n\n"
    )
    RESULTS.with_suffix(".md").write_text(title + intro + summary(rows) + "\n")


if __name__ == "__main__":
    main()
