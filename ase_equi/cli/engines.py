"""``ase-equi ipi``: serve a model to another MD engine.

Shared module: ``ipi`` is defined here; the LAMMPS export (``export-lammps``) registers itself
in :func:`register` beside it. Each command is a thin argparse layer over a library function
in :mod:`ase_equi.engines`.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the engine sub-commands (``ipi``; LAMMPS's beside it)."""
