"""EquivariantCalculator: an ASE calculator for MACE-architecture equivariant potentials."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .allocator import retain_freed_memory
from .graph import atoms_to_graph
from .io.model_file import LoadedModel, load_model
from .model.gradients import energy_forces_stress
from .resident_graph import ResidentGraph
from .verlet_list import VerletNeighbourList
from .zoo import resolve as resolve_model

log = logging.getLogger(__name__)

DTYPES = {"float64": torch.float64, "float32": torch.float32}


class EquivariantCalculator(Calculator):
    """Energy, forces, stress and per-atom energies from an E(3)-equivariant MACE-type model.

    Parameters
    ----------
    model:
        A zoo name (``"metals"``, ``"molecules-pbe"``, ``"silicon-xtb"``; see
        :func:`ase_equi.zoo.zoo_names`), a path to a model file (``NAME.json``,
        ``NAME.safetensors`` or the stem ``NAME``), a MACE
        ``.model`` file (read without executing pickled code), or an already loaded
        :class:`~ase_equi.io.model_file.LoadedModel`.
    device:
        Torch device, ``"cpu"`` or ``"cuda"``.
    dtype:
        ``"float64"`` (default: relaxations, phonons, finite differences) or ``"float32"``
        (molecular dynamics, faster).
    skin:
        Verlet skin (Å) of the neighbour list: it is rebuilt only when an atom has moved more
        than ``skin / 2`` since the last build, or the cell, periodicity or atoms changed;
        the graph, and so every result, is identical to a fresh build. ``0`` rebuilds at
        every new geometry.
    retain_memory:
        On CPU, keep freed tensor memory in the process heap for the next step instead of
        handing it back to the OS (:func:`ase_equi.allocator.retain_freed_memory`, a setting
        of the whole process): 2.5× faster MD steps at 864 atoms on 2 cores, for a higher
        peak RSS (4.2 instead of 3.2 GB).
    resident_graph:
        Keep the graph on the device between Verlet-list rebuilds, with the edges within
        ``r_max + skin`` unfiltered, so that a step uploads only positions and reads nothing
        back before its results (:class:`ase_equi.resident_graph.ResidentGraph`). Default:
        on for GPUs, off on CPU (where the extra edges of the skin cost more than the
        per-step filtering). Same results up to the order of floating-point sums.
    chunk_mib:
        Memory threshold (MiB) on the largest intermediates of a model call: a structure whose
        per-receiver message and contraction products would be larger is evaluated in chunks
        of atoms (a quarter of this size each) that are recomputed in the backward pass
        (medium MACE-MP, float32, fcc Cu: 35 % more time at 2,048 atoms with
        ``chunk_mib=128``; peak RSS grows by 0.6 MB per atom instead of 3.4). The default,
        2048, leaves MD-sized systems unchunked (there: up to about 2,400 atoms); ``None``
        never chunks.

    Notes
    -----
    Results: ``energy`` and ``free_energy`` (eV; equal, since the model has no electronic
    temperature), ``energies`` (eV per atom, summing to ``energy``), ``forces`` (eV/Å, shape
    ``(n_atoms, 3)``), ``stress`` (eV/Å³, ASE Voigt order xx yy zz yz xz xy, positive =
    tensile). Stress exists only for a cell of rank 3 (bulk, or a slab/wire in a finite box:
    then it is the exact strain derivative of the energy); otherwise it raises
    ``PropertyNotImplementedError``. Forces and stress are computed when first asked; once
    asked, they are computed in every later pass of the same calculator, so MD, a relaxation
    or an NPT run costs one model evaluation per geometry, and energy-only use (Monte Carlo)
    never pays for a backward pass.

    Examples
    --------
    >>> from ase.build import bulk
    >>> atoms = bulk("Cu", "fcc", a=3.6)
    >>> atoms.calc = EquivariantCalculator(tiny_model_path)  # doctest: +SKIP
    >>> atoms.get_potential_energy()  # doctest: +SKIP
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    default_parameters: dict[str, Any] = {"device": "cpu", "dtype": "float64"}

    def __init__(
        self,
        model: str | os.PathLike | LoadedModel,
        *,
        device: str = "cpu",
        dtype: str = "float64",
        skin: float = 1.0,
        retain_memory: bool = True,
        resident_graph: bool | None = None,
        chunk_mib: float | None = 2048.0,
        **kwargs: Any,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
        if isinstance(model, LoadedModel):
            loaded = model
            loaded.model.to(device=device, dtype=DTYPES[dtype])
            model_name = loaded.source or loaded.name
        else:
            loaded = _resolve(model, device=device, dtype=DTYPES[dtype])
            model_name = os.fspath(model)
        super().__init__(model=model_name, device=device, dtype=dtype, **kwargs)
        self.loaded = loaded
        self.model = loaded.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device)
        if retain_memory and self.device.type == "cpu":
            retain_freed_memory()
        self.torch_dtype = DTYPES[dtype]
        self._stress_wanted = False
        self._forces_wanted = False
        self.model_calls = 0
        self.neighbours = VerletNeighbourList(loaded.config.r_max, skin)
        self.max_chunk_bytes = None if chunk_mib is None else int(chunk_mib * 2**20)
        if resident_graph is None:
            resident_graph = self.device.type != "cpu" and skin > 0
        self.resident = (
            ResidentGraph(
                loaded.config.elements,
                loaded.config.r_max,
                skin,
                dtype=self.torch_dtype,
                device=self.device,
                model_name=f"model '{loaded.name}'",
            )
            if resident_graph
            else None
        )

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        properties = properties or ["energy"]
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        rank3 = bool(atoms.cell.rank == 3)
        if "stress" in properties:
            if not rank3:
                raise PropertyNotImplementedError(
                    f"stress needs a cell of rank 3; this cell has rank {atoms.cell.rank} "
                    "(pbc " + str(atoms.pbc.tolist()) + "): give the slab, wire or molecule a box"
                )
            self._stress_wanted = True
        want_stress = self._stress_wanted and rank3
        # forces (one backward pass) from the first time they are asked on: an energy-only
        # user (Monte Carlo, screening) never pays for them, and in MD or a relaxation
        # energy and forces of a geometry cost one model call
        if "forces" in properties:
            self._forces_wanted = True
        want_forces = self._forces_wanted or want_stress

        if want_stress and not abs(atoms.cell.volume) > 0:
            raise ValueError("stress needs a cell of rank 3; this cell has zero volume")
        extra: dict[str, Any] = {}
        if self.resident is not None:
            graph, layout, groups = self.resident.update(atoms)
            extra = {"layout": layout, "groups": groups, "check_volume": False}  # checked above
        else:
            graph = atoms_to_graph(
                atoms,
                self.loaded.config.elements,
                self.loaded.config.r_max,
                dtype=self.torch_dtype,
                device=self.device,
                model_name=f"model '{self.loaded.name}'",
                neighbours=self._neighbour_list(atoms),
            )
        out = energy_forces_stress(
            self.model,
            graph,
            forces=want_forces,
            stress=want_stress,
            max_chunk_bytes=self.max_chunk_bytes,
            **extra,
        )
        self.model_calls += 1
        energies = out["node_energies"].detach().cpu().double().numpy()
        energy = float(energies.sum())  # accumulated in float64, whatever the model's dtype
        self.results = {"energy": energy, "free_energy": energy, "energies": energies}
        if want_forces:
            self.results["forces"] = out["forces"].detach().cpu().double().numpy().reshape(-1, 3)
        if want_stress:
            sigma = out["stress"][0].detach().cpu().double().numpy()
            self.results["stress"] = full_3x3_to_voigt_6_stress(sigma)
        for key in ("energies", "forces"):
            if key in self.results and not np.isfinite(self.results[key]).all():
                raise FloatingPointError(f"model produced non-finite {key} for this structure")

    def _neighbour_list(self, atoms: Atoms):
        # NaN/inf positions: no list, so that atoms_to_graph raises its error naming the atom
        if not np.isfinite(atoms.positions).all():
            return None
        return self.neighbours.update(atoms)


def _resolve(model: str | os.PathLike, *, device: str, dtype: torch.dtype) -> LoadedModel:
    """Load a model: a zoo name, a MACE ``.model`` file, or one of our model files."""
    model = resolve_model(model)
    if os.fspath(model).endswith(".model"):
        from .io.mace_import import load_mace_model

        return load_mace_model(model, dtype=dtype, device=device)
    return load_model(model, dtype=dtype, device=device)
