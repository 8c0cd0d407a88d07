"""D3 dispersion on top of a model: Grimme's DFT-D3 from the ``dftd3`` package (simple-dftd3).

A model trained on a density functional without dispersion (PBE, B3LYP, r²SCAN, ...) misses
the long-range London attraction; D3 adds it as a pair (and three-body) term whose damping
parameters were fitted *per functional*. :func:`d3_corrected` returns an ASE
:class:`~ase.calculators.mixing.SumCalculator` of the model and ``dftd3.ase.DFTD3``:

    E = E_model + E_D3,   F = F_model + F_D3,   σ = σ_model + σ_D3

(eV, eV/Å, eV/Å³; stress only for periodic cells, as D3 defines it; no per-atom energies).

Whether D3 makes sense is decided from the model card's ``level_of_theory``, not from the
model's name:

- the level names a functional that D3 has parameters for (``"DFT PBE/def2-SVP"`` → PBE):
  that functional is used; a ``functional=`` that disagrees is refused;
- the level already contains a dispersion term (``-D3``, ``D4``, ``VV10``, ``MBD``, ``TS``,
  or a GFN-xTB method, whose GFN1/GFN2 Hamiltonians include D3/D4): refused, it would be
  counted twice;
- the level names no density functional (EMT, a force field, CCSD(T)): refused, D3 corrects a
  functional;
- the card records no level of theory (e.g. an imported file): ``functional=`` must say it.

Example (``dftd3`` installed)::

    from ase_equi import EquivariantCalculator
    from ase_equi.engines.dispersion import d3_corrected

    atoms.calc = d3_corrected(EquivariantCalculator("molecules-pbe"))  # PBE-D3(BJ)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ase.calculators.calculator import BaseCalculator
from ase.calculators.mixing import SumCalculator

from ..errors import AseEquiError

__all__ = ["DAMPINGS", "d3_corrected", "d3_functional"]

DAMPINGS = ("d3bj", "d3zero", "d3bjm", "d3zerom", "d3op")
"""D3 damping functions offered: rational (Becke-Johnson), zero, their modified forms, and
optimised power (names as ``dftd3.ase.DFTD3`` takes them)."""

_DISPERSION_IN_LEVEL = re.compile(
    r"(?<![A-Za-z0-9])(D3|D3BJ|D3ZERO|D4|VV10|MBD|TS|xTB|GFN\d?|GFN-FF)(?![A-Za-z])"
    r"|-D(?![A-Za-z])|dispersion",
    re.IGNORECASE,
)
_SEPARATORS = re.compile(r"[\s/,;:()\[\]+]+")


def _damping_class(damping: str) -> Any:
    from dftd3 import interface

    classes = {
        "d3bj": interface.RationalDampingParam,
        "d3zero": interface.ZeroDampingParam,
        "d3bjm": interface.ModifiedRationalDampingParam,
        "d3zerom": interface.ModifiedZeroDampingParam,
        "d3op": interface.OptimizedPowerDampingParam,
    }
    return classes[damping]


def _has_parameters(method: str, damping: str) -> bool:
    """Whether ``dftd3`` has ``damping`` parameters for the functional ``method``."""
    try:
        _damping_class(damping)(method=method)
    except RuntimeError:  # dftd3: "No entry for '...' present"
        return False
    return True


def d3_functional(level_of_theory: str | None, functional: str | None, damping: str) -> str:
    """The functional whose D3 parameters apply, from the card's level of theory (see the
    module docstring for the rules); ``AseEquiError`` naming the reason where D3 does not fit.

    Examples
    --------
    >>> d3_functional("DFT PBE/def2-SVP, PySCF 2.14, gas phase", None, "d3bj")
    'pbe'
    >>> d3_functional("GFN1-xTB (tblite 0.8)", None, "d3bj")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ase_equi.errors.AseEquiError: ... already contains a dispersion term ('GFN1')...
    """
    if damping not in DAMPINGS:
        raise AseEquiError(f"damping must be one of {', '.join(DAMPINGS)}, got {damping!r}")
    if functional is not None and not _has_parameters(functional, damping):
        raise AseEquiError(f"dftd3 has no {damping} parameters for functional {functional!r}")
    if not level_of_theory:
        if functional is None:
            raise AseEquiError(
                "the model card records no level of theory: give the functional its training "
                "data were computed with, e.g. functional='pbe'"
            )
        return functional.lower()
    marker = _DISPERSION_IN_LEVEL.search(level_of_theory)
    if marker:
        raise AseEquiError(
            f"the model's level of theory {level_of_theory!r} already contains a dispersion "
            f"term ({marker.group(0)!r}): D3 on top would count it twice"
        )
    tokens = [t for t in _SEPARATORS.split(level_of_theory) if re.search("[A-Za-z]", t)]
    found = sorted({t.lower() for t in tokens if _has_parameters(t, damping)})
    if not found:
        raise AseEquiError(
            f"the model's level of theory {level_of_theory!r} names no density functional "
            f"that D3 ({damping}) has parameters for: D3 corrects a DFT functional"
        )
    if functional is not None and functional.lower() not in found:
        raise AseEquiError(
            f"functional={functional!r}, but the model was trained on {level_of_theory!r} "
            f"({', '.join(found)})"
        )
    if functional is None and len(found) > 1:
        raise AseEquiError(
            f"the level of theory {level_of_theory!r} names several functionals "
            f"({', '.join(found)}): say which with functional="
        )
    return functional.lower() if functional is not None else found[0]


def d3_corrected(
    calc: BaseCalculator, *, damping: str = "d3bj", functional: str | None = None
) -> SumCalculator:
    """``calc`` plus D3 dispersion for the functional of its model's training data.

    Parameters
    ----------
    calc:
        An :class:`~ase_equi.calculator.EquivariantCalculator`; its model card's
        ``level_of_theory`` decides the functional (:func:`d3_functional`).
    damping:
        One of :data:`DAMPINGS`; ``"d3bj"`` (rational, Becke-Johnson) by default.
    functional:
        Only needed when the card records no level of theory; otherwise it must agree.

    Returns
    -------
    An ASE ``SumCalculator([calc, DFTD3(method=functional, damping=damping)])``: energy,
    free energy, forces, stress (periodic cells) and Hessian are sums of the two.

    Raises
    ------
    AseEquiError
        Where D3 does not fit the model (see the module docstring), an unknown damping, or a
        functional ``dftd3`` has no parameters for.
    ModuleNotFoundError
        ``dftd3`` is not installed (``pip install dftd3``).
    """
    try:
        from dftd3.ase import DFTD3
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"D3 dispersion needs the dftd3 package (pip install dftd3): {error}"
        ) from error
    loaded = getattr(calc, "loaded", None)
    card: Mapping[str, Any] = getattr(loaded, "card", None) or {}
    method = d3_functional(card.get("level_of_theory"), functional, damping)
    return SumCalculator([calc, DFTD3(method=method, damping=damping)])
