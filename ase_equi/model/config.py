"""Architecture hyper-parameters of a MACE-type model, as one frozen dataclass."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, cast

from e3nn import o3

#: Supported range of every integer and real hyper-parameter, inclusive. Generous (every MACE
#: foundation model, e.g. MACE-MP-0 large: 128 channels, max_L 2, max_ell 3, r_max 6 Å, lies
#: well inside) but finite, so that a hostile or mistyped file fails before anything is built.
BOUNDS: dict[str, tuple[float, float]] = {
    "r_max": (0.0, 30.0),  # Å; the neighbour search grows as r_max³
    "num_bessel": (1, 64),
    "envelope_p": (1, 32),
    "max_ell": (0, 6),  # e3nn's spherical harmonics go to 11; see also MAX_MONOMIALS
    "channels": (1, 1024),
    "max_L": (0, 4),
    "num_interactions": (1, 8),
    "readout_hidden": (1, 4096),
    "avg_num_neighbors": (0.0, 1.0e4),
}
MAX_INTERACTIONS = 8
#: Bound on the monomials of the symmetric contraction, C(D + ν − 1, ν) with D = (max_ell + 1)²
#: and ν = correlation: its index tables and coupling bases grow with this count, and so do the
#: time and memory to build a model (max_ell 6 with ν = 4 has 270,725 monomials). 50,000 admits
#: max_ell 3 or 4 with ν ≤ 4 and max_ell ≤ 6 with ν ≤ 3.
MAX_MONOMIALS = 50_000
MAX_RADIAL_LAYERS = 8
MAX_RADIAL_WIDTH = 4096
DISTANCE_TRANSFORMS = (None, "Agnesi")
#: Fields added after format 2 was released: left out of :meth:`ModelConfig.to_dict` at these
#: defaults, so that older headers (and their hashes) are unchanged.
OPTIONAL_FIELDS: dict[str, Any] = {
    "density_normalisation": False,
    "pair_repulsion": False,
    "distance_transform": None,
    "heads": (),
    "head_layers": 0,
    "nonlinear_interaction": False,
    "edge_channels": None,
    "edge_irreps_first": False,
    "agnostic_product": False,
    "apply_cutoff": True,
    "wigner_float32": False,
}
MAX_HEADS = 64
INT_FIELDS = (
    "num_bessel",
    "envelope_p",
    "max_ell",
    "channels",
    "max_L",
    "num_interactions",
    "readout_hidden",
)


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"ModelConfig.{name} must be an integer, got {value!r}")


def _check_real(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"ModelConfig.{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"ModelConfig.{name} must be finite, got {value!r}")


def _sequence(name: str, value: Any, max_len: int) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__"):
        raise ValueError(f"ModelConfig.{name} must be a list, got {value!r:.80}")
    if len(value) > max_len:
        raise ValueError(
            f"ModelConfig.{name} has {len(value)} entries; at most {max_len} are supported"
        )
    return tuple(value)


def _int_tuple(name: str, value: Any, max_len: int) -> tuple[int, ...]:
    items = _sequence(name, value, max_len)
    for v in items:
        _check_int(name, v)
    return tuple(int(v) for v in items)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the architecture and its constants (not the trained weights).

    Parameters
    ----------
    elements:
        Atomic numbers the model knows, in the order of its one-hot element embedding.
    reference_energies:
        Per-element reference energies E0 (eV), same order as ``elements``; ``None`` (the
        default) means "not yet fitted": ``train()`` fits them from the data, and building a
        :class:`~ase_equi.model.mace.MaceModel` from a config without them is refused.
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
    density_normalisation:
        Divide each layer's messages by a learned neighbour density 1 + ρ_r instead of
        ``avg_num_neighbors`` (MACE's ``RealAgnosticDensity(Residual)InteractionBlock``, as in
        MACE-MPA-0); see :mod:`~ase_equi.model.density_interaction`.
    pair_repulsion:
        Add the ZBL pair repulsion inside the sum of the covalent radii to the interaction
        energy, before ``scale`` and ``shift`` (:mod:`~ase_equi.model.zbl`).
    distance_transform:
        ``None`` or ``"Agnesi"``: the Bessel basis sees the edge length transformed by the
        pair's covalent bond length (:mod:`~ase_equi.model.distance_transform`).
    heads:
        Names of the readout heads that share the layers below them (``()``: one head). With
        two or more, every head has its own readouts, E0, scale and shift
        (:class:`~ase_equi.model.mace.MaceModel` ``active_head`` picks one): e.g. a parent's
        level of theory and a fine-tuned one.
    head_layers:
        How many of the last interaction layers (interaction and product) each head beyond
        the first owns (0: the heads share every layer and differ in their readouts). Head 0
        evaluates ``interactions``/``products``; head h ≥ 1 its copies in
        ``head_interactions[h−1]``/``head_products[h−1]`` (fine-tuning: the parent's head keeps
        its own last layer, :mod:`~ase_equi.training.multihead`).

    nonlinear_interaction:
        Every layer is the residual non-linear block of MACE-MH-0 / MH-1
        (:mod:`~ase_equi.model.nonlinear_interaction`): element-aware radial MLP with LayerNorm,
        learned density normalisation, gated non-linearity, element-independent self-connection.
    edge_channels:
        ``None``, or the multiplicity E of the reduced edge irreps the non-linear block's tensor
        product runs on (``E × (0e + 1o + …)`` up to ``max_L``; MACE's ``edge_irreps``).
    edge_irreps_first:
        The first layer's tensor product also runs on ``E x 0e`` (MACE's
        ``use_edge_irreps_first``); otherwise on its ``channels x 0e`` input.
    agnostic_product:
        One set of symmetric-contraction weights for all elements (MACE's
        ``use_agnostic_product``).
    apply_cutoff:
        True: the envelope multiplies the Bessel features; False (MACE-MH): it multiplies the
        non-linear block's tensor-product weights and density terms instead.
    wigner_float32:
        The message tensor products use Wigner 3j symbols rounded to float32, as a MACE file
        stored in float32 carries them (an imported file's own constants, like its coupling
        tensors; see :class:`~ase_equi.model.tensor_product.ChannelwiseTensorProduct`).

    These and the four above are written by :meth:`to_dict` only when they differ from their
    defaults, so the header (and its hash) of every model without them stays as it was.

    Examples
    --------
    >>> cfg = ModelConfig(elements=(29,), reference_energies=(-0.5,), channels=8, max_L=1)
    >>> cfg.hidden_irreps
    '8x0e+8x1o'
    >>> ModelConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> ModelConfig(elements=(29,)).reference_energies is None  # fitted later by train()
    True
    >>> ModelConfig(elements=(29,), channels=30000)
    Traceback (most recent call last):
    ...
    ValueError: ModelConfig.channels = 30000 is outside the supported range 1..1024
    """

    elements: tuple[int, ...]
    reference_energies: tuple[float, ...] | None = None
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
    density_normalisation: bool = False
    pair_repulsion: bool = False
    distance_transform: str | None = None
    heads: tuple[str, ...] = ()
    head_layers: int = 0
    nonlinear_interaction: bool = False
    edge_channels: int | None = None
    edge_irreps_first: bool = False
    agnostic_product: bool = False
    apply_cutoff: bool = True
    wigner_float32: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self._check_types()
        self._normalise_sequences()
        self._check_values()

    def _check_types(self) -> None:
        """Types of the scalar fields, then their supported ranges (:data:`BOUNDS`)."""
        for name in INT_FIELDS:
            _check_int(name, getattr(self, name))
        for name in ("r_max", "avg_num_neighbors", "scale", "shift"):
            _check_real(name, getattr(self, name))
        if not isinstance(self.residual_first, bool):
            raise ValueError(
                f"ModelConfig.residual_first must be true or false, got {self.residual_first!r}"
            )
        for name in (
            "density_normalisation",
            "pair_repulsion",
            "nonlinear_interaction",
            "edge_irreps_first",
            "agnostic_product",
            "apply_cutoff",
            "wigner_float32",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"ModelConfig.{name} must be true or false, got {getattr(self, name)!r}"
                )
        if self.distance_transform not in DISTANCE_TRANSFORMS:
            raise ValueError(
                f"ModelConfig.distance_transform must be one of {DISTANCE_TRANSFORMS}, got "
                f"{self.distance_transform!r:.80}"
            )
        if not isinstance(self.extra, dict):
            raise ValueError(f"ModelConfig.extra must be a dict, got {type(self.extra).__name__}")
        # bounds first: num_interactions fixes how long correlation may be
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(
                    f"ModelConfig.{name} = {value!r} is outside the supported range {low}..{high}"
                )

    def _normalise_sequences(self) -> None:
        """Lists to tuples of checked ints or floats; one correlation per interaction."""
        set_ = object.__setattr__
        set_(self, "elements", _int_tuple("elements", self.elements, 118))
        set_(self, "radial_mlp", _int_tuple("radial_mlp", self.radial_mlp, MAX_RADIAL_LAYERS))
        heads = _sequence("heads", self.heads, MAX_HEADS)
        if any(not isinstance(h, str) or not 1 <= len(h) <= 100 for h in heads):
            raise ValueError(f"ModelConfig.heads must be names of 1..100 characters: {heads!r:.80}")
        if len(set(heads)) != len(heads):
            raise ValueError(f"ModelConfig.heads has duplicates: {heads}")
        set_(self, "heads", heads)
        corr = self.correlation
        if isinstance(corr, numbers.Integral) and not isinstance(corr, bool):
            corr = (int(corr),) * self.num_interactions
        set_(self, "correlation", _int_tuple("correlation", corr, MAX_INTERACTIONS))
        if self.reference_energies is not None:
            energies = _sequence("reference_energies", self.reference_energies, 118)
            for e in energies:
                _check_real("reference_energies", e)
            set_(self, "reference_energies", tuple(float(e) for e in energies))

    def _check_values(self) -> None:
        """Consistency between fields and the bounds that depend on several of them."""
        correlation = cast("tuple[int, ...]", self.correlation)  # a tuple once normalised
        if not self.elements:
            raise ValueError("ModelConfig.elements is empty: a model needs at least one element")
        if len(set(self.elements)) != len(self.elements):
            raise ValueError(f"ModelConfig.elements has duplicates: {self.elements}")
        if any(not 1 <= z <= 118 for z in self.elements):
            raise ValueError(f"ModelConfig.elements must be atomic numbers 1..118: {self.elements}")
        if self.reference_energies is not None and len(self.reference_energies) != len(
            self.elements
        ):
            raise ValueError(
                f"ModelConfig.reference_energies has {len(self.reference_energies)} values for "
                f"{len(self.elements)} elements"
            )
        if not self.r_max > 0:
            raise ValueError(f"ModelConfig.r_max must be positive, got {self.r_max}")
        if len(correlation) != self.num_interactions:
            raise ValueError(
                f"ModelConfig.correlation has {len(correlation)} entries for "
                f"{self.num_interactions} interactions"
            )
        if any(not 1 <= c <= 4 for c in correlation):
            raise ValueError(f"ModelConfig.correlation must be in 1..4, got {correlation}")
        dim = (self.max_ell + 1) ** 2
        monomials = math.comb(dim + max(correlation) - 1, max(correlation))
        if monomials > MAX_MONOMIALS:
            raise ValueError(
                f"ModelConfig.max_ell = {self.max_ell} with correlation {max(correlation)} "
                f"needs {monomials:,} monomials in the symmetric contraction; at most "
                f"{MAX_MONOMIALS:,} are supported (lower max_ell or correlation)"
            )
        if any(not 1 <= w <= MAX_RADIAL_WIDTH for w in self.radial_mlp):
            raise ValueError(
                f"ModelConfig.radial_mlp widths must be in 1..{MAX_RADIAL_WIDTH}, "
                f"got {self.radial_mlp}"
            )
        if not self.avg_num_neighbors > 0:
            raise ValueError("ModelConfig.avg_num_neighbors must be positive")
        _check_int("head_layers", self.head_layers)
        fits = len(self.heads) > 1 and self.head_layers <= self.num_interactions
        if self.head_layers < 0 or (self.head_layers and not fits):
            raise ValueError(
                f"ModelConfig.head_layers = {self.head_layers} needs two or more heads and at "
                f"most num_interactions ({self.num_interactions}) layers; heads: {self.heads}"
            )
        self._check_nonlinear_options()

    def _check_nonlinear_options(self) -> None:
        """The options of the residual non-linear block (MACE-MH) go with that block only."""
        if self.edge_channels is not None:
            _check_int("edge_channels", self.edge_channels)
            if not 1 <= self.edge_channels <= BOUNDS["channels"][1]:
                raise ValueError(
                    f"ModelConfig.edge_channels = {self.edge_channels} is outside the supported "
                    f"range 1..{BOUNDS['channels'][1]:g}"
                )
        needs_block = {
            "edge_channels": self.edge_channels is not None,
            "apply_cutoff": not self.apply_cutoff,
        }
        for name, used in needs_block.items():
            if used and not self.nonlinear_interaction:
                raise ValueError(
                    f"ModelConfig.{name} = {getattr(self, name)!r} needs "
                    "nonlinear_interaction=True (only that block implements it)"
                )
        if self.edge_irreps_first and self.edge_channels is None:
            raise ValueError("ModelConfig.edge_irreps_first needs edge_channels")
        if self.nonlinear_interaction and (self.density_normalisation or not self.residual_first):
            raise ValueError(
                "ModelConfig.nonlinear_interaction replaces every layer's block: it excludes "
                "density_normalisation and needs residual_first=True"
            )

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
        """JSON-clean dictionary (lists instead of tuples); :data:`OPTIONAL_FIELDS` at their
        defaults are left out."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in OPTIONAL_FIELDS and v == OPTIONAL_FIELDS[f.name]:
                continue
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown fields are refused (a typo must not pass)."""
        if not isinstance(data, dict):
            raise ValueError(f"ModelConfig must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**data)
