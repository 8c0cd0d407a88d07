"""``ase-equi learn``: MD or a relaxation that learns on the fly from a reference calculator.

A thin argparse layer over :func:`ase_equi.learning.learn_on_the_fly`. The reference is any
ASE calculator, named as ``emt`` (ASE's EMT) or ``package.module:Class`` with keyword arguments
as JSON (``--reference-args '{"method": "GFN1-xTB"}'``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

import numpy as np

__all__ = ["dynamics_of", "reference_calculator", "register"]

#: short names of reference calculators that need no module path
KNOWN_REFERENCES = {"emt": "ase.calculators.emt:EMT"}


def reference_calculator(spec: str, arguments: str = "{}") -> Any:
    """The ASE calculator ``spec`` (``emt`` or ``package.module:Class``) built with the keyword
    arguments in the JSON object ``arguments``.

    Raises ``ValueError`` naming the problem: a spec without ``:``, a module or class that does
    not exist, or arguments that are not a JSON object.
    """
    path = KNOWN_REFERENCES.get(spec.lower(), spec)
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise ValueError(
            f"--reference {spec!r}: give 'emt' or 'package.module:Class' (an ASE calculator)"
        )
    try:
        kwargs = json.loads(arguments)
    except json.JSONDecodeError as error:
        raise ValueError(f"--reference-args is not JSON: {error}") from None
    if not isinstance(kwargs, dict):
        raise ValueError("--reference-args must be a JSON object of keyword arguments")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"--reference {spec!r}: {error}") from None
    return cls(**kwargs)


def dynamics_of(args: argparse.Namespace) -> tuple[Any, float | None]:
    """The dynamics factory (None: the library's velocity Verlet) and time step (fs) of
    ``--dynamics``; ``ValueError`` naming an option that does not apply to it."""
    from ase import units
    from ase.filters import FrechetCellFilter
    from ase.md.langevin import Langevin
    from ase.optimize import BFGS

    kind, step = args.dynamics, args.timestep_fs
    unused = [name for name, given, applies in (
        ("--friction", args.friction is not None, kind == "langevin"),
        ("--fmax", args.fmax is not None, kind == "bfgs"),
        ("--relax-cell", args.relax_cell, kind == "bfgs"),
        ("--timestep-fs", step is not None, kind != "bfgs"),
        ("--temperature", args.temperature is not None, kind != "bfgs"),
    ) if given and not applies]  # fmt: skip
    if unused:
        raise ValueError(f"--dynamics {kind} does not use {', '.join(unused)}")
    if kind == "verlet":
        return None, step
    if kind == "bfgs":

        def relax(atoms: Any) -> Any:
            moved: Any = FrechetCellFilter(atoms) if args.relax_cell else atoms
            return BFGS(moved, logfile=None)

        return relax, None
    if args.temperature is None:
        raise ValueError("--dynamics langevin needs --temperature (K, the bath's)")
    friction = (0.01 if args.friction is None else args.friction) / units.fs
    return (
        lambda a: Langevin(a, (step or 1.0) * units.fs, temperature_K=args.temperature,
                           friction=friction, fixcm=False, rng=np.random.default_rng(0))
    ), None  # fmt: skip


def _cmd_learn(args: argparse.Namespace) -> int:
    from ase import Atoms
    from ase.io import read

    from ..learning import learn_on_the_fly
    from ..learning_retraining import RefitRate, parent_card, retraining_config

    atoms = read(args.structure, index=0)
    assert isinstance(atoms, Atoms)  # one frame (index=0)
    if args.temperature is not None:
        _thermalize(atoms, args.temperature)
    replay = None if args.replay == "none" else args.replay
    card = parent_card(args.model)
    config = retraining_config(
        **({"epochs": args.epochs} if args.epochs is not None else {}),
        parent_card=card,
    )
    refit_lr = args.lr if args.lr is not None else RefitRate.from_card(card)
    dynamics, timestep_fs = dynamics_of(args)
    result = learn_on_the_fly(
        atoms,
        args.model,
        reference_calculator(args.reference, args.reference_args),
        out=args.out,
        threshold=args.threshold,
        every=args.every,
        min_interval=args.min_interval,
        steps=args.steps,
        dynamics=dynamics,
        timestep_fs=timestep_fs,
        fmax=args.fmax,
        max_calls=args.max_calls,
        replay=replay,
        replay_count=args.replay_count,
        train_config=config,
        refit_lr=refit_lr,
    )
    print(
        f"ase-equi learn: {result.steps} steps of {args.dynamics}, "
        f"{len(result.calls)} reference calls, model now {result.model}; replay: {result.replay}",
        file=sys.stderr,
    )
    return 0


def register(sub: Any) -> None:
    """Add ``learn`` to the ``ase-equi`` sub-parsers."""
    p = sub.add_parser(
        "learn",
        help="MD with a committee or a model with an LLPR section that labels uncertain "
        "structures with a reference and learns",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "model",
        help="committee file, or zoo name / model file with a prediction-rigidity section",
    )
    p.add_argument("structure", help="start structure (any ase.io format; first frame)")
    p.add_argument("--reference", required=True, help="'emt' or 'package.module:Class'")
    p.add_argument("--reference-args", default="{}", help="keyword arguments, a JSON object")
    p.add_argument("--out", required=True, help="folder of state, data, logs (resumes)")
    trigger = p.add_mutually_exclusive_group(required=True)
    trigger.add_argument("--threshold", type=float, help="eV/Å, max atomic σ_F")
    trigger.add_argument(
        "--every", type=int, help="instead: a reference call every N steps (the naive schedule)"
    )
    p.add_argument("--steps", type=int, required=True)
    _add_dynamics_options(p)
    p.add_argument(
        "--max-calls", type=int, default=10, help="budget of reference calls, paced over --steps"
    )
    p.add_argument(
        "--min-interval",
        type=int,
        help="with --threshold: steps per selection window (default: steps // (2 max-calls))",
    )
    p.add_argument(
        "--replay",
        default="auto",
        help="labelled frames trained on with the learned ones; 'auto' (default: a zoo "
        "model's shipped replay set, none otherwise) or 'none'",
    )
    p.add_argument("--replay-count", type=int, help="train on a seeded sample of this many")
    p.add_argument(
        "--epochs", type=int, help="per retraining of each member (default: the library's)"
    )
    p.add_argument(
        "--lr",
        type=float,
        help="learning rate of every retraining (default: per call from the model's error on "
        "the labelled structure and its card, else the library's; loss weights: the card's)",
    )
    p.set_defaults(func=_cmd_learn)


def _add_dynamics_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dynamics",
        choices=("verlet", "langevin", "bfgs"),
        default="verlet",
        help="velocity Verlet (default), Langevin at --temperature, or a BFGS relaxation "
        "(ends converged to --fmax)",
    )
    p.add_argument("--timestep-fs", type=float, help="MD time step (default 1 fs)")
    p.add_argument(
        "--temperature", type=float, help="K: Maxwell-Boltzmann start momenta (Langevin's bath)"
    )
    p.add_argument("--friction", type=float, help="Langevin friction, 1/fs (default 0.01)")
    p.add_argument("--fmax", type=float, help="BFGS: eV/Å, largest force (default 0.05)")
    p.add_argument(
        "--relax-cell", action="store_true", help="BFGS: relax the cell too (FrechetCellFilter)"
    )


def _thermalize(atoms: Any, temperature_K: float) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K`` from a generator seeded 0.

    ASE 3.29 renamed the function (``thermalize_momenta``; the old name warns); both draw the
    same numbers from the same generator, and the package supports ASE from 3.24.
    """
    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        MaxwellBoltzmannDistribution(
            atoms, temperature_K=temperature_K, rng=np.random.default_rng(0)
        )
        return
    thermalize_momenta(atoms, temperature_K, rng=np.random.default_rng(0))
