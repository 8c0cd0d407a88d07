"""``ase-equi train`` and ``ase-equi finetune``: the command line over :func:`ase_equi.train`
and :func:`ase_equi.finetune`.

Settings come, in increasing precedence, from the defaults of ``ModelConfig`` and
``TrainConfig``, a ``--config`` file (JSON, or YAML when pyyaml is installed) of the form
``{"model": {ModelConfig fields}, "train": {TrainConfig fields}}``, and the flags. Running the
same command again with the same ``--out`` resumes from the last checkpoint. Under
``torchrun --nproc_per_node=N -m ase_equi.cli train ...`` the run is data parallel.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ase.data import atomic_numbers


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# ModelConfig fields offered as flags: (name, type, help)
MODEL_FLAGS: list[tuple[str, Any, str]] = [
    ("r_max", float, "cutoff radius (Å)"),
    ("num_bessel", int, "number of Bessel radial functions"),
    ("max_ell", int, "highest degree of the edge spherical harmonics"),
    ("channels", int, "channels of every hidden irrep"),
    ("max_L", int, "highest degree of the hidden node features"),
    ("num_interactions", int, "message-passing layers"),
    ("correlation", int, "body order of the symmetric contraction"),
    ("radial_mlp", str, "hidden widths of the radial MLP, e.g. 64,64,64"),
    ("readout_hidden", int, "width of the last readout MLP"),
    ("pair_repulsion", _boolean, "ZBL pair repulsion at contacts shorter than a bond: true/false"),
]


def _optional(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "off") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _blocks(text: str) -> tuple[str, ...]:
    return tuple(b.strip() for b in text.split(",") if b.strip())


def _train_flags(defaults: dict[str, Any] | None = None) -> list[tuple[str, Any, str]]:
    """``(name, type, help)`` of the TrainConfig flags; ``defaults`` overrides the defaults
    shown (fine-tuning's differ from training's)."""
    from ..training.config import TrainConfig

    defaults = defaults or {}
    flags = []
    for f in dataclasses.fields(TrainConfig):
        if f.name == "output_dir":
            continue
        kind = {
            "patience": _optional(int),
            "max_grad_norm": _optional(float),
            "plots": _boolean,
            "freeze": _blocks,
        }.get(f.name, type(f.default))
        shown = defaults.get(f.name, f.default)
        flags.append((f.name, kind, f"TrainConfig.{f.name} (default {shown})"))
    return flags


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``finetune`` to the ``ase-equi`` sub-commands."""
    p = subparsers.add_parser(
        "train",
        help="train a model on labelled structures (extxyz / ASE db)",
        description="Train a MACE-architecture model on labelled structures. Settings: "
        "defaults < --config file < flags. Rerun with the same --out to resume.",
    )
    p.add_argument("--data", required=True, help="extxyz file or ASE database with labels")
    p.add_argument("--out", required=True, help="output directory (rerun to resume)")
    p.add_argument("--config", help="JSON/YAML file with 'model' and 'train' sections")
    p.add_argument("--name", default="model", help="model file name in --out (default: model)")
    p.add_argument("--level-of-theory", default="", help="e.g. 'PBE, 520 eV, VASP 6.4'")
    p.add_argument("--description", default="", help="what the training data are")
    p.add_argument("--elements", help="e.g. Cu,Al or 29,13 (default: the elements in the data)")
    for q in ("energy", "forces", "stress"):
        p.add_argument(f"--{q}-key", help=f"label name of the {q} (default: {q}); e.g. REF_{q}")
    g = p.add_argument_group("architecture (ModelConfig)")
    for name, kind, text in MODEL_FLAGS:
        g.add_argument(f"--{name.replace('_', '-')}", dest=f"model_{name}", type=kind, help=text)
    g = p.add_argument_group("training (TrainConfig)")
    for name, kind, text in _train_flags():
        g.add_argument(f"--{name.replace('_', '-')}", dest=f"train_{name}", type=kind, help=text)
    p.set_defaults(func=_cmd_train)
    _register_finetune(subparsers)


def _keys(args: argparse.Namespace):
    from ..data.frames import DataKeys

    given = {q: getattr(args, f"{q}_key") for q in ("energy", "forces", "stress")}
    return DataKeys(**{q: k for q, k in given.items() if k}) if any(given.values()) else None


def _register_finetune(subparsers: argparse._SubParsersAction) -> None:
    from ..training.finetune import FINETUNE_TRAIN_DEFAULTS, FinetuneConfig

    ft = FinetuneConfig()

    p = subparsers.add_parser(
        "finetune",
        help="adapt a zoo model or model file to new labelled data",
        description="Fine-tune a model on new labelled structures (extxyz / ASE db). Writes the "
        "model, its card (naming the parent) and a before/after report to --out; rerun with "
        "the same --out to resume. Training defaults: "
        + ", ".join(f"{k}={v}" for k, v in FINETUNE_TRAIN_DEFAULTS.items()),
    )
    p.add_argument("--from", dest="parent", required=True, help="zoo name or model file")
    p.add_argument("--data", required=True, help="extxyz file or ASE database with labels")
    p.add_argument("--out", required=True, help="output directory (rerun to resume)")
    p.add_argument("--name", help="model file name in --out (default: PARENT-finetuned)")
    p.add_argument("--level-of-theory", default="", help="of the new data, for the card")
    for q in ("energy", "forces", "stress"):
        p.add_argument(f"--{q}-key", help=f"label name of the {q} (default: {q}); e.g. REF_{q}")
    g = p.add_argument_group("fine-tuning (FinetuneConfig)")
    g.add_argument(
        "--refit-e0",
        type=_boolean,
        help="refit the E0 of the elements in the data "
        f"first, nearest the parent's; the others are kept (default {ft.refit_e0})",
    )
    _replay_flags(g, ft)
    g.add_argument(
        "--trunk-lr-scale",
        type=float,
        help="learning rate of the shared layers and the parent's head as a fraction of --lr "
        "(default 0.3 with two heads, 1 with one)",
    )
    g.add_argument(
        "--head-layers",
        type=int,
        help="how many of the parent's last interaction layers the new head owns a copy of "
        "(default 1 with two heads; 0: own readouts only)",
    )
    g.add_argument(
        "--parent-pull",
        type=float,
        help="λ of the pull of the shared layers (and, with replay, the parent's head) "
        f"towards the parent's weights (default {ft.parent_pull})",
    )
    g.add_argument(
        "--relabel-replay",
        type=_boolean,
        help=f"label replay frames by the parent (default {ft.relabel_replay})",
    )
    g.add_argument(
        "--parent-test-data",
        help="the parent's test set, to measure forgetting (default: a zoo parent's own)",
    )
    g = p.add_argument_group("training (TrainConfig; fine-tuning defaults)")
    for name, kind, text in _train_flags(FINETUNE_TRAIN_DEFAULTS):
        g.add_argument(f"--{name.replace('_', '-')}", dest=f"train_{name}", type=kind, help=text)
    p.set_defaults(func=_cmd_finetune)


def _replay_flags(g: argparse._ArgumentGroup, ft: Any) -> None:
    """The heads' and the replay's flags of ``finetune``."""
    g.add_argument(
        "--multihead",
        type=_boolean,
        help="the new level of theory gets its own head, the parent's is kept "
        f"(default {ft.multihead})",
    )
    g.add_argument("--new-head", help=f"name of the new head (default {ft.new_head})")
    g.add_argument(
        "--replay-data",
        help="labelled frames of the parent's level of theory to rehearse: 'auto' (the zoo "
        "parent's shipped replay set, else the new structures labelled by the parent), a "
        "file, or 'none' (default auto)",
    )
    g.add_argument(
        "--replay-elements", type=_names, help="only replay frames made of these, e.g. Cu,Ni"
    )
    g.add_argument(
        "--replay-config-types", type=_names, help="only replay frames of these config_type"
    )
    g.add_argument(
        "--replay-count",
        type=int,
        help="how many replay frames (default: as many as new training frames; 0: all)",
    )
    g.add_argument(
        "--replay-weight",
        type=float,
        help="loss weight of a replay frame (default: two heads, as many atoms of the new "
        "data's elements replayed as learnt; one head, 1)",
    )
    g.add_argument(
        "--replay-new-element-share",
        type=float,
        help="at least this share of replay frames hold an element of the new data "
        "(default: 0.5 with two heads, 0 with one)",
    )


def _cmd_finetune(args: argparse.Namespace) -> int:
    from ..training.finetune import finetune

    options = {
        k[len("train_") :]: v
        for k, v in vars(args).items()
        if k.startswith("train_") and v is not None
    }
    if args.replay_data == "none":
        args.replay_data = None
        options["replay_data"] = None
    for name in (
        "refit_e0",
        "multihead",
        "new_head",
        "replay_data",
        "replay_elements",
        "replay_config_types",
        "replay_count",
        "replay_weight",
        "replay_new_element_share",
        "trunk_lr_scale",
        "head_layers",
        "parent_pull",
        "relabel_replay",
        "parent_test_data",
    ):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)

    # progress on stderr (train()'s default); the report on stdout
    result = finetune(
        args.parent,
        args.data,
        out=args.out,
        name=args.name,
        keys=_keys(args),
        level_of_theory=args.level_of_theory,
        **options,
    )
    if result.model_path is not None:
        print((Path(args.out) / "finetune_report.md").read_text(), end="")
    return 0


def _read_config_file(path: str | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {"model": {}, "train": {}}
    text = Path(path).read_text()
    if Path(path).suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(
                f"{path}: YAML needs pyyaml (pip install pyyaml); or use JSON"
            ) from None
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict) or set(data) - {"model", "train"}:
        raise ValueError(f"{path} must hold a mapping with only 'model' and 'train' sections")
    return {"model": dict(data.get("model") or {}), "train": dict(data.get("train") or {})}


def _parse_elements(spec: Any) -> list[int]:
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        item = str(item).strip()
        if item.isdigit():
            out.append(int(item))
        elif item in atomic_numbers:
            out.append(atomic_numbers[item])
        else:
            raise ValueError(f"--elements: {item!r} is neither an element symbol nor a Z")
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    from ..data.frames import read_frames
    from ..model.config import ModelConfig
    from ..training.trainer import TrainConfig, train

    settings = _read_config_file(args.config)
    for section in ("model", "train"):
        prefix = f"{section}_"
        for key, value in vars(args).items():
            if key.startswith(prefix) and value is not None:
                settings[section][key[len(prefix) :]] = value
    model = settings["model"]
    if isinstance(model.get("radial_mlp"), str):
        model["radial_mlp"] = [int(w) for w in model["radial_mlp"].split(",") if w.strip()]
    keys = _keys(args)

    elements = args.elements or model.get("elements")
    elements = _parse_elements(elements) if elements is not None else None
    frames = read_frames(args.data, keys=keys, elements=elements)
    if elements is None:
        elements = sorted({int(z) for f in frames for z in f.atoms.numbers})
    model["elements"] = elements
    # E0 (the config file's, as the prior, or None), scale and shift are fitted by train()
    model_config = ModelConfig.from_dict(model)
    train_config = TrainConfig.from_dict({**settings["train"], "output_dir": args.out})

    result = train(  # progress on stderr (train()'s default); the report on stdout
        model_config,
        frames,
        train_config,
        name=args.name,
        level_of_theory=args.level_of_theory,
        data_description=args.description or f"labelled structures from {Path(args.data).name}",
    )
    if result.model_path is not None and int(os.environ.get("RANK", "0")) == 0:
        print((Path(args.out) / "test_report.md").read_text(), end="")
    return 0
