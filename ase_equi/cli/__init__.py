"""``ase-equi``: a thin command line over the Python API.

Sub-commands: ``zoo`` (the bundled models as a table), ``info MODEL`` (print a model card),
``upgrade FILE`` (format 1 → 2), ``import-mace FILE -o OUT`` (MACE ``.model`` → our safe
format), ``eval MODEL STRUCTURES`` (predictions, and errors against the file's labels), all in
:mod:`.models`; ``train`` and ``finetune`` in :mod:`.training`; the engine couplings (``ipi``,
LAMMPS's export) in :mod:`.engines`; ``learn`` (on-the-fly learning) in :mod:`.learning`.
The library never imports this package: argparse, printing and exit codes live here only.

``python -m ase_equi.cli ...`` (and ``torchrun --nproc_per_node=N -m ase_equi.cli train ...``)
run :func:`main` through ``__main__.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import engines, learning, models, training

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``ase-equi`` parser with every sub-command; each sets ``func`` to its handler.

    Examples
    --------
    >>> parser = build_parser()
    >>> parser.parse_args(["info", "metals-small"]).model
    'metals-small'
    """
    parser = argparse.ArgumentParser(prog="ase-equi", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    models.register(sub)
    training.register(sub)
    engines.register(sub)
    learning.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ase-equi ARGV`` and return the exit status.

    0 on success; 2 when the library refused the input (a ``ValueError``, ``KeyError`` or
    ``FileNotFoundError``), after printing ``ase-equi COMMAND: error: MESSAGE`` to stderr.
    argparse's own usage errors exit with status 2 as well (``SystemExit``).
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"ase-equi {args.command}: error: {message}", file=sys.stderr)
        return 2
