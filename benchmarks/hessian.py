"""Exact Hessian: accuracy against central finite differences, time against ASE and a row loop.

For each system, on the same float64 model, side by side in one process:

- ``exact``: :func:`ase_equi.vibrations.hessian` (one forward + one backward with
  ``create_graph``, then one backward per row; CPU default ``rows_per_chunk=1``);
- ``vmap``: the same with ``rows_per_chunk=16`` (16 rows per vmapped backward pass);
- ``ase``: ``ase.vibrations.Vibrations`` (6N force calls, ``delta``), whose Hessian is the
  central finite difference of the forces used for the accuracy check;
- ``loop``: the reference code's row-by-row autograd loop (``torch.autograd.grad`` of each
  gradient component in Python, a fresh gradient graph built by the same model);
- a profile: the time of one force call and of the forward + ``create_graph`` backward.

Then the exact Hessian alone for fcc Cu supercells of growing size (scaling): whole up to
``--full-max`` atoms, above that the rows of ``--row-atoms`` atoms timed and the whole
extrapolated (``indices=`` costs only those rows), beside 6N force calls for ASE.

Run (one thread, as the results file says)::

    OMP_NUM_THREADS=1 python benchmarks/hessian.py --out benchmarks/results/DATE-hessian.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.vibrations import Vibrations

from ase_equi import EquivariantCalculator, load_model
from ase_equi.graph.build import atoms_to_graph
from ase_equi.graph.tensors import edge_vectors
from ase_equi.vibrations import hessian


def systems() -> dict[str, tuple[Atoms, str]]:
    """name → (structure, zoo model), each slightly rattled off symmetry."""
    ethanol = molecule("CH3CH2OH")
    silicon = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)  # 64 atoms
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)  # 12 atoms, periodic in-plane
    for k, atoms in enumerate((ethanol, silicon, slab)):
        atoms.rattle(0.03, seed=k)
    return {
        "ethanol": (ethanol, "molecules-pbe"),
        "Si64": (silicon, "silicon-xtb"),
        "Cu-slab": (slab, "metals"),
    }


def synchronize() -> None:
    """Wait for the GPU's queued work (no-op without CUDA), so that wall times are whole."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(function):
    synchronize()
    start = time.perf_counter()
    value = function()
    synchronize()
    return value, time.perf_counter() - start


def graph_of(atoms: Atoms, loaded):
    """The float64 graph of ``atoms`` on the model's device."""
    device = next(loaded.model.parameters()).device
    return atoms_to_graph(atoms, loaded.config.elements, loaded.config.r_max, device=device)


def row_loop(atoms: Atoms, loaded) -> np.ndarray:
    """The reference code's approach: a Python loop of one autograd.grad per gradient entry."""
    g = graph_of(atoms, loaded)
    positions = g.positions.clone().requires_grad_(True)
    vectors = edge_vectors(positions, g.cell, g.shifts, g.senders, g.receivers, g.batch)
    args = (g.element_index, vectors, g.senders, g.receivers, g.batch, 1)
    energy = loaded.model(*args)["energy"].sum()
    gradient = torch.autograd.grad(energy, positions, create_graph=True)[0].reshape(-1)
    rows = [
        torch.autograd.grad(gradient[k], positions, retain_graph=True)[0].reshape(-1)
        for k in range(gradient.numel())
    ]
    return torch.stack(rows).cpu().numpy()


def profile(atoms: Atoms, loaded, calc) -> dict[str, float]:
    """Seconds of one force call, and of the forward + create_graph backward."""
    probe = atoms.copy()
    probe.calc = calc
    forces = []
    for _ in range(3):
        probe.positions[0, 0] += 1e-3
        forces.append(timed(probe.get_forces)[1])
    g = graph_of(atoms, loaded)
    positions = g.positions.clone().requires_grad_(True)

    def first() -> torch.Tensor:
        vectors = edge_vectors(positions, g.cell, g.shifts, g.senders, g.receivers, g.batch)
        energy = loaded.model(g.element_index, vectors, g.senders, g.receivers, g.batch, 1)
        gradient = torch.autograd.grad(energy["energy"].sum(), positions, create_graph=True)[0]
        synchronize()
        return gradient

    return {"force_call_s": float(np.median(forces)), "gradient_graph_s": timed(first)[1]}


def compare(
    name: str, atoms: Atoms, model: str, delta: float, with_vmap: bool, device: str
) -> dict:
    loaded = load_model(model, dtype=torch.float64, device=device)
    calc = EquivariantCalculator(loaded, device=device)
    hessian(
        atoms, loaded, indices=[0], device=device
    )  # warm-up (first passes of the scripted modules)
    exact, t_exact = timed(lambda: hessian(atoms, loaded, device=device))
    row = {"system": name, "model": model, "n_atoms": len(atoms), "exact_s": t_exact}
    if with_vmap:
        vm, row["vmap16_s"] = timed(
            lambda: hessian(atoms, loaded, rows_per_chunk=16, device=device)
        )
        row["vmap_vs_exact_max_abs"] = float(np.abs(vm - exact).max())
    loop, row["loop_s"] = timed(lambda: row_loop(atoms, loaded))
    row["loop_vs_exact_max_abs"] = float(np.abs(0.5 * (loop + loop.T) - exact).max())
    with tempfile.TemporaryDirectory() as tmp:
        probe = atoms.copy()
        probe.calc = calc
        vib = Vibrations(probe, delta=delta, nfree=2, name=str(Path(tmp) / "vib"))
        _, row["ase_s"] = timed(vib.run)
        finite = vib.get_vibrations().get_hessian_2d()
    row["fd_delta_A"] = delta
    row["fd_max_abs_eV_A2"] = float(np.abs(finite - exact).max())
    row["max_abs_H"] = float(np.abs(exact).max())
    row.update(profile(atoms, loaded, calc))
    row["rows"] = 3 * len(atoms)
    row["per_row_s"] = (t_exact - row["gradient_graph_s"]) / row["rows"]
    row["speedup_vs_ase"] = row["ase_s"] / t_exact
    row["speedup_vs_loop"] = row["loop_s"] / t_exact
    print(json.dumps(row), flush=True)
    return row


def scaling(repeats: list[list[int]], full_max: int, row_atoms: int, device: str) -> list[dict]:
    """Exact Hessian of rattled fcc Cu supercells (``metals``). Up to ``full_max`` atoms the
    whole Hessian is timed; above, the rows of ``row_atoms`` atoms only (``indices=``, which
    costs only those rows), and the whole is extrapolated as the gradient graph plus 3N rows at
    the measured time per row. ASE's Vibrations is extrapolated as 6N force calls at the
    measured time of one."""
    loaded = load_model("metals", dtype=torch.float64, device=device)
    calc = EquivariantCalculator(loaded, device=device)
    hessian(bulk("Cu", "fcc", a=3.61, cubic=True), loaded, indices=[0], device=device)  # warm-up
    out = []
    for n in repeats:
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n[0], n[1], n[2]))
        atoms.rattle(0.02, seed=1)
        row: dict = {"n_atoms": len(atoms)}
        row.update(profile(atoms, loaded, calc))
        if len(atoms) <= full_max:
            _, row["exact_s"] = timed(lambda: hessian(atoms, loaded, device=device))  # noqa: B023 (called now)
            row["per_row_s"] = (row["exact_s"] - row["gradient_graph_s"]) / (3 * len(atoms))
        else:
            picked = list(range(row_atoms))
            _, seconds = timed(lambda: hessian(atoms, loaded, indices=picked, device=device))  # noqa: B023
            row["rows_timed"] = 3 * row_atoms
            row["per_row_s"] = (seconds - row["gradient_graph_s"]) / (3 * row_atoms)
            row["exact_s_extrapolated"] = (
                row["gradient_graph_s"] + 3 * len(atoms) * row["per_row_s"]
            )
        row["per_row_in_force_calls"] = row["per_row_s"] / row["force_call_s"]
        row["ase_s_extrapolated"] = 6 * len(atoms) * row["force_call_s"]
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--delta", type=float, default=1e-4, help="finite-difference step, Å")
    parser.add_argument("--skip", nargs="*", default=[], help="systems to leave out")
    parser.add_argument("--scaling", default="2x2x2,4x2x2,3x3x3,5x5x5", help="Cu repeats")
    parser.add_argument(
        "--full-max", type=int, default=64, help="largest cell whose whole Hessian is timed"
    )
    parser.add_argument(
        "--row-atoms", type=int, default=2, help="atoms whose rows are timed in larger cells"
    )
    parser.add_argument("--device", default="cpu", help="torch device of the model (cuda)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [
        compare(name, atoms, model, args.delta, name == "Cu-slab", args.device)
        for name, (atoms, model) in systems().items()
        if name not in args.skip
    ]
    repeats = [[int(x) for x in r.split("x")] for r in args.scaling.split(",") if r]
    result = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/hessian.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name(0)}" if args.device.startswith("cuda") else ""),
        "device": args.device,
        "threads": torch.get_num_threads(),
        "compare": rows,
        "scaling": scaling(repeats, args.full_max, args.row_atoms, args.device),
    }
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
