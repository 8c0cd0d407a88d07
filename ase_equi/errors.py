"""One hierarchy of errors for everything ase_equi reads, builds or computes.

Every error names the problem (the file, the field, the atom, the limit) in its message.

::

    AseEquiError (ValueError)
    ├── ModelFileError          a model file is missing, corrupt, tampered with or out of bounds
    │   ├── UnsafeModelError    a pickle names a callable that is not allowed (nothing ran)
    │   └── UnsupportedMaceFeature  a MACE file uses a feature we do not reproduce exactly
    ├── CheckpointError         a training checkpoint is missing or damaged
    ├── DataFileError           a data file (extxyz, ASE db) cannot be read as labelled frames
    └── ReferenceFailed         a reference calculator raised on a structure to be labelled

They derive from ``ValueError`` so that code written against the old classes keeps working.

Examples
--------
>>> issubclass(UnsafeModelError, ModelFileError) and issubclass(ModelFileError, ValueError)
True
"""

from __future__ import annotations


class AseEquiError(ValueError):
    """Base class of every error raised by ase_equi on bad input."""


class ModelFileError(AseEquiError):
    """A model file (ours or MACE's) is missing, corrupt, tampered with, or out of bounds."""


class UnsafeModelError(ModelFileError):
    """A pickle names a callable that is not on the allow-list; nothing was executed."""


class UnsupportedMaceFeature(ModelFileError):
    """A MACE file uses a feature ase_equi does not reproduce exactly; nothing was loaded."""


class CheckpointError(AseEquiError):
    """A training checkpoint is missing, truncated or fails its checksum."""


class DataFileError(AseEquiError):
    """A data file cannot be read as labelled frames (the message names the file and frame)."""


class ReferenceFailed(AseEquiError):
    """The reference calculator of on-the-fly learning raised on a structure to be labelled
    (the message names the call and the file the structure was written to)."""
