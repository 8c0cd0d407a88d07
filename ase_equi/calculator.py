"""EquivariantCalculator: an ASE calculator for MACE-architecture equivariant potentials."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from . import uncertainty
from .allocator import retain_freed_memory
from .calculator_options import (
    DTYPES,
    OPTIONS,
    changes_of,
    charge_changed,
    check_options,
    head_of,
    refuse_unknown,
)
from .calculator_results import no_atoms_results, results_of
from .graph import GraphSource, HostGraph, ResidentGraph
from .io.model_file import LoadedModel
from .loading import LoadedCommittee, load_any, model_label, moved
from .model.gradients import energy_forces_stress
from .neighbours import check_positions
from .uncertainty import UNCERTAINTY_PROPERTIES, act_on_uncertainty, committee_pass, refusal
from .vibrations import model_hessian

log = logging.getLogger(__name__)


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
        of the whole process): faster steps for a higher peak RSS (measured in the README's
        performance section and ``benchmarks/results/``).
    resident_graph:
        Keep the graph on the device between Verlet-list rebuilds, with the edges within
        ``r_max + skin`` unfiltered, so that a step uploads only positions and reads nothing
        back before its results (:class:`ase_equi.graph.resident.ResidentGraph`). Default:
        on for GPUs, off on CPU (where the extra edges of the skin cost more than the
        per-step filtering). Same results up to the order of floating-point sums.
    chunk_mib:
        Memory threshold (MiB) on the largest intermediates of a model call: a structure whose
        per-receiver message and contraction products would be larger is evaluated in chunks
        of atoms (a quarter of this size each) that are recomputed in the backward pass: less
        memory for more time (see the README's performance section). The default, 2048,
        leaves MD-sized systems unchunked; ``None`` never chunks. It reaches the model as
        ``max_chunk_bytes`` (bytes) on each graph
        (:attr:`ase_equi.graph.tensors.Graph.max_chunk_bytes`).
    head:
        The output head of a model trained with several (a multi-head MACE file, or a model
        file that lists heads): its name, e.g. ``"pbe"``. ``None`` takes the model's default
        head (MACE's rule: its only head, or the one named ``"Default"``; a MACE file with
        several heads and none of them "Default", such as MACE-MH-1, needs ``head``);
        ``parameters`` then records the head used. An unknown head raises ``ValueError``
        listing the heads.
    uncertainty_threshold, on_uncertain:
        A committee, or a model with a prediction-rigidity section (:mod:`ase_equi.uncertainty`):
        when the largest atomic force uncertainty (eV/Å) passes ``uncertainty_threshold``,
        ``on_uncertain`` acts: ``"warn"`` (:class:`~ase_equi.uncertainty.UncertaintyWarning`),
        ``"raise"`` (:class:`~ase_equi.uncertainty.UncertainStructureError`) or a callable
        ``f(atoms, max_uncertainty, results)``; with a threshold every pass computes it.
    label, directory:
        ASE's own keywords (no files are written).

    Any other keyword raises ``TypeError`` naming it. Every option is in ``parameters`` (and
    ``todict()`` where not the default); ``set(...)`` of any of them rebuilds what depends on
    it (reloading the model for ``dtype``, ``device`` and ``head``) and clears the results, or
    raises; the model itself cannot be changed (make a new calculator).

    Raises
    ------
    TypeError
        An unknown keyword (the message lists the accepted ones).
    ValueError
        A bad option value (named), an unknown head (the heads are listed), a device that is
        not available (e.g. ``device="cuda"`` without CUDA: the message says ``device="cpu"``),
        or an unreadable model file (:class:`~ase_equi.errors.ModelFileError`).

    Notes
    -----
    Results: ``energy`` and ``free_energy`` (eV; equal, since the model has no electronic
    temperature), ``energies`` (eV per atom, summing to ``energy``), ``forces`` (eV/Å, shape
    ``(n_atoms, 3)``), ``stress`` (eV/Å³, ASE Voigt order xx yy zz yz xz xy, positive =
    tensile), ``hessian`` (∂²E/∂r∂r, eV/Å², shape ``(3 n_atoms, 3 n_atoms)``, symmetric, from
    automatic differentiation in float64 even for a float32 calculator; computed only when
    asked, e.g. ``calc.get_property("hessian", atoms)``; see :mod:`ase_equi.vibrations`).
    Stress exists only for a cell of rank 3 (bulk, or a slab/wire in a finite box: then it is
    the exact strain derivative of the energy); otherwise it raises
    ``PropertyNotImplementedError``. Forces and stress are computed when first asked; once
    asked, they are computed in every later pass of the same calculator (the set
    ``derivatives``), so MD, a relaxation or an NPT run costs one model evaluation per
    geometry, and energy-only use (Monte Carlo) never pays for a backward pass.

    The graph of each geometry comes from one source chosen when the options are set
    (``graph_source``): :class:`~ase_equi.graph.build.HostGraph` (a Verlet list on the host,
    filtered to the cutoff) or :class:`~ase_equi.graph.resident.ResidentGraph` (kept on the
    device); each owns the calculator's only Verlet list (``graph_source.neighbours``).

    Examples
    --------
    The zoo model ``metals`` on fcc copper: every atom is a centre of inversion, so the forces
    vanish and the atoms have equal energies; a supercell twice as large has twice the energy.

    >>> import numpy as np
    >>> from ase.build import bulk
    >>> atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    >>> atoms.calc = EquivariantCalculator("metals")
    >>> forces = atoms.get_forces()
    >>> forces.shape, bool(np.abs(forces).max() < 1e-10)
    ((4, 3), True)
    >>> energy = atoms.get_potential_energy()
    >>> bool(np.allclose(atoms.get_potential_energies(), energy / 4, rtol=0, atol=1e-10))
    True
    >>> double = atoms.repeat((2, 1, 1))
    >>> double.calc = atoms.calc
    >>> bool(abs(double.get_potential_energy() - 2 * energy) < 1e-8)
    True
    >>> atoms.calc.parameters["skin"], atoms.calc.parameters["dtype"]
    (1.0, 'float64')
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "hessian"]
    default_parameters: dict[str, Any] = {
        "device": "cpu",
        "dtype": "float64",
        "skin": 1.0,
        "retain_memory": True,
        "resident_graph": None,
        "chunk_mib": 2048.0,
        "head": None,
        "uncertainty_threshold": None,
        "on_uncertain": "warn",
    }

    def __init__(
        self,
        model: str | os.PathLike | LoadedModel | list[str | os.PathLike] | LoadedCommittee,
        *,
        device: str = "cpu",
        dtype: str = "float64",
        skin: float = 1.0,
        retain_memory: bool = True,
        resident_graph: bool | None = None,
        chunk_mib: float | None = 2048.0,
        head: str | None = None,
        uncertainty_threshold: float | None = None,
        on_uncertain: Any = "warn",
        label: str | None = None,
        directory: str | os.PathLike = ".",
        **kwargs: Any,
    ) -> None:
        accepted = ("model", *OPTIONS, "label", "directory")
        refuse_unknown(kwargs, "EquivariantCalculator()", accepted)
        self._ready = False
        self._retaining = False
        # LoadedModel or LoadedCommittee (evaluate() and relax() use a committee's mean model)
        self.loaded: Any  # set by _configure
        super().__init__(label=label, directory=directory)
        self._model_argument = model
        self.parameters.update(
            model=model_label(model),
            device=device,
            dtype=dtype,
            skin=skin,
            retain_memory=retain_memory,
            resident_graph=resident_graph,
            chunk_mib=chunk_mib,
            head=head,
            uncertainty_threshold=uncertainty_threshold,
            on_uncertain=on_uncertain,
        )
        # the uncertainties asked so far, computed in every later pass
        self.uncertainties: set[str] = set()
        # the derivatives asked so far ("forces", "stress"), computed in every later pass
        self.derivatives: set[str] = set()
        self.model_calls = 0
        self._configure(reload=True)
        self._ready = True

    def set(self, **kwargs: Any) -> dict[str, Any]:
        """Change options (see the class docstring); returns those that changed.

        Options that the model or the neighbour list depend on are applied at once (the model
        is reloaded from its file for ``dtype``, ``device`` and ``head``); any change clears
        the results. A bad value raises and leaves the calculator as it was.

        Raises
        ------
        TypeError
            An unknown keyword.
        ValueError
            A changed ``model`` (make a new calculator), a bad value, ``retain_memory=False``
            after the process heap setting was taken (it cannot be undone in this process).
        """
        if not getattr(self, "_ready", False):  # ASE's own __init__
            return super().set(**kwargs)
        refuse_unknown(kwargs, "EquivariantCalculator.set()", ("model", *OPTIONS))
        if "model" in kwargs and kwargs["model"] != self.parameters["model"]:
            raise ValueError(
                f"the model of a calculator cannot be changed (it is {self.parameters['model']!r}"
                f", asked {kwargs['model']!r}): make a new EquivariantCalculator for it"
            )
        before = dict(self.parameters)
        changed = super().set(**kwargs)
        if changed:
            try:
                self._configure(reload=bool({"device", "dtype", "head"} & set(changed)))
            except BaseException:
                self.parameters.clear()
                self.parameters.update(before)
                raise
            self.reset()
        return changed

    def _configure(self, *, reload: bool) -> None:
        """Check the options in ``parameters`` and build what depends on them.

        Nothing is changed on this object before every check has passed and the model (when
        ``reload``) has loaded.
        """
        p = self.parameters
        device = check_options(p)
        dtype = DTYPES[p["dtype"]]
        if p["retain_memory"] is False and self._retaining:
            raise ValueError(
                "retain_memory=False: freed memory is already kept in this process's heap "
                "(a setting of the whole process that cannot be undone); start a new process "
                "with EquivariantCalculator(..., retain_memory=False)"
            )
        loaded = self._load(device, dtype) if reload else self.loaded
        extra = uncertainty.uncertainty_properties(loaded)
        if p["uncertainty_threshold"] is not None and not extra:
            raise ValueError(refusal("uncertainty_threshold", loaded.name))
        chunk_mib = p["chunk_mib"]
        max_chunk_bytes = None if chunk_mib is None else int(chunk_mib * 2**20)
        resident_graph = p["resident_graph"]
        if resident_graph is None:
            resident_graph = device.type != "cpu" and p["skin"] > 0
        source_class = ResidentGraph if resident_graph else HostGraph
        graph_source: GraphSource = source_class(
            loaded.config.elements,
            loaded.config.r_max,
            p["skin"],
            dtype=dtype,
            device=device,
            model_name=f"model '{loaded.name}'",
            max_chunk_bytes=max_chunk_bytes,
        )
        # every check passed: apply
        self.loaded = loaded
        self._float64: LoadedModel | None = None  # float64 copy for the Hessian, made on demand
        self.model = loaded.model.eval()
        self.committee, self.uncertain = isinstance(loaded, LoadedCommittee), bool(extra)
        self.calibration = loaded.calibration if isinstance(loaded, LoadedCommittee) else 1.0
        self.implemented_properties = [*type(self).implemented_properties, *extra]
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.device, self.torch_dtype = device, dtype
        self.graph_source, self.max_chunk_bytes = graph_source, max_chunk_bytes
        head = head_of(loaded)
        if head is not None:
            p["head"] = head  # the head used, also when the model's default was taken
        if p["retain_memory"] and device.type == "cpu" and not self._retaining:
            retain_freed_memory()
            self._retaining = True

    def _load(self, device: torch.device, dtype: torch.dtype) -> LoadedModel | LoadedCommittee:
        """The model (or committee) in ``device`` and ``dtype`` with the asked head."""
        head = self.parameters["head"]
        return load_any(self._model_argument, device=device, dtype=dtype, head=head)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        properties = properties or ["energy"]
        unknown = [name for name in properties if name not in self.implemented_properties]
        if set(unknown) & set(UNCERTAINTY_PROPERTIES):
            raise PropertyNotImplementedError(refusal(unknown[0], self.loaded.name))
        if unknown:
            raise PropertyNotImplementedError(
                f"{', '.join(map(repr, unknown))} not implemented: this calculator gives "
                + ", ".join(self.implemented_properties)
            )
        super().calculate(atoms, properties, system_changes)
        try:
            self._evaluate(properties)
        except BaseException:
            # a refusal (an uncertain structure with on_uncertain="raise", non-finite output,
            # a stress without a box, ...) leaves nothing behind: asked again about the same
            # atoms, the calculator computes (and refuses) anew instead of serving the results
            self.reset()
            raise

    def _evaluate(self, properties: list[str]) -> None:
        """One model call (or none, for no atoms) on ``self.atoms`` for ``properties``."""
        atoms = self.atoms
        assert atoms is not None  # Calculator.calculate has just set it
        rank3 = bool(atoms.cell.rank == 3)
        if {"stress", "stress_uncertainty"} & set(properties) and not rank3:
            raise PropertyNotImplementedError(
                f"stress needs a cell of rank 3; this cell has rank {atoms.cell.rank} "
                "(pbc " + str(atoms.pbc.tolist()) + "): give the slab, wire or molecule a box"
            )
        # forces (one backward pass) from the first time they are asked on: an energy-only
        # user (Monte Carlo, screening) never pays for them, and in MD or a relaxation
        # energy and forces of a geometry cost one model call
        self.derivatives |= {"forces", "stress", "stress_uncertainty"} & set(properties)
        # uncertainties from the first time one is asked on, or always with a threshold
        self.uncertainties |= set(UNCERTAINTY_PROPERTIES) & set(properties)
        threshold = self.parameters["uncertainty_threshold"]
        spread = self.uncertain and bool(self.uncertainties or threshold is not None)
        want_stress = bool({"stress", "stress_uncertainty"} & self.derivatives) and rank3
        # every member's derivatives for their spread (else only the mean's)
        each = bool({"forces_uncertainty", "stress_uncertainty"} & self.uncertainties)
        each = spread and (each or threshold is not None)
        want_forces = "forces" in self.derivatives or want_stress or each
        check_positions(atoms.positions)
        if len(atoms) == 0:  # no atoms, no energy: nothing to evaluate
            self.results = no_atoms_results(
                forces=want_forces,
                stress=want_stress,
                hessian="hessian" in properties,
                spread=spread,
            )
            return
        if "hessian" in properties and self.committee:
            raise PropertyNotImplementedError("hessian of a committee is not implemented")
        graph = self.graph_source.update(atoms)
        factor, forces, stress, extra = self.calibration, want_forces, want_stress, dict[str, Any]()
        if self.committee:  # the members' mean, and their spread once asked, in one pass
            out, extra = committee_pass(self.model, graph, forces, stress, factor, each)
            extra = extra if spread else {}
        elif spread:  # one model's last-layer prediction rigidity (hooks on its readouts)
            out, extra = uncertainty.rigidity_pass(self.loaded, graph, forces, stress)
        else:
            out = energy_forces_stress(self.model, graph, forces=want_forces, stress=want_stress)
        self.model_calls += 1
        self.results = results_of(out, forces=want_forces, stress=want_stress)
        self.results.update(extra)
        act_on_uncertainty(atoms, self.results, threshold, self.parameters["on_uncertain"])
        if "hessian" in properties:  # only when asked: never part of an energy/forces pass
            self.results["hessian"] = model_hessian(atoms, self._hessian_model())

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's check, exact comparisons first (:func:`changes_of`), and ``info["charge"]``."""
        changes = changes_of(self.atoms, atoms, tol, self.ignored_changes)
        return [*changes, "charge"] if charge_changed(self.atoms, atoms) else changes

    def get_property(self, name: str, atoms: Atoms | None = None, allow_calculation: bool = True):
        """ASE's :meth:`~ase.calculators.calculator.Calculator.get_property`; an uncertainty
        the model does not give (one model without a prediction-rigidity section, or
        ``stress_uncertainty`` without a committee) raises ``PropertyNotImplementedError``
        saying what it needs."""
        if name in UNCERTAINTY_PROPERTIES and name not in self.implemented_properties:
            raise PropertyNotImplementedError(refusal(name, self.loaded.name))
        return super().get_property(name, atoms, allow_calculation)

    def _hessian_model(self) -> LoadedModel:
        """The model in float64 for the Hessian: this calculator's, or a float64 copy of it."""
        assert isinstance(self.loaded, LoadedModel)  # a committee's Hessian is refused
        if self.torch_dtype == torch.float64:
            return self.loaded
        if self._float64 is None and isinstance(self._model_argument, LoadedModel):
            # a shared loaded model: a float64 copy (never the user's own weights)
            self._float64 = moved(self.loaded, self.device, torch.float64)
        elif self._float64 is None:  # a file or zoo name: its float64 weights, unrounded
            loaded = self._load(self.device, torch.float64)
            assert isinstance(loaded, LoadedModel)
            self._float64 = loaded
        return self._float64
