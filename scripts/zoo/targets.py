"""Issue 17's fidelity targets, and their evaluation against a card's ``physics_checks``.

A card's checks are nested dictionaries ``checks[check][subject][property] = leaf``, where a
leaf is one of

- a comparison ``{"model": x, "reference": y, "deviation_percent": d}`` (or
  ``"deviation_meV_per_atom"`` for an energy zero, which is arbitrary: never a percentage);
- a measurement ``{"value": x, "unit": "..."}`` (a largest force error, an MAE, a flag).

A :class:`Target` names a check and a property; every subject of that check that has the
property is judged, and a target whose check or property is absent from the card gives a row
marked "not measured" (never a pass).

>>> t = Target("equation_of_state", "a0", "percent", 3.0)
>>> checks = {"equation_of_state": {"Cu": {"a0": {"model": 3.60, "reference": 3.59,
...                                            "deviation_percent": 0.28}}}}
>>> [(r.subject, r.passed) for r in evaluate(checks, [t])]
[('Cu', True)]
"""

from __future__ import annotations

from dataclasses import dataclass

RULES = ("percent", "at_most", "is_true", "report")


@dataclass(frozen=True)
class Target:
    """One line of issue 17: ``check``/``property`` must satisfy ``rule`` with ``limit``.

    rule: ``"percent"`` (|deviation_percent| ≤ limit), ``"at_most"`` (value ≤ limit, in the
    leaf's unit), ``"is_true"`` (the value is True; limit unused) or ``"report"`` (shown, no
    target: the issue sets none).
    """

    check: str
    property: str
    rule: str
    limit: float = 0.0

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(
                f"Target {self.check}/{self.property}: rule {self.rule!r} not in {RULES}"
            )

    def text(self) -> str:
        """The target as a table cell, e.g. ``within 3 %`` (no ``|``: it is a table)."""
        if self.rule == "percent":
            return f"within {self.limit:g} %"
        if self.rule == "at_most":
            return f"≤ {self.limit:g}"
        return "true" if self.rule == "is_true" else "—"


@dataclass(frozen=True)
class Row:
    """One judged (check, subject, property); ``passed`` is None where there is no target or
    nothing was measured."""

    check: str
    subject: str
    property: str
    model: str
    reference: str
    deviation: str
    target: str
    passed: bool | None

    def result(self) -> str:
        if self.model == "not measured":
            return "not measured"
        return {True: "pass", False: "FAIL", None: "—"}[self.passed]


def compare(model: dict, reference: dict, digits: int = 4) -> dict:
    """Comparison leaves ``{key: {"model", "reference", "deviation_percent"}}`` for the keys of
    ``model``; ``E0`` (an energy zero, arbitrary) as a difference in meV/atom instead.

    >>> compare({"a0": 3.6, "E0": -0.002}, {"a0": 3.5, "E0": -0.001})["a0"]["deviation_percent"]
    2.86
    >>> compare({"a0": 3.6, "E0": -0.002}, {"a0": 3.5, "E0": -0.001})["E0"]
    {'model': -0.002, 'reference': -0.001, 'deviation_meV_per_atom': -1.0}
    """
    out = {}
    for k in model:
        row = {"model": round(model[k], digits), "reference": round(reference[k], digits)}
        if k == "E0":
            row["deviation_meV_per_atom"] = round(1000.0 * (model[k] - reference[k]), 2)
        else:
            row["deviation_percent"] = round(
                100.0 * (model[k] - reference[k]) / abs(reference[k]), 2
            )
        out[k] = row
    return out


def measured(value: float | bool, unit: str = "") -> dict:
    """A measurement leaf (a value judged by itself, e.g. a largest force error)."""
    return {"value": value if isinstance(value, bool) else round(float(value), 4), "unit": unit}


def _fmt(x: object) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def judge(leaf: dict, target: Target) -> bool | None:
    """Whether ``leaf`` meets ``target`` (None for a target of rule ``"report"``)."""
    if target.rule == "percent":
        return abs(float(leaf["deviation_percent"])) <= target.limit
    if target.rule == "at_most":
        return float(leaf["value"]) <= target.limit
    if target.rule == "is_true":
        return leaf["value"] is True
    return None


def _row(check: str, subject: str, leaf: dict, target: Target) -> Row:
    if "value" in leaf:
        model, reference, deviation = _fmt(leaf["value"]), "", leaf.get("unit", "")
    else:
        model, reference = _fmt(leaf["model"]), _fmt(leaf["reference"])
        if "deviation_percent" in leaf:
            deviation = f"{leaf['deviation_percent']:+.2f} %"
        else:
            deviation = f"{leaf['deviation_meV_per_atom']:+.2f} meV/atom"
    return Row(
        check, subject, target.property, model, reference, deviation, target.text(),
        judge(leaf, target),
    )  # fmt: skip


def evaluate(checks: dict, targets: list[Target]) -> list[Row]:
    """Every (subject, property) of ``checks`` that a target names, judged; a target with
    nothing to judge gives one "not measured" row (unless it is report-only)."""
    rows = []
    for target in targets:
        found = False
        for subject, props in checks.get(target.check, {}).items():
            if isinstance(props, dict) and isinstance(props.get(target.property), dict):
                rows.append(_row(target.check, subject, props[target.property], target))
                found = True
        if not found and target.rule != "report":  # a report-only line is simply left out
            rows.append(
                Row(target.check, "—", target.property, "not measured", "", "", target.text(), None)
            )
    return rows


def all_met(rows: list[Row]) -> bool:
    """True when every row with a target passed and none is missing."""
    return all(r.passed is not False and r.model != "not measured" for r in rows)


def markdown(rows: list[Row]) -> str:
    """The TARGETS table, one line per row, and a last line with the count of failures."""
    lines = [
        "| check | subject | property | model | reference | deviation | target | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.check} | {r.subject} | {r.property} | {r.model} | {r.reference} | "
            f"{r.deviation} | {r.target} | {r.result()} |"
        )
    failed = sum(r.passed is False for r in rows)
    missing = sum(r.model == "not measured" for r in rows)
    judged = sum(r.passed is not None for r in rows)
    lines.append(
        f"\n{judged - failed} of {judged} judged rows meet their target; {failed} fail; "
        f"{missing} not measured."
    )
    return "\n".join(lines)


def as_json(rows: list[Row]) -> list[dict]:
    return [dict(r.__dict__, result=r.result()) for r in rows]


# issue 17's numbers
METALS = [
    Target("equation_of_state", "a0", "percent", 3.0),
    Target("equation_of_state", "B", "percent", 3.0),
    Target("equation_of_state", "E0", "report"),
    Target("elastic_constants_GPa", "C11", "percent", 3.0),
    Target("elastic_constants_GPa", "C12", "percent", 3.0),
    Target("elastic_constants_GPa", "C44", "percent", 3.0),
    Target("vacancy_formation_eV", "unrelaxed", "percent", 5.0),
    Target("vacancy_formation_eV", "relaxed", "percent", 5.0),
    Target("surface_energy_111_J_m2", "unrelaxed", "percent", 3.0),
    Target("surface_energy_111_J_m2", "relaxed", "percent", 3.0),
    Target("short_contact_forces", "max_force_error", "at_most", 0.5),
    Target("short_contact_forces", "force_rmse", "report"),
]
SILICON = [
    Target("equation_of_state", "a0", "percent", 0.5),
    Target("equation_of_state", "B", "percent", 10.0),
    Target("equation_of_state", "E0", "report"),
    Target("elastic_constants_GPa", "C11", "percent", 10.0),
    Target("elastic_constants_GPa", "C12", "percent", 10.0),
    Target("elastic_constants_GPa", "C44", "percent", 10.0),
    Target("vacancy_formation_eV", "unrelaxed", "percent", 10.0),
    Target("vacancy_formation_eV", "relaxed", "percent", 10.0),
    Target("interstitial_formation_eV", "relaxed", "percent", 10.0),
    Target("md_stability", "stable", "is_true"),
    *(
        Target("md_stability", p, "report")
        for p in (
            "simulated_ps",
            "shortest_contact",
            "mean_temperature",
            "rdf_first_peak",
            "mean_coordination",
        )
    ),  # fmt: skip
]
MOLECULES = [
    Target("test_set_errors", "energy_MAE", "at_most", 1.0),
    Target("test_set_errors", "forces_MAE", "at_most", 30.0),
    Target("harmonic_frequencies_cm-1", "MAE", "at_most", 50.0),
    Target("harmonic_frequencies_cm-1", "molecule_MAE", "report"),
    Target("training_molecule_frequencies_cm-1", "molecule_MAE", "report"),
    Target("training_molecule_frequencies_cm-1", "max_abs_deviation", "report"),
]
TARGETS = {"metals": METALS, "silicon-xtb": SILICON, "molecules-pbe": MOLECULES}
