"""Architecture hyper-parameters of a MACE-type model, as one frozen dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from e3nn import o3


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the architecture and its constants (not the trained weights).

    Parameters
    ----------
    elements:
        Atomic numbers the model knows, in the order of its one-hot element embedding.
    reference_energies:
        Per-element reference energies E0 (eV), same order as ``elements``.
    r_max:
        Cutoff radius (Å).
    num_bessel:
        Number of Bessel radial basis functions.
    envelope_p:
        Order p of the polynomial cutoff envelope.
    max_ell:
        Highest degree of the edge spherical harmonics.
    channels:
        Number of channels (multiplicity of every hidden irrep).
    max_L:
        Highest degree of the hidden node features: irreps ``channels × (0e + 1o + 2e …)``.
    num_interactions:
        Number of message-passing layers.
    correlation:
        Body order ν of the symmetric contraction in each layer (an int or one per layer).
    radial_mlp:
        Hidden widths of the radial MLP.
    readout_hidden:
        Width of the last layer's MLP readout (``16`` means ``16x0e``).
    avg_num_neighbors:
        Normalisation of the neighbour sum.
    scale, shift:
        Interaction energy per atom is ``scale · E_i + shift`` (eV).
    residual_first:
        Whether the first interaction is residual (MACE's ``RealAgnosticResidualInteractionBlock``)
        or not (``RealAgnosticInteractionBlock``).

    Examples
    --------
    >>> cfg = ModelConfig(elements=(29,), reference_energies=(-0.5,), channels=8, max_L=1)
    >>> cfg.hidden_irreps
    '8x0e+8x1o'
    >>> ModelConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    elements: tuple[int, ...]
    reference_energies: tuple[float, ...]
    r_max: float = 5.0
    num_bessel: int = 8
    envelope_p: int = 5
    max_ell: int = 3
    channels: int = 64
    max_L: int = 1
    num_interactions: int = 2
    correlation: tuple[int, ...] | int = 3
    radial_mlp: tuple[int, ...] = (64, 64, 64)
    readout_hidden: int = 16
    avg_num_neighbors: float = 1.0
    scale: float = 1.0
    shift: float = 0.0
    residual_first: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "elements", tuple(int(z) for z in self.elements))
        set_(self, "reference_energies", tuple(float(e) for e in self.reference_energies))
        set_(self, "radial_mlp", tuple(int(w) for w in self.radial_mlp))
        corr = self.correlation
        if isinstance(corr, int):
            corr = (corr,) * self.num_interactions
        set_(self, "correlation", tuple(int(c) for c in corr))
        if not self.elements:
            raise ValueError("ModelConfig.elements is empty: a model needs at least one element")
        if len(set(self.elements)) != len(self.elements):
            raise ValueError(f"ModelConfig.elements has duplicates: {self.elements}")
        if any(not 1 <= z <= 118 for z in self.elements):
            raise ValueError(f"ModelConfig.elements must be atomic numbers 1..118: {self.elements}")
        if len(self.reference_energies) != len(self.elements):
            raise ValueError(
                f"ModelConfig.reference_energies has {len(self.reference_energies)} values for "
                f"{len(self.elements)} elements"
            )
        if not self.r_max > 0:
            raise ValueError(f"ModelConfig.r_max must be positive, got {self.r_max}")
        for name in ("num_bessel", "channels", "num_interactions", "readout_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_ell < 0 or self.max_L < 0:
            raise ValueError("ModelConfig.max_ell and max_L must be >= 0")
        if len(self.correlation) != self.num_interactions:
            raise ValueError(
                f"ModelConfig.correlation has {len(self.correlation)} entries for "
                f"{self.num_interactions} interactions"
            )
        if any(not 1 <= c <= 4 for c in self.correlation):
            raise ValueError(f"ModelConfig.correlation must be in 1..4, got {self.correlation}")
        if not self.avg_num_neighbors > 0:
            raise ValueError("ModelConfig.avg_num_neighbors must be positive")

    @property
    def hidden_irreps(self) -> str:
        """Hidden node-feature irreps, e.g. ``'128x0e+128x1o'``."""
        parity = "eo"
        return str(
            o3.Irreps(
                "+".join(f"{self.channels}x{l}{parity[l % 2]}" for l in range(self.max_L + 1))
            )
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-clean dictionary (lists instead of tuples)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**data)
