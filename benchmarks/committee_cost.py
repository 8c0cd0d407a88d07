"""Cost of a committee: one model vs M models in a Python loop vs one batched (vmapped) call,
and a shallow ensemble (one trunk, M last-layer readouts), on fcc Cu (108 atoms), energy and
forces.

Members: the zoo model ``metals`` and M − 1 copies with every weight perturbed by 1 %
(the cost does not depend on the values). Each case: 2 warm-up calls, then ``--repeats``
timed calls on freshly rattled geometries (same geometries for every case, cases interleaved);
the graph is built once per geometry outside the timing. Printed: median wall and CPU seconds
per call and their ratio to one model.

    OMP_NUM_THREADS=1 python benchmarks/committee_cost.py --members 4 --dtype float64
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time

import torch
from ase.build import bulk

from ase_equi import load_model
from ase_equi.graph import atoms_to_graph
from ase_equi.model.committee import Committee, member_derivatives
from ase_equi.model.gradients import energy_forces_stress
from ase_equi.model.shallow_ensemble import ShallowEnsemble


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--repeat-cell", type=int, default=3, help="n: 4 n³ atoms")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the medians here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    base = load_model("metals", dtype=dtype).model.eval()
    members = [base]
    torch.manual_seed(0)
    for _ in range(args.members - 1):
        member = copy.deepcopy(base)
        with torch.no_grad():
            for p in member.parameters():
                p.mul_(1 + 0.01 * torch.randn_like(p))
        members.append(member)
    for m in members:
        m.requires_grad_(False)
    committee = Committee(members)
    shallow = ShallowEnsemble(copy.deepcopy(base), args.members).to(dtype).requires_grad_(False)
    atoms0 = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(args.repeat_cell)
    graphs = []
    for k in range(args.repeats + 2):
        atoms = atoms0.copy()
        atoms.rattle(0.02, seed=k)
        graphs.append(atoms_to_graph(atoms, base.config.elements, base.config.r_max, dtype=dtype))
    cases = {
        "one model": lambda g: energy_forces_stress(base, g),
        f"{args.members} models, Python loop": lambda g: [
            energy_forces_stress(m, g) for m in members
        ],
        "full committee, batched, mean only": lambda g: energy_forces_stress(committee, g),
        "full committee, batched, member forces": lambda g: member_derivatives(committee, g),
        "shallow ensemble, mean only": lambda g: energy_forces_stress(shallow, g),
        "shallow ensemble, member energies": lambda g: member_derivatives(shallow, g, each=False),
        "shallow ensemble, member forces": lambda g: member_derivatives(shallow, g),
    }
    print(" ".join([os.path.basename(sys.executable), *sys.argv]))
    print(
        f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}, "
        f"threads {args.threads}, {len(atoms0)} atoms, {args.dtype}, M = {args.members}"
    )
    # round robin: every case runs on each geometry before the next geometry, so that a
    # change in the machine's load hits all cases alike; CPU time of this process (one
    # thread) is reported beside the wall time, as it is insensitive to other processes
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for k, g in enumerate(graphs):
        for name, run in cases.items():
            t0, c0 = time.perf_counter(), time.process_time()
            run(g)
            if k >= 2:
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    medians = {name: statistics.median(v) for name, v in wall.items()}
    cpu_medians = {name: statistics.median(v) for name, v in cpu.items()}
    one, one_cpu = medians["one model"], cpu_medians["one model"]
    print(f"{'case':42s} {'wall':>9s}    ratio   {'CPU':>9s}    ratio")
    for name in cases:
        t, c = medians[name], cpu_medians[name]
        print(
            f"{name:42s} {t * 1e3:7.1f} ms  {t / one:5.2f} x  "
            f"{c * 1e3:7.1f} ms  {c / one_cpu:5.2f} x"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"args": vars(args), "median_wall_s": medians, "median_cpu_s": cpu_medians},
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
