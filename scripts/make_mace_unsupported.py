"""Small extra MACE files: features ase_equi refuses (ZBL repulsion, Agnesi transform), and a
two-head model with mace-torch's results for each head.

Run in the reference virtual environment (mace-torch 0.3.16, e3nn 0.4.4), from the repository
root::

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 $MACE_VENV/bin/python scripts/make_mace_unsupported.py

Writes ``tests/fixtures/mace/unsupported_<feature>.model.xz`` (the tests check that loading each is
refused with a message naming the feature) and ``multihead.model.xz`` with
``reference_multihead.json`` (energies and forces of each head, float64).
"""

from __future__ import annotations

import json
import lzma
import sys
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from e3nn import o3
from mace import modules
from mace.calculators import MACECalculator

OUT_DIR = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mace"

# ZBL and Agnesi are read since issue 14 (their files stay as small loadable examples); the
# Soft transform is used by no released model and stays refused.
FEATURES = {
    "zbl": {"pair_repulsion": True},
    "agnesi": {"distance_transform": "Agnesi"},
    "soft": {"distance_transform": "Soft"},
    # ZBL whose envelope order (6) differs from the radial cutoff's (5): mace-torch always builds
    # them equal, ase_equi has one envelope_p, so such an edited file is refused by name
    "zbl_order": {"pair_repulsion": True},
}
EDITS = {"zbl_order": lambda model: model.pair_repulsion_fn.p.fill_(6)}


def tiny_model(
    scale=1.0, shift=0.0, energies=(-1.0, -2.0), hidden="8x0e", **extra
) -> torch.nn.Module:
    torch.manual_seed(0)
    return modules.ScaleShiftMACE(
        atomic_inter_scale=scale,
        atomic_inter_shift=shift,
        r_max=4.0,
        num_bessel=4,
        num_polynomial_cutoff=5,
        max_ell=1,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2,
        num_elements=2,
        hidden_irreps=o3.Irreps(hidden),
        MLP_irreps=o3.Irreps("4x0e"),
        atomic_energies=np.array(energies),
        avg_num_neighbors=5.0,
        atomic_numbers=[1, 8],
        correlation=2,
        gate=torch.nn.functional.silu,
        radial_MLP=[8],
        **extra,
    ).eval()


def main() -> None:
    torch.set_default_dtype(torch.float64)
    only = set(sys.argv[1:])  # names to regenerate (all, and the multi-head file, when none)
    for name, extra in FEATURES.items():
        if only and name not in only:
            continue
        path = OUT_DIR / f"unsupported_{name}.model"
        model = tiny_model(**extra)
        if name in EDITS:
            EDITS[name](model)
        torch.save(model, path)
        out = path.with_name(path.name + ".xz")
        out.write_bytes(lzma.compress(path.read_bytes(), preset=9))
        path.unlink()
        print(f"{out}: {out.stat().st_size} bytes")
    if not only:
        multihead()


def multihead() -> None:
    """Two heads with different E0, scale and shift; random weights perturbed (seeded)."""
    model = tiny_model(
        scale=[1.3, 0.7],
        shift=[-0.2, 0.1],
        energies=[[-1.0, -2.0], [-1.5, -2.5]],
        heads=["Default", "pbe"],
        hidden="8x0e+8x1o",
    )
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    path = OUT_DIR / "multihead.model"
    torch.save(model, path)
    rng = np.random.default_rng(3)
    atoms = Atoms(
        "H4O2", positions=rng.uniform(0, 3.0, (6, 3)), cell=np.diag([3.1, 3.2, 3.3]), pbc=True
    )
    results = {
        "atoms": {
            "numbers": atoms.numbers.tolist(),
            "positions": atoms.positions.tolist(),
            "cell": atoms.cell.array.tolist(),
            "pbc": atoms.pbc.tolist(),
        }
    }
    for head in ("Default", "pbe"):
        calc = MACECalculator(
            model_paths=str(path), device="cpu", default_dtype="float64", head=head
        )
        atoms.calc = calc
        results[head] = {
            "energy": float(atoms.get_potential_energy()),
            "forces": atoms.get_forces().tolist(),
            "stress": atoms.get_stress().tolist(),
        }
    (OUT_DIR / "reference_multihead.json").write_text(json.dumps(results, indent=1) + "\n")
    out = path.with_name(path.name + ".xz")
    out.write_bytes(lzma.compress(path.read_bytes(), preset=9))
    path.unlink()
    print(f"{out}: {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
