"""Many structures per model call: graphs joined into one disconnected batch.

The machinery shared by :func:`ase_equi.evaluate.evaluate` (predictions on a list of
structures) and :func:`ase_equi.relax.relax` (many relaxations advancing together):

- :func:`batched_results`: energies, forces and stress of a list of structures (or their
  graphs) in ONE call of the model on their disjoint union (``batch_graphs``), split back per
  structure as numpy float64 arrays, the same numbers as the calculator gives one at a time.
  ``relax`` calls it once per optimiser step with the unconverged structures.
- :func:`plan_batches` / :func:`iter_batches`: which structures share a batch, to a memory
  budget (:data:`DEFAULT_BUDGET_MIB`, the peak of one model call) estimated from the model's
  largest per-node intermediates and each structure's atoms and largest neighbour count.

Stress only for cells of rank 3, as the calculator; a batch may mix molecules, slabs and bulk.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO, cast

import numpy as np
import torch
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress

from .graph.build import atoms_to_graph, batch_graphs
from .graph.layout import DegreeBuckets, ElementGroups
from .graph.tensors import Graph
from .io.model_file import LoadedModel
from .model.gradients import energy_forces_stress
from .model.interaction import InteractionBlock
from .option_checks import is_finite_number

__all__ = [
    "DEFAULT_BUDGET_MIB",
    "PEAK_PER_INTERMEDIATE",
    "Progress",
    "batched_results",
    "check_budget_mib",
    "default_budget_mib",
    "graphs_of",
    "iter_batches",
    "plan_batches",
    "resolved_budget_mib",
    "structure_bytes",
    "with_degree_buckets",
]

DEFAULT_BUDGET_MIB = 256.0
"""Memory budget of one batch for ``batch_size="auto"`` on a CPU (MiB): the estimated peak
memory of its model call, forward and backward, :data:`PEAK_PER_INTERMEDIATE` ×
:func:`structure_bytes`. On a GPU see :func:`default_budget_mib`."""

GPU_BUDGET_SHARE = 0.5
"""Share of a GPU's free memory that ``batch_size="auto"`` budgets for one batch. The estimate
over-counts a GPU's peak: 0.97 MiB per atom estimated against 0.56 measured (``metals``,
float64, 64-atom Cu cells, NVIDIA H200, ``benchmarks/results/2026-11-30-gpu.md``), so a batch
takes about 30 % of the free memory."""

PEAK_PER_INTERMEDIATE = 6
"""Peak memory of a model call with forces (forward and backward) per byte of its largest
forward intermediates (:func:`structure_bytes`): measured 4.9-5.5 on the ``metals`` model (the
process's peak RSS growth, ``benchmarks/results/2026-11-30-evaluate-batched.md``), rounded up."""


def default_budget_mib(device: torch.device) -> float:
    """Budget of one batch when none is given (MiB): :data:`DEFAULT_BUDGET_MIB` on a CPU; on a
    CUDA device :data:`GPU_BUDGET_SHARE` of its free memory now (free on the device plus what
    torch's allocator holds unused), and never less than the CPU's.

    >>> default_budget_mib(torch.device("cpu"))
    256.0
    """
    if device.type != "cuda":
        return DEFAULT_BUDGET_MIB
    free_bytes, _ = torch.cuda.mem_get_info(device)
    # memory torch's allocator holds but does not use is free for the next batch too
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return max(DEFAULT_BUDGET_MIB, GPU_BUDGET_SHARE * (free_bytes + cached) / 2**20)


def check_budget_mib(budget_mib: float | None) -> None:
    """``ValueError`` unless None or a finite number > 0 (MiB; NaN would lift the bound)."""
    if budget_mib is not None and not (is_finite_number(budget_mib) and budget_mib > 0):
        raise ValueError(f"budget_mib must be a finite number > 0 (MiB), not {budget_mib!r}")


def resolved_budget_mib(loaded: LoadedModel, budget_mib: float | None) -> float:
    """``budget_mib`` checked, or for None :func:`default_budget_mib` of ``loaded``'s device."""
    check_budget_mib(budget_mib)
    if budget_mib is None:
        return default_budget_mib(_model_dtype_device(loaded)[1])
    return float(budget_mib)


def _model_dtype_device(loaded: LoadedModel) -> tuple[torch.dtype, torch.device]:
    parameter = next(iter(loaded.model.parameters()), None)
    if parameter is None:
        return torch.float64, torch.device("cpu")
    return parameter.dtype, parameter.device


def graphs_of(
    structures: Sequence[Atoms], loaded: LoadedModel, *, first: int = 0
) -> list[Graph | None]:
    """The graph of each structure in the model's dtype and device (a structure without atoms
    has a graph without atoms: energy 0, no model call, stress 0 for a cell of rank 3).

    Raises ``ValueError`` naming the structure (its index, counted from ``first``) for an
    element the model does not know, NaN positions, a flat periodic cell or coincident atoms.
    """
    dtype, device = _model_dtype_device(loaded)
    graphs: list[Graph | None] = []
    for k, atoms in enumerate(structures):
        try:
            graphs.append(
                atoms_to_graph(
                    atoms,
                    loaded.config.elements,
                    loaded.config.r_max,
                    dtype=dtype,
                    device=device,
                    model_name=f"model '{loaded.name}'",
                )
            )
        except ValueError as error:
            raise type(error)(f"structure {first + k}: {error}") from error
    return graphs


def _empty_result(forces: bool, stress: bool, graph: Graph | None) -> dict[str, Any]:
    """The results of a structure without atoms (``graph`` None: no cell either)."""
    rank3 = graph is not None and _has_volume(graph)
    result: dict[str, Any] = {"energy": 0.0, "free_energy": 0.0, "energies": np.zeros(0)}
    if forces:
        result["forces"] = np.zeros((0, 3))
    if stress and rank3:
        result["stress"] = np.zeros(6)
    return result


def batched_results(
    structures: Sequence[Atoms] | Sequence[Graph | None],
    loaded: LoadedModel,
    *,
    forces: bool = True,
    stress: bool = False,
    degree_buckets: bool = True,
) -> list[dict[str, Any]]:
    """Predictions for every structure from one model call on their joined graph.

    Parameters
    ----------
    structures:
        ``Atoms`` (graphs are built here, in the model's dtype and device), or graphs already
        built for ``loaded`` (one structure each, e.g. from :func:`graphs_of`). An empty list
        gives an empty list and no model call.
    loaded:
        The model (:func:`ase_equi.loading.load_model`); used as it is (dtype, device, head).
    forces, stress:
        What to differentiate besides the energy. Stress is returned only for structures whose
        cell has rank 3 (nonzero volume); other structures simply have no ``"stress"`` key.
    degree_buckets:
        Pad the joined graph's receivers bucket by bucket of in-degree
        (:func:`with_degree_buckets`, where the model's blocks take it); False: every receiver
        padded to the batch's largest in-degree (the same numbers, more padding).

    Returns
    -------
    list of dict, one per structure, in order, numpy float64:
    ``energy`` and ``free_energy`` (float, eV; the sum of the per-atom energies in float64),
    ``energies [n]`` (eV), ``forces [n, 3]`` (eV/Å) when asked, ``stress [6]`` (eV/Å³, Voigt
    order xx yy zz yz xz xy, positive = tensile) when asked and defined.

    Raises
    ------
    ValueError
        A structure the graph builder refuses (named by its index).
    FloatingPointError
        The model gave non-finite energies or forces (the structure is named).
    """
    if len(structures) == 0:
        return []
    if all(s is None or isinstance(s, Graph) for s in structures):
        graphs = cast("list[Graph | None]", list(structures))
    else:
        graphs = graphs_of(cast("Sequence[Atoms]", structures), loaded)
    present = [g for g in graphs if g is not None and g.num_atoms > 0]
    out: dict[str, torch.Tensor] = {}
    if present:
        joined = batch_graphs(present) if len(present) > 1 else present[0]
        if degree_buckets and len(present) > 1 and _takes_buckets(loaded.model):
            joined = with_degree_buckets(joined)
        want_stress = stress and any(_has_volume(g) for g in present)
        out = energy_forces_stress(
            loaded.model, joined, forces=forces, stress=want_stress, flat_cells="nan"
        )
    return _split(graphs, out, forces=forces, stress=stress)


def _takes_buckets(model: torch.nn.Module) -> bool:
    """Whether every interaction block of ``model`` evaluates a :class:`DegreeBuckets` layout
    (the channel-wise blocks; not the non-linear ones, nor a committee's stacked members)."""
    blocks = getattr(model, "interactions", None)
    return blocks is not None and all(isinstance(b, InteractionBlock) for b in blocks)


def with_degree_buckets(graph: Graph) -> Graph:
    """``graph`` with its receivers padded bucket by bucket of in-degree
    (:class:`~ase_equi.graph.layout.DegreeBuckets`) and its element groups: a batch of
    clusters, slabs and bulk cells otherwise pads every atom to the largest in-degree of the
    whole batch. The same numbers (the same edges in each receiver's sum), less padding."""
    layout = DegreeBuckets(graph.senders, graph.receivers, graph.num_atoms)
    return dataclasses.replace(graph, layout=layout, groups=ElementGroups(graph.element_index))


def _split(
    graphs: Sequence[Graph | None], out: dict[str, torch.Tensor], *, forces: bool, stress: bool
) -> list[dict[str, Any]]:
    """The batch's outputs → one dict per structure (numpy float64, ASE shapes)."""
    energies = out["node_energies"].detach().cpu().double().numpy() if out else np.zeros(0)
    all_forces = None
    if forces and out:
        all_forces = out["forces"].detach().cpu().double().numpy().reshape(-1, 3)
    sigma = out["stress"].detach().cpu().double().numpy() if "stress" in out else None
    results: list[dict[str, Any]] = []
    start, g = 0, 0
    for k, graph in enumerate(graphs):
        if graph is None or graph.num_atoms == 0:
            results.append(_empty_result(forces, stress, graph))
            continue
        stop = start + graph.num_atoms
        e = energies[start:stop].copy()
        energy = float(e.sum())
        result: dict[str, Any] = {"energy": energy, "free_energy": energy, "energies": e}
        if all_forces is not None:
            result["forces"] = all_forces[start:stop].copy()
        rank3 = _has_volume(graph)
        if sigma is not None and rank3:
            result["stress"] = full_3x3_to_voigt_6_stress(sigma[g])
        for key in ("energies", "forces"):
            if key in result and not np.isfinite(result[key]).all():
                raise FloatingPointError(f"model produced non-finite {key} for structure {k}")
        results.append(result)
        start, g = stop, g + 1
    return results


def structure_bytes(loaded: LoadedModel, num_atoms: int, max_neighbours: int) -> int:
    """Estimated largest forward-pass intermediates (bytes) of ``num_atoms`` nodes with at most
    ``max_neighbours`` neighbours each (the per-receiver padded layout of the batch): the
    model's own estimate, as used for chunking
    (:meth:`~ase_equi.model.mace.MaceModel.chunk_nodes`)."""
    model = loaded.model
    dtype, _ = _model_dtype_device(loaded)
    itemsize = torch.empty((), dtype=dtype).element_size()
    interactions: list[Any] = list(model.interactions)
    products: list[Any] = list(model.products)
    per_node = max(
        max(i.conv_tp.bytes_per_receiver(max_neighbours, itemsize) for i in interactions),
        max(p.bytes_per_node(itemsize) for p in products),
    )
    return int(num_atoms * per_node)


def _check_batch_size(batch_size: int | str) -> None:
    if isinstance(batch_size, bool) or not (
        (isinstance(batch_size, int) and batch_size >= 1) or batch_size == "auto"
    ):
        raise ValueError(f"batch_size must be a positive int or 'auto', not {batch_size!r}")


class _Filling:
    """A batch being filled: its atoms and largest neighbour count, and whether one more
    structure still fits (``batch_size`` structures, or the memory budget for ``"auto"``)."""

    def __init__(self, loaded: LoadedModel, batch_size: int | str, budget_mib: float) -> None:
        self.loaded, self.batch_size, self.budget = loaded, batch_size, budget_mib * 2**20
        self.count = self.atoms = self.neighbours = 0

    def fits(self, graph: Graph | None) -> bool:
        """Whether ``graph`` may join (an empty batch takes anything); adds it if so."""
        size = 0 if graph is None else graph.num_atoms
        most = 0 if graph is None else _max_in_degree(graph)
        atoms, neighbours = self.atoms + size, max(self.neighbours, most)
        if self.count:
            if isinstance(self.batch_size, int):
                if self.count >= self.batch_size:
                    return False
            elif PEAK_PER_INTERMEDIATE * structure_bytes(self.loaded, atoms, neighbours) > (
                self.budget
            ):
                return False
        self.count, self.atoms, self.neighbours = self.count + 1, atoms, neighbours
        return True


def plan_batches(
    graphs: Sequence[Graph | None],
    loaded: LoadedModel,
    batch_size: int | str = "auto",
    *,
    budget_mib: float | None = None,
) -> list[list[int]]:
    """Indices of the structures of each batch, in order.

    ``batch_size``: an int (that many structures per batch), or ``"auto"``: consecutive
    structures join a batch while its estimated peak memory, :data:`PEAK_PER_INTERMEDIATE` ×
    :func:`structure_bytes` of the batch (all its atoms, padded to its largest neighbour
    count), stays within ``budget_mib`` (None: :func:`default_budget_mib` of the model's
    device); a structure over the budget on its own gets a batch of its own.
    """
    _check_batch_size(batch_size)
    budget_mib = resolved_budget_mib(loaded, budget_mib)
    batches: list[list[int]] = []
    filling: _Filling | None = None
    for k, graph in enumerate(graphs):
        if filling is None or not filling.fits(graph):
            filling = _Filling(loaded, batch_size, budget_mib)
            filling.fits(graph)
            batches.append([])
        batches[-1].append(k)
    return batches


def iter_batches(
    structures: Iterable[Atoms],
    loaded: LoadedModel,
    batch_size: int | str = "auto",
    *,
    budget_mib: float | None = None,
) -> Iterator[tuple[list[int], list[Graph | None]]]:
    """``(indices, graphs)`` of each batch, as :func:`plan_batches` groups them, building the
    graphs as it goes (only one batch's graphs are held at a time)."""
    _check_batch_size(batch_size)
    budget_mib = resolved_budget_mib(loaded, budget_mib)
    filling = _Filling(loaded, batch_size, budget_mib)
    indices: list[int] = []
    graphs: list[Graph | None] = []
    for k, atoms in enumerate(structures):
        graph = graphs_of([atoms], loaded, first=k)[0]
        if not filling.fits(graph):
            yield indices, graphs
            filling, indices, graphs = _Filling(loaded, batch_size, budget_mib), [], []
            filling.fits(graph)
        indices.append(k)
        graphs.append(graph)
    if indices:
        yield indices, graphs


def _max_in_degree(graph: Graph) -> int:
    if graph.receivers.shape[0] == 0:
        return 0
    return int(torch.bincount(graph.receivers, minlength=graph.num_atoms).max())


def _has_volume(graph: Graph) -> bool:
    """Whether the (single-structure) graph's cell has rank 3 (host volume, else its cell)."""
    if graph.volumes is not None:
        return graph.volumes[0] > 0
    return bool(torch.linalg.det(graph.cell[0].double()).abs() > 0)


class Progress:
    """One live line on ``stream`` (headed ``label``): structures done, atoms per second, time left.

    On a terminal the line is redrawn in place; otherwise a line is written at most every
    ``every`` seconds, and once at the end.
    """

    def __init__(
        self, total: int, stream: TextIO | None, every: float = 5.0, label: str = "evaluate"
    ) -> None:
        self.total, self.stream, self.every, self.label = total, stream, every, label
        self.start = self.last = time.perf_counter()
        self.atoms = 0
        self.live = bool(stream is not None and getattr(stream, "isatty", lambda: False)())

    def step(self, done: int, n_atoms: int) -> None:
        if self.stream is None:
            return
        self.atoms += n_atoms
        now = time.perf_counter()
        final = done == self.total
        if not (self.live or final or now - self.last >= self.every):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        left = elapsed / done * (self.total - done)
        text = (
            f"{self.label}: {done}/{self.total} structures, {self.atoms / elapsed:.0f} atoms/s, "
            f"{elapsed:.0f} s elapsed, ~{left:.0f} s left"
        )
        end = "\n" if final or not self.live else ""
        self.stream.write(("\r" if self.live else "") + text + end)
        self.stream.flush()
