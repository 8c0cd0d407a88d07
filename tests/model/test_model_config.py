"""ModelConfig: optional reference energies, types and supported bounds, named in every error."""

from __future__ import annotations

import pytest

from ase_equi.model.config import BOUNDS, ModelConfig
from ase_equi.model.mace import MaceModel


def test_reference_energies_are_optional_until_the_model_is_built():
    """The README's ``train(ModelConfig(elements=...), ...)`` must construct; building a model
    without E0 must be refused with a message saying where E0 come from."""
    cfg = ModelConfig(elements=(29,), channels=4, max_ell=1, correlation=2, radial_mlp=(8,))
    assert cfg.reference_energies is None
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"reference_energies is None.*train\(\)"):
        MaceModel(cfg)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("channels", 30000),
        ("num_interactions", 10**6),
        ("r_max", 1e6),
        ("max_ell", 50),
        ("max_ell", 8),
        ("max_L", 9),
        ("num_bessel", 10**4),
        ("envelope_p", 0),
        ("envelope_p", 10**3),
        ("readout_hidden", 10**6),
        ("avg_num_neighbors", float("inf")),
        ("avg_num_neighbors", float("nan")),
        ("scale", float("nan")),
        ("radial_mlp", (64,) * 100),
        ("radial_mlp", (10**6,)),
        ("channels", True),
        ("channels", 3.5),
        ("channels", "64"),
        ("r_max", "5"),
        ("residual_first", "yes"),
        ("reference_energies", (float("nan"),)),
    ],
)
def test_out_of_bounds_or_mistyped_fields_are_named(field, value):
    """Every value outside the supported range, or of the wrong type, is refused at
    construction (before any module is built), naming the field."""
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field}\b"):
        ModelConfig(elements=(29,), **{field: value})


def test_foundation_model_sizes_are_inside_the_bounds():
    """MACE-MP-0 large (128 channels, max_L 2, max_ell 3, r_max 6 Å, 2 layers, ν = 3) and a
    256-channel OMAT-like model must stay supported."""
    for channels in (128, 256):
        ModelConfig(
            elements=tuple(range(1, 90)),
            channels=channels,
            max_L=2,
            max_ell=3,
            r_max=6.0,
            num_interactions=2,
            correlation=3,
            avg_num_neighbors=61.0,
        )
    assert BOUNDS["r_max"][1] >= 6.0


def test_costly_max_ell_and_correlation_are_refused_together():
    """max_ell 6 is fine at ν = 3 but not at ν = 4 (C(52, 4) = 270,725 monomials, a 25 s and
    1.4 GB build); the message names both fields."""
    ModelConfig(elements=(29,), max_ell=6, correlation=3, channels=4)
    with pytest.raises(ValueError, match=r"ModelConfig\.max_ell = 6 with correlation 4.*270,725"):
        ModelConfig(elements=(29,), max_ell=6, correlation=4, channels=4)
