"""``ase-equi ipi`` and ``ase-equi export-lammps``: a model for another MD engine.

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


def _cmd_export_lammps(args: argparse.Namespace) -> int:
    from ..engines.lammps_mliap import export_lammps

    unified = export_lammps(
        args.model, args.output, head=args.head, dtype=args.dtype, device=args.device
    )
    elements = " ".join(unified.element_types)
    print(
        f"wrote {args.output}: {unified.model_path} (SHA-256 {unified.sha256[:12]}...), "
        f"elements {elements}, pair cutoff {2 * unified.rcutfac:g} Å (num_interactions x r_max)\n"
        f"LAMMPS: pair_style mliap unified {args.output} 0\n"
        f"        pair_coeff * * EL1 EL2 ...   (the element of each atom type, from: {elements})"
    )
    return 0


def _add_export_lammps(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export-lammps",
        help="write a model for LAMMPS's pair_style mliap unified (ML-IAP with Python)",
        description="Write the small object LAMMPS's ML-IAP unified pair style unpickles: the "
        "model file's path and SHA-256 (the weights stay in our safe format and are read when "
        "LAMMPS starts). A .pt/.pth output is read by LAMMPS with torch.load (with torch >= 2.6 "
        "run LAMMPS with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1); any other suffix with pickle.",
    )
    p.add_argument("model", help="a zoo name or one of our model files")
    p.add_argument("-o", "--output", required=True, help="output file, e.g. model-mliap.pt")
    p.add_argument("--head", default=None, help="head of a multi-head model (default: its own)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--device", default="cpu", help="torch device LAMMPS will use (cpu, cuda)")
    p.set_defaults(func=_cmd_export_lammps)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the engine sub-commands (``ipi``, ``export-lammps``)."""
    _add_ipi(subparsers)
    _add_export_lammps(subparsers)
