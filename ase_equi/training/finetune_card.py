"""The fine-tuned model's file: a card naming the parent, the settings, and a card per head."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io.model_file import model_paths, read_model_file, save_model
from .report import TrainResult

if TYPE_CHECKING:
    from .finetune import FinetuneConfig


def file_name(source: str | os.PathLike | None) -> str:
    """A data or model file as a card names it: the file name only (no machine's path)."""
    return Path(source).name if source else "given frames"


def save_with_parent(
    result: TrainResult,
    ident: dict[str, str],
    ft: FinetuneConfig,
    data_name: str,
    report: dict[str, Any],
    parent_card: dict[str, Any],
    heads: tuple[str, str] | None,
) -> Path:
    """Rewrite the trained model's file with a card naming the parent (``ident``), the data
    file's name, the fine-tuning settings (file names only), the before/after errors and,
    with two heads, a card per head (level of theory, test errors)."""
    assert result.model_path is not None
    card = read_model_file(result.model_path, dtype=None).card
    settings = dataclasses.asdict(ft)
    for key in ("replay_data", "parent_test_data"):
        settings[key] = settings[key] and file_name(settings[key])
    card.update(
        parent=ident,
        finetuning={
            "data": data_name,
            "settings": settings,
            "defaults": report["defaults"],
            "replay": report["replay"],
            "reference_energies": report["reference_energies"],
            "report": {k: report[k] for k in ("new_test", "parent_test", "eos") if k in report},
        },
    )
    path = model_paths(result.model_path)[0]
    if heads is None:
        return save_model(result.model, path, card=card)
    model = result.model
    head_cards = [
        {
            "level_of_theory": parent_card.get("level_of_theory", "unknown"),
            "test_errors": parent_card.get("test_errors", {}),
            "trained_on": f"the parent {ident['name']}'s data (rehearsed by replay)",
        },
        {
            "level_of_theory": report["level_of_theory"],
            "test_errors": report.get("new_test", {}).get("after", {}),
            "trained_on": data_name,
        },
    ]
    entries = {
        head: {
            "reference_energies": model.reference_energies[k].double().tolist(),
            "scale": float(model.scale[k].double()),
            "shift": float(model.shift[k].double()),
            "card": head_cards[k],
        }
        for k, head in enumerate(heads)
    }
    return save_model(model, path, card=card, heads=entries, default_head=heads[1])
