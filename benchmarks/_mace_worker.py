"""mace-torch side of ``mace_comparison.py``; runs with the python of the mace virtual environment.

One JSON request (first argument or stdin), one marked JSON result line on stdout. Actions:

``info``
    Versions of python, torch, e3nn, mace-torch, ase, numpy (and the GPU name for ``cuda``).
``build``
    Build a random-weight ``ScaleShiftMACE`` (MACE-MP-0 recipe, residual interaction blocks,
    or the spec's blocks, ZBL and distance transform for MPA-0; seeded) for the request's
    ``spec`` and ``torch.save`` the whole module to ``out``, as MACE writes ``.model`` files
    (stored in float64; each side converts to the dtype it runs in).
``time``
    Load ``model`` with ``mace.calculators.MACECalculator`` and time MD-like calls on fcc Cu
    (see ``_bench_common.time_md_calls``). The data preparation alone is the calculator's own
    ``_atoms_to_batch`` (``config_from_atoms`` + ``AtomicData.from_config`` + ``Batch``).

Note: ``MACECalculator.calculate`` evaluates energy, forces and stress in every call whatever
ASE asked for, so its ``energy``, ``forces`` and ``stress`` modes cost the same.
"""

from __future__ import annotations

import os

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # MACECalculator: torch.load

import platform
import time
from typing import Any

import _bench_common as common
import ase
import numpy as np
import torch


def info(request: dict[str, Any]) -> dict[str, Any]:
    """Versions of everything on the mace side."""
    import e3nn
    import mace

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "mace-torch": getattr(mace, "__version__", "unknown"),
        "ase": ase.__version__,
        "numpy": np.__version__,
    }
    if request.get("device") == "cuda" and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        try:
            import cuequivariance_torch

            out["cuequivariance-torch"] = cuequivariance_torch.__version__
        except ImportError:
            out["cuequivariance-torch"] = "not installed"
    return out


def build(request: dict[str, Any]) -> dict[str, Any]:
    """Write a random-weight MACE-MP-0-architecture model for ``request["spec"]``."""
    from e3nn import o3
    from mace import modules

    spec = request["spec"]
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(spec["seed"])
    residual = "RealAgnosticResidualInteractionBlock"  # MACE-MP-0; MPA-0: density blocks
    first = modules.interaction_classes[spec.get("interaction_first", residual)]
    other = modules.interaction_classes[spec.get("interaction", residual)]
    model = modules.ScaleShiftMACE(
        r_max=spec["r_max"],
        num_bessel=spec["num_bessel"],
        num_polynomial_cutoff=spec["num_polynomial_cutoff"],
        max_ell=spec["max_ell"],
        interaction_cls=other,
        interaction_cls_first=first,
        num_interactions=spec["num_interactions"],
        num_elements=len(spec["atomic_numbers"]),
        hidden_irreps=o3.Irreps(spec["hidden_irreps"]),
        MLP_irreps=o3.Irreps(spec["MLP_irreps"]),
        atomic_energies=np.asarray(spec["atomic_energies"], dtype=np.float64),
        avg_num_neighbors=spec["avg_num_neighbors"],
        atomic_numbers=spec["atomic_numbers"],
        correlation=spec["correlation"],
        gate=torch.nn.functional.silu,
        radial_MLP=spec["radial_MLP"],
        atomic_inter_scale=spec["atomic_inter_scale"],
        atomic_inter_shift=spec["atomic_inter_shift"],
        pair_repulsion=spec.get("pair_repulsion", False),
        distance_transform=spec.get("distance_transform", "None"),
    ).eval()
    tmp = request["out"] + ".part"
    torch.save(model, tmp)
    os.replace(tmp, request["out"])  # a killed build never leaves a half-written cache entry
    n_parameters = sum(p.numel() for p in model.parameters())
    return {"out": request["out"], "n_parameters": n_parameters}


def time_calls(request: dict[str, Any]) -> dict[str, Any]:
    """Time MACECalculator on ``4 n_cells³`` Cu atoms in one mode."""
    from mace.calculators import MACECalculator

    torch.set_num_threads(request["threads"])
    device = request["device"]
    start = time.perf_counter()
    options = {"enable_cueq": True} if request.get("cueq") else {}
    calc = MACECalculator(
        model_paths=request["model"], device=device, default_dtype=request["dtype"], **options
    )
    load_s = time.perf_counter() - start
    atoms = common.structure(request)
    atoms.calc = calc

    def prepare(atoms: ase.Atoms) -> int:
        batch = calc._atoms_to_batch(atoms)  # exactly what calculate() does first
        return int(batch["edge_index"].shape[1])

    cuda = device == "cuda"

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    out = common.time_md_calls(
        atoms,
        request["mode"],
        repeats=request["repeats"],
        warmup=request["warmup"],
        seed=request["seed"],
        prepare=prepare if hasattr(calc, "_atoms_to_batch") else None,
        synchronize=synchronize,
    )
    if cuda:
        out["gpu_busy"] = common.gpu_busy(atoms, request, out["step"]["median_s"])
    out.update(
        n_atoms=len(atoms),
        load_s=load_s,
        peak_rss_mib=common.peak_rss_mib(),
        cuda_peak_mib=torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        threads=torch.get_num_threads(),
    )
    return out


def main() -> None:
    request = common.read_request()
    actions = {"info": info, "build": build, "time": time_calls}
    common.emit(actions[request["action"]](request))


if __name__ == "__main__":
    main()
