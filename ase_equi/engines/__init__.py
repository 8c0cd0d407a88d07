"""Couplings to the MD engines users already run: i-PI (:mod:`.ipi`), dispersion corrections
(:mod:`.dispersion`) and LAMMPS (``lammps*`` modules).

This package sits on top of :mod:`ase_equi.calculator`, :mod:`ase_equi.loading` and
:mod:`ase_equi.batched`; nothing below it imports it. It imports nothing at import time: each
engine's optional package (``ipi``, ``dftd3``, ``lammps``) is imported by the module that needs
it, when it is used.
"""
