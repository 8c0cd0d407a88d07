"""The model card in markdown: header fields, card fields and the physical checks as a table."""

from __future__ import annotations

import json
from typing import Any

from ase.data import chemical_symbols


def render_card(header: dict[str, Any]) -> str:
    """Markdown model card from a header (config and card)."""
    card, cfg = header.get("card", {}), header["config"]
    lines = [f"# {card.get('name', 'model')}", ""]
    if card.get("description"):
        lines += [str(card["description"]), ""]
    elements = ", ".join(chemical_symbols[z] for z in cfg["elements"])
    lines += [
        "| field | value |",
        "|---|---|",
        f"| elements | {elements} |",
        f"| cutoff | {cfg['r_max']} Å |",
        f"| architecture | MACE, {cfg['num_interactions']} layers, {cfg['channels']} channels, "
        f"max_L={cfg['max_L']}, max_ell={cfg['max_ell']}, correlation={cfg['correlation']} |",
        f"| dtype | {header.get('dtype')} |",
        f"| format | {header['format']} v{header['format_version']}, ase_equi "
        f"{header.get('package_version')} |",
        f"| weights SHA-256 | `{header['weights_sha256']}` |",
    ]
    if header.get("header_sha256"):
        lines.append(f"| header SHA-256 | `{header['header_sha256']}` |")
    if header.get("heads"):
        lines.append(
            f"| heads | {', '.join(header['heads'])} (default {header.get('default_head')}) |"
        )
    skip = {"name", "description", "elements", "cutoff_angstrom", "physics_checks", "targets"}
    for key, value in card.items():
        if key in skip:
            continue
        text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
        lines.append(f"| {key.replace('_', ' ')} | {text} |")
    if isinstance(card.get("physics_checks"), dict):
        lines += ["", "## Physical checks", ""] + physics_table(card["physics_checks"])
    if isinstance(card.get("targets"), list):
        lines += ["", "## Targets", ""] + targets_table(card["targets"])
    return "\n".join(lines) + "\n"


def targets_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown rows of a card's ``targets`` (the card script's judged checks, one dict each).

    >>> print("\\n".join(targets_table([{"check": "eos", "subject": "Cu", "property": "a0",
    ...     "model": "3.59", "reference": "3.59", "deviation": "-0.01 %",
    ...     "target": "within 3 %", "result": "pass"}])))
    | check | subject | property | model | reference | deviation | target | result |
    |---|---|---|---|---|---|---|---|
    | eos | Cu | a0 | 3.59 | 3.59 | -0.01 % | within 3 % | pass |
    """
    keys = ("check", "subject", "property", "model", "reference", "deviation", "target", "result")
    out = [f"| {' | '.join(keys)} |", "|" + "---|" * len(keys)]
    return out + ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in rows]


def physics_table(checks: dict[str, Any]) -> list[str]:
    """Markdown rows ``quantity | model | reference | deviation`` of a card's physical checks.

    A leaf ``{"model": m, "reference": r, "deviation_<unit>": d}`` is one row named by its path
    (``equation of state / Cu / a0``); other leaves (notes) follow the table as text.

    Examples
    --------
    >>> print("\\n".join(physics_table({"eos": {"Cu": {"a0": {"model": 3.589,
    ...     "reference": 3.59, "deviation_percent": -0.03}}}, "notes": "BM fit"})))
    | quantity | model | reference | deviation |
    |---|---|---|---|
    | eos / Cu / a0 | 3.589 | 3.59 | -0.03 % |
    <BLANKLINE>
    notes: BM fit
    """
    rows, notes = [], []

    def walk(path: list[str], node: Any) -> None:
        if isinstance(node, dict) and "model" in node:
            dev = [(k, v) for k, v in node.items() if k.startswith("deviation")]
            unit = dev[0][0].removeprefix("deviation").removeprefix("_") if dev else ""
            unit = {"percent": "%"}.get(unit, unit.replace("_per_", "/"))
            shown = f"{dev[0][1]} {unit}".strip() if dev else ""
            label = " / ".join(p.replace("_", " ") for p in path)
            rows.append(f"| {label} | {node['model']} | {node.get('reference', '')} | {shown} |")
        elif isinstance(node, dict):
            for key, value in node.items():
                walk([*path, str(key)], value)
        else:
            notes.append(f"{' / '.join(path)}: {node}")

    walk([], checks)
    out = ["| quantity | model | reference | deviation |", "|---|---|---|---|", *rows]
    return out + ([""] + notes if notes else [])
