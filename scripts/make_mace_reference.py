"""Generate the MACE reference models and results under ``tests/fixtures/mace/``.

This script runs in a separate virtual environment that has the reference implementation
installed (mace-torch 0.3.16, e3nn 0.4.4, CPU torch); ase_equi itself never imports mace::

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 $MACE_VENV/bin/python scripts/make_mace_reference.py

For every architecture in ``ARCHITECTURES`` it

1. builds a random-weight MACE model (seeded), adds ``PERTURBATION * randn`` to every parameter
   so that the weights are not dominated by the symmetric initialisation, and pickles the whole
   module with ``torch.save(model, path)``, exactly as MACE writes ``.model`` files;
2. records the independent truth for the restricted unpickler: every ``module name`` global the
   pickle references, the ``state_dict()`` keys, shapes, dtypes and a SHA-256 of each tensor's
   bytes, and the constructor defaults that mace-torch used;
3. evaluates a few deterministic structures (triclinic bulk, molecule, two-element crystal, slab)
   with ``mace.calculators.MACECalculator`` in float64 and float32 and stores energy,
   free_energy, forces, stress (3-D cells only), ``energies`` and ``node_energy``.

Everything goes to ``tests/fixtures/mace/<name>.model`` and ``reference_<name>.json``.
"""

from __future__ import annotations

import os

os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # MACECalculator calls torch.load(path)

import hashlib
import inspect
import json
import logging
import lzma
import pickletools
import platform
import sys
import warnings
import zipfile
from pathlib import Path

import ase
import e3nn
import mace
import numpy as np
import torch
from ase import Atoms
from ase.build import fcc100, fcc111, graphene, molecule
from e3nn import o3
from mace import modules
from mace.calculators import MACECalculator

try:  # mace-torch >= 0.3.11; the older releases have no cuEquivariance wrapper
    from mace.modules import wrapper_ops

    CUET_AVAILABLE = wrapper_ops.CUET_AVAILABLE
except ImportError:
    CUET_AVAILABLE = None

OUT_DIR = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mace"
COMMAND = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 $MACE_VENV/bin/python scripts/make_mace_reference.py"
PERTURBATION = 0.1
RESIDUAL = "RealAgnosticResidualInteractionBlock"
NON_RESIDUAL = "RealAgnosticInteractionBlock"
DENSITY = "RealAgnosticDensityInteractionBlock"
DENSITY_RESIDUAL = "RealAgnosticDensityResidualInteractionBlock"
NON_LINEAR = "RealAgnosticResidualNonLinearInteractionBlock"
#: The six heads of the released MACE-MH-1 file, in the file's order.
MH1_HEADS = [
    "matpes_r2scan",
    "mp_pbe_refit_add",
    "spice_wB97M",
    "oc20_usemppbe",
    "omol",
    "omat_pbe",
]
#: The 89 elements of the MACE-MP / MPA-0 / OMAT-0 foundation models: H to Bi, Ac to Pu.
FOUNDATION_ELEMENTS = list(range(1, 84)) + list(range(89, 95))

# Settings shared by every architecture (MACE-MP-0 / MACE-OFF23 recipes).
COMMON = dict(
    num_bessel=8,
    num_polynomial_cutoff=5,
    max_ell=3,
    num_interactions=2,
    correlation=3,
    MLP_irreps="16x0e",
    radial_MLP=[64, 64, 64],
    gate="silu",
    interaction_first=RESIDUAL,
    interaction=RESIDUAL,
    model="ScaleShiftMACE",
    stored_dtype="float64",
)

# The elements of each model are chosen so that every structure below is covered.
ARCHITECTURES: dict[str, dict] = {
    "mp0_small": dict(
        COMMON, seed=101, hidden_irreps="128x0e", r_max=6.0, atomic_numbers=[1, 8, 29]
    ),
    "mp0_medium": dict(
        COMMON, seed=102, hidden_irreps="128x0e+128x1o", r_max=6.0, atomic_numbers=[1, 8, 29]
    ),
    # The U matrices alone take 17 MB in float64 (they do not depend on the number of
    # elements); the large model is therefore stored in float32 to keep tests/fixtures small.
    "mp0_large": dict(
        COMMON,
        seed=103,
        hidden_irreps="128x0e+128x1o+128x2e",
        r_max=6.0,
        atomic_numbers=[1, 8, 29],
        stored_dtype="float32",
    ),
    # MACE-OFF23 small: 96 invariant channels (L=0), r_max 4.5 A, organic elements.
    "off23_small": dict(
        COMMON, seed=104, hidden_irreps="96x0e", r_max=4.5, atomic_numbers=[1, 6, 8]
    ),
    # Plain MACE (no scale/shift) with a non-residual first interaction; max_ell=2 keeps the
    # U matrices small and covers a spherical-harmonics order other than 3.
    "mace_nonresidual": dict(
        COMMON,
        seed=105,
        hidden_irreps="32x0e+32x1o",
        r_max=5.0,
        max_ell=2,
        atomic_numbers=[13, 29, 79],
        model="MACE",
        interaction_first=NON_RESIDUAL,
    ),
    # MACE-MPA-0 medium (also MP-0b3, OMAT-0 medium, MATPES-0): density-normalised blocks
    # (non-residual first), ZBL pair repulsion, Agnesi distance transform, 10 Bessel functions,
    # 89 elements. The released model has 128 channels (9,063,204 parameters, checked by
    # mpa0_parameter_count); 32 channels here keep the file small, every other option is the
    # released one.
    "mpa0_medium": dict(
        COMMON,
        seed=106,
        hidden_irreps="32x0e+32x1o",
        r_max=6.0,
        num_bessel=10,
        atomic_numbers=FOUNDATION_ELEMENTS,
        structure_elements=[1, 8, 29],
        interaction_first=DENSITY,
        interaction=DENSITY_RESIDUAL,
        pair_repulsion=True,
        distance_transform="Agnesi",
    ),
    # MACE-MH-0 / MH-1: residual non-linear interaction blocks in both layers (radial MLPs with
    # LayerNorm and biases fed by source/target element embeddings, learned density
    # normalisation, gated non-linearity with sigmoid gates), reduced edge irreps (also in the
    # first layer: use_edge_irreps_first), an element-agnostic product basis, the cutoff applied
    # to the tensor-product weights instead of the radial features (apply_cutoff=False), ZBL,
    # Agnesi, 10 Bessel functions, 89 elements, six heads, stored in float32. The released
    # model has 512x0e+512x1o hidden and 128x0e+128x1o edge irreps; 32 and 16 channels here.
    "mh1": dict(
        COMMON,
        seed=107,
        hidden_irreps="32x0e+32x1o",
        edge_irreps="16x0e+16x1o",
        use_edge_irreps_first=True,
        use_agnostic_product=True,
        apply_cutoff=False,
        r_max=6.0,
        num_bessel=10,
        atomic_numbers=FOUNDATION_ELEMENTS,
        structure_elements=[1, 8, 29],
        interaction_first=NON_LINEAR,
        interaction=NON_LINEAR,
        pair_repulsion=True,
        distance_transform="Agnesi",
        heads=MH1_HEADS,
        stored_dtype="float32",
        perturbation=0.3,
    ),
    # A user's multi-head fine-tune of an MPA-0-type parent, as
    # `mace_run_train --foundation_model ... --multiheads_finetuning` writes it: heads
    # ["pt_head", "Default"] (pt_head first), per-head E0, scale, shift and readouts; the
    # user's head has shift 0 (trained with --model MACE).
    "mpa0_finetune": dict(
        COMMON,
        seed=108,
        hidden_irreps="32x0e+32x1o",
        r_max=6.0,
        num_bessel=10,
        atomic_numbers=FOUNDATION_ELEMENTS,
        structure_elements=[1, 8, 29],
        interaction_first=DENSITY,
        interaction=DENSITY_RESIDUAL,
        pair_repulsion=True,
        distance_transform="Agnesi",
        heads=["pt_head", "Default"],
        scale_shift=([1.37, 0.83], [-0.21, 0.0]),
    ),
}
MPA0_MEDIUM_PARAMETERS = 9_063_204
ATOMIC_ENERGIES = {1: -1.117, 6: -8.054, 8: -4.932, 13: -3.745, 29: -4.099, 79: -3.273}


def atomic_energy(z: int, head: int = 0) -> float:
    """E0 (eV) of element ``z`` for head number ``head``: the table above, else a made-up
    smooth value; head h adds -0.07 h eV (each head has its own E0)."""
    return ATOMIC_ENERGIES.get(z, -0.5 - 0.03 * z) - 0.07 * head


AVG_NUM_NEIGHBORS = 12.3
SCALE_SHIFT = (1.37, -0.21)  # atomic_inter_scale, atomic_inter_shift (eV)


def head_constants(spec: dict) -> tuple[list[str], np.ndarray, object, object]:
    """Heads, E0 ``[n_heads, n_elements]`` (or ``[n_elements]`` for one head), scale, shift."""
    heads = spec.get("heads", ["Default"])
    e0 = np.array(
        [[atomic_energy(z, h) for z in spec["atomic_numbers"]] for h in range(len(heads))]
    )
    if len(heads) == 1:
        return heads, e0[0], SCALE_SHIFT[0], SCALE_SHIFT[1]
    scale, shift = spec.get(
        "scale_shift",
        (
            [SCALE_SHIFT[0] + 0.11 * h for h in range(len(heads))],
            [SCALE_SHIFT[1] + 0.05 * h for h in range(len(heads))],
        ),
    )
    return heads, e0, scale, shift


# ----------------------------------------------------------------------------------------------
# Models


def build_model(spec: dict) -> torch.nn.Module:
    """Random-weight MACE model of ``spec`` in float64, parameters perturbed (seeded)."""
    torch.manual_seed(spec["seed"])
    heads, e0, scale, shift = head_constants(spec)
    extra = {  # options of mace-torch >= 0.3.14 (MH-1); left out where unused
        key: spec[key]
        for key in ("use_edge_irreps_first", "use_agnostic_product", "apply_cutoff")
        if key in spec
    }
    if "edge_irreps" in spec:
        extra["edge_irreps"] = o3.Irreps(spec["edge_irreps"])
    accepted = inspect.signature(modules.MACE.__init__).parameters
    for key in [k for k in extra if k not in accepted]:  # e.g. 0.3.14: no use_edge_irreps_first
        print(f"mace-torch {mace.__version__} has no {key}; built without it", file=sys.stderr)
        del extra[key]
    if len(heads) > 1:
        extra["heads"] = heads
    kwargs = dict(
        r_max=spec["r_max"],
        num_bessel=spec["num_bessel"],
        num_polynomial_cutoff=spec["num_polynomial_cutoff"],
        max_ell=spec["max_ell"],
        interaction_cls=modules.interaction_classes[spec["interaction"]],
        interaction_cls_first=modules.interaction_classes[spec["interaction_first"]],
        num_interactions=spec["num_interactions"],
        num_elements=len(spec["atomic_numbers"]),
        hidden_irreps=o3.Irreps(spec["hidden_irreps"]),
        MLP_irreps=o3.Irreps(spec["MLP_irreps"]),
        atomic_energies=e0,
        avg_num_neighbors=AVG_NUM_NEIGHBORS,
        atomic_numbers=spec["atomic_numbers"],
        correlation=spec["correlation"],
        gate=getattr(torch.nn.functional, spec["gate"]),
        radial_MLP=spec["radial_MLP"],
        pair_repulsion=spec.get("pair_repulsion", False),
        distance_transform=spec.get("distance_transform", "None"),
        **extra,
    )
    if spec["model"] == "ScaleShiftMACE":
        model = modules.ScaleShiftMACE(atomic_inter_scale=scale, atomic_inter_shift=shift, **kwargs)
    else:
        model = modules.MACE(**kwargs)
    generator = torch.Generator().manual_seed(spec["seed"] + 1000)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(spec.get("perturbation", PERTURBATION) * noise)
    if spec["stored_dtype"] == "float32":
        model = model.float()
    return model.eval()


def constructor_record(model: torch.nn.Module) -> dict:
    """Defaults of ``MACE.__init__`` and the flags the built model actually carries."""
    defaults = {
        key: repr(parameter.default)
        for key, parameter in inspect.signature(modules.MACE.__init__).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    flags = [
        "use_reduced_cg",
        "use_so3",
        "use_agnostic_product",
        "use_last_readout_only",
        "use_edge_irreps_first",
        "apply_cutoff",
        "lammps_mliap",
        "heads",
        "edge_irreps",
    ]
    observed = {flag: repr(getattr(model, flag, "<absent>")) for flag in flags}
    return {
        "MACE.__init__ defaults": defaults,
        "model attributes": observed,
        "wrapper_ops.CUET_AVAILABLE": CUET_AVAILABLE,
        "note": (
            "SymmetricContractionWrapper uses use_reduced_cg and CUET_AVAILABLE, so without "
            "cuequivariance the contractions use the original (non-reduced) U matrices even "
            "though the model attribute says use_reduced_cg=True."
        ),
    }


def pickle_globals(path: Path) -> list[str]:
    """Every ``module.name`` the pickle in ``path`` references (GLOBAL / STACK_GLOBAL)."""
    with zipfile.ZipFile(path) as archive:
        data_pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        payload = archive.read(data_pkl)
    found: set[str] = set()
    pushed: list[object] = []  # values pushed by each opcode, to resolve STACK_GLOBAL
    memo: dict[int, object] = {}
    for opcode, argument, _ in pickletools.genops(payload):
        if opcode.name == "GLOBAL":
            found.add(argument.replace(" ", "."))
            pushed.append(None)
        elif opcode.name == "STACK_GLOBAL":
            found.add(f"{pushed[-2]}.{pushed[-1]}")
            pushed.append(None)
        elif opcode.name in ("MEMOIZE",):
            memo[len(memo)] = pushed[-1]
        elif opcode.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(argument)] = pushed[-1]
        elif opcode.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo.get(int(argument)))
        elif "UNICODE" in opcode.name or "STRING" in opcode.name:
            pushed.append(argument)
        else:
            pushed.append(None)
    return sorted(found)


def tensor_record(tensor: torch.Tensor) -> dict:
    data = tensor.detach().cpu().contiguous()
    return {
        "shape": list(data.shape),
        "dtype": str(data.dtype).removeprefix("torch."),
        "sha256": hashlib.sha256(data.numpy().tobytes()).hexdigest(),
    }


# ----------------------------------------------------------------------------------------------
# Structures


def _rattled_grid(symbols: list[str], cellpar: list[float], grid: tuple, seed: int) -> Atoms:
    """Atoms on a grid of fractional points in a triclinic cell, rattled by 0.12 A."""
    fractions = np.array(
        [
            [(i + 0.25) / grid[0], (j + 0.25) / grid[1], (k + 0.25) / grid[2]]
            for i in range(grid[0])
            for j in range(grid[1])
            for k in range(grid[2])
        ]
    )
    atoms = Atoms(symbols=symbols, cell=cellpar, pbc=True)
    atoms.set_scaled_positions(fractions[: len(symbols)])
    atoms.rattle(0.12, seed=seed)
    return atoms


def structures_for(atomic_numbers: list[int], seed: int) -> dict[str, Atoms]:
    """Bulk, molecule, two-element crystal and slab made of the model's elements."""
    rng = np.random.default_rng(seed)
    out: dict[str, Atoms] = {}
    if atomic_numbers == [1, 8, 29]:  # H, O, Cu
        out["bulk_triclinic"] = _rattled_grid(
            ["Cu", "O", "H", "Cu", "O", "Cu", "H", "O", "Cu", "H", "Cu", "O"],
            [5.1, 5.5, 7.6, 82.0, 97.0, 104.0],
            (2, 2, 3),
            seed,
        )
        out["molecule"] = Atoms(
            "CuOH2OH",
            positions=[
                [0.0, 0.0, 0.0],
                [1.85, 0.1, 0.0],
                [2.3, 0.9, 0.3],
                [2.3, -0.7, -0.2],
                [-1.8, 0.2, 0.1],
                [-2.2, 0.8, 0.75],
            ],
        )
        cuprite = Atoms(
            "Cu4O2",
            scaled_positions=[
                [0.25, 0.25, 0.25],
                [0.75, 0.75, 0.25],
                [0.75, 0.25, 0.75],
                [0.25, 0.75, 0.75],
                [0.0, 0.0, 0.0],
                [0.5, 0.5, 0.5],
            ],
            cell=[4.27, 4.27, 4.27],
            pbc=True,
        )
        out["two_element"] = cuprite
        slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
        slab += Atoms("OH", positions=[[1.3, 0.75, slab.positions[:, 2].max() + 1.9]] * 2)
        slab.positions[-1, 2] += 0.97
        out["slab"] = slab
    elif atomic_numbers == [1, 6, 8]:  # H, C, O
        out["bulk_triclinic"] = _rattled_grid(
            ["C", "O", "H", "H", "C", "H", "O", "H", "C", "H", "O", "H"],
            [4.6, 4.9, 6.6, 85.0, 95.0, 100.0],
            (2, 2, 3),
            seed,
        )
        out["molecule"] = molecule("CH3CH2OH")
        water = molecule("H2O")
        box = Atoms(cell=[[4.6, 0.0, 0.0], [0.3, 4.4, 0.0], [-0.2, 0.4, 4.8]], pbc=True)
        for shift in ([0.5, 0.5, 0.5], [2.7, 2.4, 1.6], [1.2, 3.1, 3.4]):
            placed = water.copy()
            placed.rotate(float(rng.uniform(0, 360)), "z")
            placed.translate(shift)
            box += placed
        out["two_element"] = box
        slab = graphene("C2", a=2.46, size=(2, 2, 1), vacuum=6.0)
        top = slab.positions[:, 2].max()
        slab += Atoms("OH", positions=[[0.0, 0.0, top + 1.45], [0.9, 0.3, top + 1.8]])
        slab.pbc = (True, True, False)
        out["slab"] = slab
    elif atomic_numbers == [13, 29, 79]:  # Al, Cu, Au
        out["bulk_triclinic"] = _rattled_grid(
            ["Al", "Cu", "Au", "Al", "Cu", "Al", "Au", "Cu", "Al", "Cu", "Au", "Al"],
            [5.2, 5.6, 7.9, 80.0, 96.0, 106.0],
            (2, 2, 3),
            seed,
        )
        out["molecule"] = Atoms(
            "AuCu2Al3",
            positions=[
                [0.0, 0.0, 0.0],
                [2.5, 0.0, 0.1],
                [1.2, 2.2, -0.1],
                [-1.3, 2.3, 0.3],
                [1.3, 0.8, 2.3],
                [-1.4, -0.6, 2.0],
            ],
        )
        out["two_element"] = Atoms(
            "Cu2Au2",
            scaled_positions=[[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
            cell=[3.96, 3.96, 3.72],
            pbc=True,
        )
        slab = fcc100("Al", size=(2, 2, 3), vacuum=6.0)
        slab += Atoms("Au", positions=[[1.43, 1.43, slab.positions[:, 2].max() + 2.2]])
        out["slab"] = slab
    else:
        raise ValueError(f"no structures defined for elements {atomic_numbers}")
    for index, atoms in enumerate(out.values()):
        if index > 0:  # the bulk cell is rattled already
            atoms.rattle(0.05, seed=seed + index)
    return out


def short_contact() -> Atoms:
    """Cu2O cell with an O-H pair at about 0.52 Å and an H-H pair at about
    0.47 Å: inside the ZBL range
    (sum of covalent radii: O-H 0.97 Å, H-H 0.62 Å) where the pair repulsion dominates."""
    atoms = Atoms(
        "Cu2O2H3",
        positions=[
            [0.1, 0.2, 0.0],
            [2.0, 2.1, 0.3],
            [1.0, 1.1, 1.2],
            [3.1, 0.4, 2.3],
            [3.6, 0.5, 2.4],
            [0.6, 3.0, 3.1],
            [0.95, 3.25, 3.3],
        ],
        cell=[[4.3, 0.0, 0.0], [0.4, 4.1, 0.0], [-0.3, 0.2, 4.4]],
        pbc=True,
    )
    atoms.rattle(0.02, seed=7)
    return atoms


def mpa0_parameter_count() -> int:
    """Parameters of the full MACE-MPA-0-medium architecture (128 channels, 89 elements)."""
    spec = dict(ARCHITECTURES["mpa0_medium"], hidden_irreps="128x0e+128x1o")
    return sum(p.numel() for p in build_model(spec).parameters())


def evaluate(
    model_path: Path, atoms: Atoms, dtype: str, head: str | None = None, head_index: int = 0
) -> dict:
    options = {} if head is None else {"head": head}
    # as a user of that dtype would run it: mace-torch builds some tensors (positions, the head
    # mask of multi-head readouts) in torch's default dtype
    torch.set_default_dtype(getattr(torch, dtype))
    calculator = MACECalculator(
        model_paths=str(model_path), device="cpu", default_dtype=dtype, **options
    )
    atoms = atoms.copy()
    atoms.calc = calculator
    result = {
        "energy": atoms.get_potential_energy(),
        "free_energy": atoms.get_potential_energy(force_consistent=True),
        "forces": atoms.get_forces().tolist(),
        "node_energy": calculator.results["node_energy"].tolist(),
    }
    if "energies" in calculator.results:
        result["energies"] = calculator.results["energies"].tolist()
    else:  # mace-torch < 0.3.11 returns only node_energy (per-atom energy minus E0)
        model = calculator.models[0]  # its own E0 (float32-rounded in a float32 file)
        table = torch.atleast_2d(model.atomic_energies_fn.atomic_energies)[head_index]
        zs = model.atomic_numbers.tolist()
        e0 = np.array([float(table[zs.index(int(z))]) for z in atoms.numbers])
        result["energies"] = (calculator.results["node_energy"] + e0).tolist()
        result["energies_from"] = "node_energy + the model's E0 (no 'energies' in this release)"
    if atoms.cell.rank == 3:
        result["stress"] = atoms.get_stress(voigt=True).tolist()
    torch.set_default_dtype(torch.float64)
    return result


def atoms_record(atoms: Atoms) -> dict:
    return {
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "cell": atoms.cell.array.tolist(),
        "pbc": atoms.pbc.tolist(),
    }


# ----------------------------------------------------------------------------------------------


def compress(path: Path) -> Path:
    """``x.model`` → ``x.model.xz`` (sparse U matrices: ~3x smaller); removes ``x.model``."""
    out = path.with_name(path.name + ".xz")
    out.write_bytes(lzma.compress(path.read_bytes(), preset=9))
    path.unlink()
    return out


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_default_dtype(torch.float64)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    versions = {
        "mace-torch": mace.__version__,
        "e3nn": e3nn.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "ase": ase.__version__,
        "python": platform.python_version(),
    }
    count = mpa0_parameter_count()
    print(f"MPA-0 medium architecture: {count:,} parameters", file=sys.stderr)
    if count != MPA0_MEDIUM_PARAMETERS:
        raise SystemExit(f"MPA-0 medium should have {MPA0_MEDIUM_PARAMETERS:,} parameters")
    # names to regenerate (all when none is given); "--suffix _X" names the files <name>_X, for a
    # second copy written by another mace-torch release (pickles keep that release's layout)
    args = sys.argv[1:]
    suffix = args[args.index("--suffix") + 1] if "--suffix" in args else ""
    only = {a for a in args if a != "--suffix" and a != suffix}
    for base, spec in ARCHITECTURES.items():
        if only and base not in only:
            continue
        name = base + suffix
        model = build_model(spec)
        heads, e0, scale, shift = head_constants(spec)
        model_path = OUT_DIR / f"{name}.model"
        torch.save(model, model_path)
        reference = {
            "name": name,
            "command": COMMAND,
            "versions": versions,
            "model_file": model_path.name,
            "model_file_bytes": model_path.stat().st_size,
            "model_file_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
            "architecture": {
                **spec,
                "avg_num_neighbors": AVG_NUM_NEIGHBORS,
                "heads": heads,
                "atomic_energies": e0.tolist(),
                "atomic_inter_scale": scale if spec["model"] != "MACE" else None,
                "atomic_inter_shift": shift if spec["model"] != "MACE" else None,
                "perturbation": f"every parameter += {spec.get('perturbation', PERTURBATION)} "
                "* randn (seed + 1000)",
            },
            "constructor": constructor_record(model),
            "pickle_globals": pickle_globals(model_path),
            "state_dict": {key: tensor_record(value) for key, value in model.state_dict().items()},
            "structures": {},
        }
        elements = spec.get("structure_elements", spec["atomic_numbers"])
        structures = structures_for(elements, spec["seed"])
        if spec.get("pair_repulsion"):
            structures["short_contact"] = short_contact()
        # MACECalculator without head= answers with the head named "default" (any case) and
        # refuses a multi-head model without one (MH-1): its results are under "heads" only
        has_default = len(heads) == 1 or any(h.lower() == "default" for h in heads)
        for label, atoms in structures.items():
            reference["structures"][label] = {"atoms": atoms_record(atoms)}
            if has_default:
                reference["structures"][label]["float64"] = evaluate(model_path, atoms, "float64")
                reference["structures"][label]["float32"] = evaluate(model_path, atoms, "float32")
        if len(heads) > 1:  # "structures" holds the default head's results; here every head's
            reference["heads"] = {
                head: {
                    label: {
                        dtype: evaluate(model_path, atoms, dtype, head, heads.index(head))
                        for dtype in ("float64", "float32")
                    }
                    for label, atoms in structures.items()
                }
                for head in heads
            }
        json_path = OUT_DIR / f"reference_{name}.json"
        json_path.write_text(json.dumps(reference, indent=1) + "\n")
        print(f"{name}: {model_path.stat().st_size / 1e6:.2f} MB model, {json_path.name}")
        compress(model_path)
    total = sum(path.stat().st_size for path in OUT_DIR.iterdir())
    print(f"total tests/fixtures/mace: {total / 1e6:.2f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
