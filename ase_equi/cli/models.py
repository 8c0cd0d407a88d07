"""``ase-equi info | upgrade | zoo | import-mace | eval``: model files and predictions.

Each command is a thin layer over the library: :func:`ase_equi.io.model_file.read_header`,
:func:`ase_equi.io.model_file.upgrade_model_file`, :func:`ase_equi.zoo.zoo_table`,
:func:`ase_equi.io.mace.load_mace_model` with :func:`ase_equi.save_model`, and
:func:`ase_equi.evaluate` with :func:`ase_equi.label_errors`. Results go to stdout, progress
to stderr.
"""

from __future__ import annotations

import argparse
import json


def _cmd_info(args: argparse.Namespace) -> int:
    from ..io.model_file import read_header, read_weights, render_card
    from ..io.model_header import model_paths
    from ..zoo import resolve

    path = resolve(args.model)
    header = read_header(path)  # hash-checked: the card is rendered from it, not from NAME.md
    if header.get("committee") is None:  # the weights too: a damaged file is named
        read_weights(header, model_paths(path)[0])
    print(render_card(header), end="")
    if args.json:
        print(json.dumps(header, indent=2, ensure_ascii=False))
    return 0


def _cmd_upgrade(args: argparse.Namespace) -> int:
    from ..io.model_file import FORMAT_VERSION, read_header, read_weights, upgrade_model_file
    from ..io.model_header import model_paths

    for name in args.files:
        path = model_paths(name)[0]
        header = read_header(path)
        if header["format_version"] == FORMAT_VERSION:
            read_weights(header, path)  # refuses a damaged file as the upgrade would
            print(f"{path} is already format version {FORMAT_VERSION} (weights hash checked)")
        else:
            print(f"upgraded {upgrade_model_file(name)} to format version {FORMAT_VERSION}")
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    from ..zoo import zoo_table

    print(zoo_table(), end="")
    return 0


def _cmd_import_mace(args: argparse.Namespace) -> int:
    from ..io.mace import load_mace_model
    from ..io.model_file import save_model

    loaded = load_mace_model(args.model, head=args.head)
    out = save_model(loaded.model, args.output, card=loaded.card)
    print(f"wrote {out} (+ .safetensors, .md) from {args.model}, head {loaded.card['head']!r}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ase.io import write

    from ..data.extxyz import read_structures
    from ..data.frames import DataKeys
    from ..evaluate import evaluate
    from ..prediction_errors import has_energy_labels, label_errors

    structures = [item.atoms for item in read_structures(args.structures)]
    predicted = evaluate(
        structures,
        args.model,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        head=args.head,
        verbose=not args.quiet,
    )
    for k, atoms in enumerate(predicted):
        energy = atoms.get_potential_energy()
        fmax = float((atoms.get_forces() ** 2).sum(1).max() ** 0.5)
        print(
            f"{k:5d} {atoms.get_chemical_formula():>16s}  E = {energy:.6f} eV  "
            f"E/atom = {energy / len(atoms):.6f} eV  max|F| = {fmax:.4f} eV/Å"
        )
    if args.output:
        write(args.output, predicted, format="extxyz")
        print(f"wrote predictions of {len(predicted)} structures to {args.output}")
    keys = DataKeys(args.energy_key, args.forces_key, args.stress_key)
    if has_energy_labels(structures, keys):
        print()
        print(label_errors(predicted, structures, keys=keys).table(), end="")
    else:
        print(f"no '{keys.energy}' labels in {args.structures}: predictions only")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``info``, ``upgrade``, ``zoo``, ``import-mace`` and ``eval`` to the sub-commands."""
    p = subparsers.add_parser("info", help="print a model file's card")
    p.add_argument("model", help="a zoo name, or NAME.json, NAME.safetensors or NAME")
    p.add_argument("--json", action="store_true", help="also print the full JSON header")
    p.set_defaults(func=_cmd_info)

    p = subparsers.add_parser("upgrade", help="rewrite format-1 model files as format 2, in place")
    p.add_argument("files", nargs="+", help="NAME.json (or NAME, NAME.safetensors)")
    p.set_defaults(func=_cmd_upgrade)

    p = subparsers.add_parser("zoo", help="list the bundled models (name, elements, errors)")
    p.set_defaults(func=_cmd_zoo)

    p = subparsers.add_parser("import-mace", help="convert a MACE .model file to our safe format")
    p.add_argument("model", help="MACE .model file (read without executing pickled code)")
    p.add_argument("-o", "--output", required=True, help="output stem, e.g. my-model")
    p.add_argument("--head", default=None, help="head of a multi-head model (default: MACE's)")
    p.set_defaults(func=_cmd_import_mace)

    p = subparsers.add_parser(
        "eval", help="predictions for a data file; errors against its labels where present"
    )
    p.add_argument("model", help="a zoo name or a model file")
    p.add_argument("structures", help="extxyz, ASE .db or any file ase.io.read understands")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--head", default=None, help="head of a multi-head model (default: its own)")
    p.add_argument("-o", "--output", help="write the structures with predictions (extxyz)")
    p.add_argument("--energy-key", default="energy", help="name of the energy label")
    p.add_argument("--forces-key", default="forces", help="name of the forces label")
    p.add_argument("--stress-key", default="stress", help="name of the stress label")
    p.add_argument(
        "--batch-size",
        default="auto",
        type=lambda v: v if v == "auto" else int(v),
        help="structures per model call, or 'auto' (to a memory budget; default)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line on stderr")
    p.set_defaults(func=_cmd_eval)
