"""A model as an i-PI client: energies, forces and virials of i-PI's beads over its socket.

i-PI (path-integral MD, replica exchange, committees; https://ipi-code.org) keeps the
nuclei and asks *clients* for the potential of each geometry it needs (each bead of each
replica). :func:`serve` connects to a running i-PI server and answers until i-PI says
``EXIT``; ``ase-equi ipi`` is its command line. Several clients, on one or many machines,
may serve the same server: i-PI hands each free client the next geometry.

- **One structure per request** (i-PI's default): the geometry goes through an
  :class:`~ase_equi.calculator.EquivariantCalculator`, whose Verlet list (``skin``) and, on a
  GPU, resident graph carry over from one request to the next.
- **Batched requests** (i-PI >= 3.3, ``<ffsocket><batch_size>N</batch_size>``): the N
  structures of a request are evaluated in ONE model call on their joined graph
  (:func:`ase_equi.batched.batched_results`); each position in the batch keeps its own
  Verlet list. i-PI pads a short batch by repeating its last structure: a repeat of the
  structure before it is answered without evaluating it again.

Species (and periodicity) come from a template structure, because i-PI sends only cells and
positions: the template's atoms must be i-PI's atoms, in i-PI's order. Units: i-PI's atomic
units on the wire (bohr, hartree) are converted with ASE's constants (:mod:`ase.units`); the
virial sent is ``−σ V`` (hartree), zero for a cell without volume (a warning says so once).
The same evaluation serves ``i-pi-py_driver -m custom`` through :mod:`.ipi_driver`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.stress import voigt_6_to_full_3x3_stress

from ..batched import batched_results
from ..calculator import EquivariantCalculator
from ..errors import AseEquiError
from ..graph import HostGraph
from ..io.model_file import LoadedModel
from .ipi_protocol import IpiAddress, IpiConnection, batch_size_of, header

__all__ = ["BeadEvaluator", "ServeReport", "answer", "serve"]

log = logging.getLogger(__name__)

BOHR = units.Bohr  # Å per bohr
HARTREE = units.Hartree  # eV per hartree
Reply = tuple[float, np.ndarray, np.ndarray]
"""One structure's answer in atomic units: potential (hartree), forces ``[n, 3]``
(hartree/bohr), virial ``[3, 3]`` (hartree, i-PI's orientation)."""


class BeadEvaluator:
    """Potentials, forces and virials of i-PI geometries, in atomic units.

    Parameters
    ----------
    model:
        A zoo name, a model file or a loaded model (as :class:`EquivariantCalculator`).
    template:
        The species, their order and the periodicity (``pbc``) of i-PI's atoms; its positions
        and cell are replaced by i-PI's at each request.
    dtype, device, head, skin, resident_graph:
        As :class:`EquivariantCalculator`.

    Examples
    --------
    One water molecule, given as i-PI gives it (bohr, ``h`` with the cell vectors as columns):

    >>> from ase.build import molecule
    >>> water = molecule("H2O")
    >>> beads = BeadEvaluator("molecules-pbe", water)
    >>> h, q = 20.0 / BOHR * np.eye(3), water.positions / BOHR
    >>> potential, forces, virial = beads.one(h, q)
    >>> water.cell, water.calc = 20.0 * np.eye(3), EquivariantCalculator("molecules-pbe")
    >>> bool(abs(potential * HARTREE - water.get_potential_energy()) < 1e-9)
    True
    >>> [reply[0] == potential for reply in beads.many([h, h], [q, q])]
    [True, True]
    """

    def __init__(
        self,
        model: str | os.PathLike | LoadedModel,
        template: Atoms,
        *,
        dtype: str = "float64",
        device: str = "cpu",
        head: str | None = None,
        skin: float = 1.0,
        resident_graph: bool | None = None,
    ) -> None:
        self.calc = EquivariantCalculator(
            model, dtype=dtype, device=device, head=head, skin=skin, resident_graph=resident_graph
        )
        self.template = Atoms(template.numbers, pbc=template.pbc)
        self.atoms = self.template.copy()
        self.atoms.calc = self.calc
        self._slots: list[tuple[Atoms, HostGraph]] = []  # one per position in a batch
        self.model_calls = 0
        self._warned_virial = False

    @property
    def num_atoms(self) -> int:
        return len(self.template)

    def _place(self, atoms: Atoms, h: np.ndarray, q: np.ndarray) -> bool:
        """Put i-PI's cell and positions into ``atoms``; whether the cell has a volume."""
        q = np.asarray(q, dtype=np.float64).reshape(-1, 3)
        if len(q) != self.num_atoms:
            raise AseEquiError(
                f"i-PI sent {len(q)} atoms, the template has {self.num_atoms}: give the "
                "structure i-PI was started with"
            )
        atoms.set_cell(np.asarray(h, dtype=np.float64).reshape(3, 3).T * BOHR)
        atoms.set_positions(q * BOHR)
        return bool(atoms.cell.rank == 3)

    def _reply(self, result: dict[str, Any], volume: float) -> Reply:
        forces = result["forces"] * (BOHR / HARTREE)
        if "stress" in result:
            virial = -voigt_6_to_full_3x3_stress(result["stress"]) * volume / HARTREE
        else:
            virial = np.zeros((3, 3))
            if not self._warned_virial:
                log.warning("i-PI sent a cell without volume: the virial sent is zero")
                self._warned_virial = True
        return result["energy"] / HARTREE, forces, np.ascontiguousarray(virial.T)

    def one(self, h: np.ndarray, q: np.ndarray) -> Reply:
        """One structure (``h [3, 3]`` bohr, columns = cell vectors; ``q [n, 3]`` bohr)
        through the calculator."""
        rank3 = self._place(self.atoms, h, q)
        properties = ["energy", "forces"] + (["stress"] if rank3 else [])
        self.calc.calculate(self.atoms, properties, ["positions", "cell"])
        self.model_calls += 1
        volume = self.atoms.get_volume() if rank3 else 0.0
        return self._reply(self.calc.results, volume)

    def many(self, cells: list[np.ndarray], positions: list[np.ndarray]) -> list[Reply]:
        """Several structures in one model call (a repeat of the structure before it, i-PI's
        padding, is not evaluated again). A model that is not one :class:`LoadedModel` (a
        committee) is evaluated one structure at a time."""
        loaded = self.calc.loaded
        if not isinstance(loaded, LoadedModel):
            return [self.one(h, q) for h, q in zip(cells, positions, strict=True)]
        while len(self._slots) < len(cells):
            source = HostGraph.like(self.calc.graph_source)
            self._slots.append((self.template.copy(), source))
        unique: list[int] = []  # index of the evaluated structure each one takes
        graphs, volumes, any_rank3 = [], [], False
        for k, (h, q) in enumerate(zip(cells, positions, strict=True)):
            if k and np.array_equal(h, cells[k - 1]) and np.array_equal(q, positions[k - 1]):
                unique.append(unique[-1])
                continue
            atoms, source = self._slots[k]
            rank3 = self._place(atoms, h, q)
            any_rank3 |= rank3
            graphs.append(source.update(atoms))
            volumes.append(atoms.get_volume() if rank3 else 0.0)
            unique.append(len(graphs) - 1)
        results = batched_results(graphs, loaded, forces=True, stress=any_rank3)
        self.model_calls += 1
        replies = [self._reply(r, v) for r, v in zip(results, volumes, strict=True)]
        return [replies[u] for u in unique]


@dataclass
class ServeReport:
    """What a client did until i-PI said ``EXIT``: requests answered, structures evaluated,
    model calls, and seconds spent evaluating (``evaluating_s``), from the first request to
    ``EXIT`` (``serving_s``) and in all, connecting included (``total_s``)."""

    requests: int = 0
    structures: int = 0
    model_calls: int = 0
    evaluating_s: float = 0.0
    serving_s: float = 0.0
    total_s: float = 0.0
    batch_size: int = 1
    bead_indices: list[int] = field(default_factory=list)


def serve(
    beads: BeadEvaluator,
    address: IpiAddress,
    *,
    connect_wait: float = 60.0,
    timeout: float | None = None,
) -> ServeReport:
    """Answer an i-PI server at ``address`` until it says ``EXIT``.

    Parameters
    ----------
    beads:
        The model and template (:class:`BeadEvaluator`).
    address:
        :class:`~ase_equi.engines.ipi_protocol.IpiAddress` (TCP ``host:port`` or UNIX name).
    connect_wait:
        Seconds to keep retrying the connection (the server may not be up yet).
    timeout:
        Seconds to wait for any one message from the server (``None``: forever).

    Raises
    ------
    ConnectionError
        No server at the address, or the server closed the connection before ``EXIT``.
    AseEquiError
        A message this client does not know, or a geometry that does not fit the template.
    """
    start = time.perf_counter()
    link = IpiConnection(address.connect(connect_wait), timeout)
    try:
        report = answer(link, beads)
    finally:
        link.close()
    report.total_s = time.perf_counter() - start
    return report


def answer(link: IpiConnection, beads: BeadEvaluator) -> ServeReport:
    """The protocol loop of :func:`serve` on a connected ``link``, until ``EXIT`` (the link is
    left open); raises as :func:`serve`."""
    start = time.perf_counter()
    report = ServeReport()
    pending: list[Reply] | None = None
    initialised, first, calls = False, start, beads.model_calls
    while True:
        message = link.read_header()
        if message == "STATUS":
            state = "NEEDINIT" if not initialised else "HAVEDATA" if pending else "READY"
            link.send(header(state))
        elif message == "INIT":
            report.bead_indices.append(link.read_int())
            report.batch_size = batch_size_of(link.read_text())
            initialised = True
        elif message == "POSDATA":
            t0 = time.perf_counter()
            first = first if report.requests else t0
            pending = _evaluate(link, beads, report.batch_size)
            report.evaluating_s += time.perf_counter() - t0
            report.requests += 1
            report.structures += len(pending)
        elif message == "GETFORCE":
            if pending is None:
                raise AseEquiError("i-PI asked GETFORCE before sending POSDATA")
            _send_forces(link, pending, batched=report.batch_size > 1)
            pending = None
        elif message == "EXIT":
            break
        else:
            raise AseEquiError(f"i-PI sent an unknown message {message!r}")
    report.model_calls = beads.model_calls - calls
    report.total_s = time.perf_counter() - start
    report.serving_s = time.perf_counter() - first if report.requests else 0.0
    return report


def _evaluate(link: IpiConnection, beads: BeadEvaluator, batch: int) -> list[Reply]:
    """Read one ``POSDATA`` body (single or batched) and evaluate it."""
    if batch == 1:
        h = link.read_floats(3, 3)
        link.read_floats(3, 3)  # h⁻¹, not needed
        n = link.read_count("the number of atoms", max(beads.num_atoms, 1))
        return [beads.one(h, link.read_floats(n, 3))]
    n = link.read_count("the number of atoms", max(beads.num_atoms, 1))
    cells = link.read_floats(batch, 2, 3, 3)
    positions = link.read_floats(batch, n, 3)
    return beads.many(list(cells[:, 0]), list(positions))


def _send_forces(link: IpiConnection, replies: list[Reply], *, batched: bool) -> None:
    """The ``GETFORCE`` answer of one request (no extras: empty strings)."""
    n = len(replies[0][1])
    if not batched:
        potential, forces, virial = replies[0]
        link.send(header("FORCEREADY"), float(potential), n, forces, virial, 0)
        return
    potentials = np.array([r[0] for r in replies])
    forces = np.stack([r[1] for r in replies])
    virials = np.stack([r[2] for r in replies])
    empty = np.zeros(len(replies), dtype="=i4").tobytes()  # an empty extras string each
    link.send(header("FORCEREADY"), potentials, n, forces, virials, empty)
