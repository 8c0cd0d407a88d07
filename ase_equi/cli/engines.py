"""``ase-equi ipi``: serve a model to another MD engine.

Shared module: ``ipi`` is defined here; the LAMMPS export (``export-lammps``) registers itself
in :func:`register` beside it. Each command is a thin argparse layer over a library function
in :mod:`ase_equi.engines`.
"""

from __future__ import annotations

import argparse
import sys


def _cmd_ipi(args: argparse.Namespace) -> int:
    from ase import Atoms
    from ase.io import read

    from ..engines.ipi import BeadEvaluator, serve
    from ..engines.ipi_protocol import IpiAddress

    address = IpiAddress.parse(args.address, args.unix, args.sockets_prefix)
    template = read(args.template, index=0)
    assert isinstance(template, Atoms)  # one frame (index=0)
    beads = BeadEvaluator(
        args.model,
        template,
        dtype=args.dtype,
        device=args.device,
        head=args.head,
        skin=args.skin,
    )
    print(
        f"ase-equi ipi: model {beads.calc.parameters['model']!r}, {beads.num_atoms} atoms, "
        f"serving {address.describe()}",
        file=sys.stderr,
    )
    try:
        report = serve(beads, address, connect_wait=args.connect_wait)
    except ConnectionError as error:
        print(f"ase-equi ipi: {error}", file=sys.stderr)
        return 1
    print(
        f"ase-equi ipi: i-PI said EXIT after {report.requests} requests, {report.structures} "
        f"structures (batch size {report.batch_size}), {report.model_calls} model calls, "
        f"{report.evaluating_s:.1f} s evaluating of {report.total_s:.1f} s",
        file=sys.stderr,
    )
    return 0


def _add_ipi(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ipi",
        help="serve energies, forces and virials to an i-PI server (until it says EXIT)",
        description="Connect to a running i-PI server and answer its force requests, one "
        "structure or a batch (<ffsocket><batch_size>) per model call. Run as many clients "
        "as you like, on any machines that reach the server.",
    )
    p.add_argument("--model", required=True, help="a zoo name or a model file")
    p.add_argument(
        "--template",
        required=True,
        help="structure file (any ase.io format) with i-PI's atoms in i-PI's order: the "
        "species and periodicity (i-PI sends only cells and positions)",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--address", help="HOST:PORT of an <ffsocket mode='inet'>")
    where.add_argument("--unix", help="NAME of an <ffsocket mode='unix'><address>NAME")
    p.add_argument(
        "--sockets-prefix",
        default=None,
        help="i-PI's <simulation sockets_prefix> for --unix (default: i-PI's own default)",
    )
    p.add_argument("--head", default=None, help="head of a multi-head model (default: its own)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--skin", type=float, default=1.0, help="Verlet skin, Å (default 1.0)")
    p.add_argument(
        "--connect-wait",
        type=float,
        default=60.0,
        help="seconds to keep retrying until the server is up (default 60)",
    )
    p.set_defaults(func=_cmd_ipi)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the engine sub-commands (``ipi``; LAMMPS's beside it)."""
    _add_ipi(subparsers)
