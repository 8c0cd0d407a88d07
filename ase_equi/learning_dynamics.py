"""What moves the atoms while :func:`ase_equi.learning.learn_on_the_fly` learns: any ASE dynamics
(molecular dynamics with or without a thermostat or barostat, or an optimizer for a relaxation),
made by the user's factory, advanced one step at a time, and restored after a kill.

A resumed run rebuilds the dynamics with the factory from the saved positions, momenta and cell,
sets its step counter (``nsteps``) to the saved step and calls its observers once, as ASE does
at the start of a run (so an observer that sets a temperature from ``nsteps`` sets that of the
resumed step, and a ramp goes on where it was), and restores the state of its random number
generator when it is a ``numpy.random.Generator`` or ``RandomState`` (ASE's Langevin, Andersen
and Bussi take one as ``rng=``): such a run continues exactly as an uninterrupted one. A
generator whose state is not saved (numpy's global one, ASE's default) is announced as a
warning. Other internal state (a Nosé–Hoover or barostat variable, an optimizer's memory) starts
anew. After every retraining an optimizer's memory is cleared (its Hessian estimate belongs to
the previous model)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.md.md import MolecularDynamics
from ase.md.verlet import VelocityVerlet
from ase.optimize.optimize import BaseDynamics, Optimizer

__all__ = ["DynamicsFactory", "advance", "make_dynamics", "rng_state", "simulated_time_fs"]

log = logging.getLogger(__name__)

#: the user's factory: the atoms (with the model as calculator) in, an ASE dynamics out
DynamicsFactory = Callable[[Atoms], BaseDynamics]


def make_dynamics(
    atoms: Atoms,
    dynamics: DynamicsFactory | None,
    timestep_fs: float | None,
    fmax: float | None,
    step: int,
    rng: dict[str, Any] | None,
) -> BaseDynamics:
    """The dynamics of a run at ``step``: ``dynamics(atoms)``, or velocity Verlet with
    ``timestep_fs`` (fs, default 1) when ``dynamics`` is None; ``rng`` a state saved by
    :func:`rng_state`.

    ``ValueError`` when ``timestep_fs`` comes with a factory (the factory sets its own step),
    ``fmax`` (eV/Å) with anything but an optimizer, or the factory returns no ASE dynamics of
    ``atoms``.
    """
    if dynamics is None:
        if fmax is not None:
            raise ValueError("fmax applies to a relaxation: give dynamics= an optimizer factory")
        dyn: BaseDynamics = VelocityVerlet(atoms, timestep=(timestep_fs or 1.0) * units.fs)
    else:
        if timestep_fs is not None:
            raise ValueError(
                "timestep_fs is the step of the default velocity Verlet; with dynamics= "
                "the factory sets its own time step"
            )
        dyn = dynamics(atoms)
        if not isinstance(dyn, MolecularDynamics | Optimizer):
            raise ValueError(
                f"dynamics= must return an ASE molecular dynamics or optimizer, got {type(dyn)!r}"
            )
        if fmax is not None and not isinstance(dyn, Optimizer):
            raise ValueError(f"fmax applies to an optimizer, not to {type(dyn).__name__}")
        moved = getattr(dyn.atoms, "atoms", dyn.atoms)  # a cell filter holds the atoms
        if moved is not atoms:
            raise ValueError("dynamics= must move the atoms it is given (or a filter of them)")
    dyn.nsteps = step
    if step:  # a resume: the observers see the step, as ASE's own run does at its start
        dyn.call_observers()
    generator = getattr(dyn, "rng", None)
    if generator is not None and rng_state(dyn) is None:
        log.warning(
            "%s draws from a generator whose state is not saved (numpy's global one?): a "
            "resumed run goes on with other random numbers; give it "
            "rng=np.random.default_rng(seed) for an exact resume",
            type(dyn).__name__,
        )
    if rng is not None and isinstance(generator, np.random.Generator):
        generator.bit_generator.state = rng["state"]
    elif rng is not None and isinstance(generator, np.random.RandomState):
        kind, key, pos, has_gauss, cached = rng["state"]
        generator.set_state((kind, np.array(key, dtype=np.uint32), pos, has_gauss, cached))
    return dyn


def rng_state(dyn: BaseDynamics) -> dict[str, Any] | None:
    """The JSON-able state of ``dyn.rng`` (a ``Generator`` or ``RandomState``), else None."""
    generator = getattr(dyn, "rng", None)
    if isinstance(generator, np.random.Generator):
        return {"kind": "Generator", "state": generator.bit_generator.state}
    if isinstance(generator, np.random.RandomState):
        state = generator.get_state(legacy=True)
        return {"kind": "RandomState", "state": [_plain(x) for x in state]}
    return None


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def advance(dyn: BaseDynamics, fmax: float | None) -> tuple[bool, bool]:
    """One step of ``dyn``: (whether it moved the atoms, whether an optimizer has converged
    there: largest atomic force at most ``fmax`` eV/Å, default 0.05 as in ASE). A converged
    optimizer makes no step."""
    before = dyn.nsteps
    if isinstance(dyn, Optimizer):
        converged = bool(dyn.run(fmax=0.05 if fmax is None else fmax, steps=1))
    else:
        assert isinstance(dyn, MolecularDynamics)  # make_dynamics lets nothing else through
        dyn.run(steps=1)
        converged = False
    return dyn.nsteps > before, converged


def simulated_time_fs(dyn: BaseDynamics, step: int) -> float:
    """fs after ``step`` steps of molecular dynamics; NaN for an optimizer (no time)."""
    if isinstance(dyn, MolecularDynamics):
        return step * float(dyn.dt) / units.fs
    return float("nan")
