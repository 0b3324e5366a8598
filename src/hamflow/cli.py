"""The ``hamflow`` command: one sub-command per pipeline stage, thin wrappers over the library.

Each handler parses its arguments, calls the stage's library function and prints a short result.
Every expected failure is a :class:`hamflow.errors.HamflowError`, printed as one line on stderr
(``hamflow: error: ...``) with the error's exit code; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from hamflow import __version__
from hamflow.errors import HamflowError

Handler = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------------------------------
# Sub-commands. Each has an ``_add_<name>(subparsers)`` that declares its arguments and sets
# ``handler``; the handler imports the library lazily (start-up stays fast, JAX loads only when used).
# --------------------------------------------------------------------------------------------------


# -- convert: other data formats -> the DeepH format (one sub-command per source format) ----------


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser("convert", help="convert data from another format into the DeepH format")
    formats = convert.add_subparsers(dest="convert_format", metavar="FORMAT", required=True)
    legacy = formats.add_parser(
        "legacy",
        help="legacy DeepH/DeepH-E3 folders (element.dat, lat.dat, hamiltonians.h5, ...)",
        description="Convert legacy DeepH/DeepH-E3 data (1-based atoms, OpenMX orbital order) into "
        "the DeepH format. SRC is one structure folder (holding element.dat) or a tree of them.",
    )
    legacy.add_argument("src", metavar="SRC", help="legacy structure folder, or a folder of them")
    legacy.add_argument("dst", metavar="DST", help="output folder (same layout below it as SRC)")
    legacy.add_argument(
        "--depth",
        type=int,
        default=0,
        help="for a tree: folder levels between SRC and the structure folders (default 0: SRC/<sid>)",
    )
    legacy.set_defaults(handler=_run_convert_legacy)


def _run_convert_legacy(args: argparse.Namespace) -> int:
    from hamflow.data.legacy import convert_legacy, convert_legacy_tree, is_legacy_structure

    if is_legacy_structure(args.src):
        convert_legacy(args.src, args.dst)
        print(f"converted 1 structure: {args.src} -> {args.dst}")
    else:
        converted = convert_legacy_tree(args.src, args.dst, depth=args.depth)
        print(f"converted {len(converted)} structure(s): {args.src} -> {args.dst}")
    return 0


def _parse_override(text: str) -> tuple[str, object]:
    """``key=value`` with a TOML value (``3``, ``true``, ``"s"``); a bare word is taken as a string."""
    import tomllib

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def _add_set_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """The repeatable ``--set KEY=VALUE`` TOML override of train, graph and infer."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=_parse_override,
        metavar="KEY=VALUE",
        help=help_text,
    )


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the network from a DeepH-pack train.toml",
        description="Train (or resume, or fine-tune) an equivariant Hamiltonian network. A run directory "
        "that already holds checkpoints of the same configuration is resumed from its newest one.",
    )
    parser.add_argument("config", help="the DeepH-pack train.toml")
    parser.add_argument("--run-dir", help="run directory (default: <outputs_dir>/<timestamp>/)")
    parser.add_argument("--graph", help="a built graph store (default: build/reuse it per the TOML)")
    parser.add_argument("--split", help="dataset_split.json to use (default: per the TOML)")
    parser.add_argument(
        "--finetune-from",
        metavar="RUN_DIR",
        help="fine-tune from a previous run directory: new data, new optimizer, weights from its "
        "[process.train.continued] load_model_type checkpoint",
    )
    _add_set_argument(parser, "override a TOML key, e.g. --set process.train.max_epoch=5 (repeatable)")
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from hamflow.config.device import configure_jax_environment
    from hamflow.config.train_config import load_train_config, with_overrides

    cfg = load_train_config(args.config)
    overrides = dict(args.overrides)
    if args.finetune_from:
        overrides.update(
            {
                "process.train.continued.enable": True,
                "process.train.continued.previous_output_dir": str(args.finetune_from),
                "process.train.continued.new_training_data": True,
                "process.train.continued.new_optimizer": True,
            }
        )
    if overrides:
        cfg = with_overrides(cfg, overrides)
    configure_jax_environment(cfg.system)
    from hamflow.train.run import train

    result = train(cfg, run_dir=args.run_dir, graph_store=args.graph, split_path=args.split)
    print(f"{result.run_dir}: {result.epochs_done} epochs, best loss {result.best_loss:.6g}", end="")
    print(f" (stopped: {result.stopped_because})")
    return 0


# -- schedule: the learning-rate schedule of a train.toml, before any GPU hour is spent -----------


def _step_list(text: str) -> list[int]:
    """``0,10,500`` -> [0, 10, 500] (integers >= 0)."""
    try:
        steps = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not steps or min(steps) < 0:
        raise argparse.ArgumentTypeError(f"expected steps >= 0 separated by commas, got {text!r}")
    return steps


def _add_schedule(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schedule",
        help="print (and plot) the learning rate of a train.toml step by step",
        description="Print step,learning_rate CSV for the [process.train.scheduler] of a train.toml "
        "(max_epoch x K steps). reduce_on_plateau is shown assuming no plateau.",
    )
    parser.add_argument("config", help="the DeepH-pack train.toml")
    parser.add_argument(
        "--steps-per-epoch", type=int, required=True, metavar="K", help="training steps (batches) per epoch"
    )
    parser.add_argument(
        "--steps", type=_step_list, metavar="S1,S2,...", help="only these steps (default: every step)"
    )
    parser.add_argument("--plot", metavar="PNG", help="also plot the printed rows into this PNG file")
    parser.set_defaults(handler=_run_schedule)


def _run_schedule(args: argparse.Namespace) -> int:
    from hamflow.train.schedules import format_schedule_csv, plot_schedule, schedule_report

    report = schedule_report(args.config, steps_per_epoch=args.steps_per_epoch, steps=args.steps)
    if report.note:
        print(f"hamflow: note: {report.note}", file=sys.stderr)
    sys.stdout.write(format_schedule_csv(report.rows))
    if args.plot:
        plot_schedule(report.rows, args.plot, title=f"{report.type}, {report.total_steps} steps")
        print(f"hamflow: plot written to {args.plot}", file=sys.stderr)
    return 0


# -- check-config: validate a training (or inference) TOML and print it fully resolved -------------


def _add_check_config(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help="validate a train.toml (or infer.toml) and print it fully resolved",
        description="Validate a DeepH-pack training TOML (or, with --infer, an inference TOML) and print "
        "the fully resolved TOML (defaults filled, aliases resolved). Exit 0 when valid; otherwise print "
        "one line naming the key, the bad value and what is allowed, and exit 2.",
    )
    parser.add_argument("config", metavar="TOML", help="the TOML file to check")
    parser.add_argument("--infer", action="store_true", help="check an inference TOML instead")
    parser.set_defaults(handler=_run_check_config)


def _run_check_config(args: argparse.Namespace) -> int:
    if args.infer:
        from hamflow.config.infer_config import dump_infer_config, load_infer_config

        print(dump_infer_config(load_infer_config(args.config)), end="")
    else:
        from hamflow.config.train_config import dump_train_config, load_train_config

        print(dump_train_config(load_train_config(args.config)), end="")
    return 0


# -- discover: structure ids -> manifest.json (+ dataset_split.json from a train.toml) -------------


def _add_discover(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "discover",
        help="find the structures under inputs_dir/dft; write manifest.json and dataset_split.json",
        description="Walk inputs_dir/dft exactly data_dir_depth levels deep and write DIR/manifest.json "
        "(sorted structure ids: folders holding POSCAR and info.json). With a train.toml also write "
        "DIR/dataset_split.json (from train/validate/test_size and random_seed, or the checked "
        "dataset_split_json). Folders lacking POSCAR or info.json are reported, one line each; with a "
        'train.toml and [data.dft] on_bad_structure = "fail" they stop discovery.',
    )
    parser.add_argument("config", nargs="?", metavar="TRAIN.toml", help="the DeepH-pack train.toml")
    parser.add_argument("--inputs-dir", help="without a TOML: the inputs folder (holding dft/)")
    parser.add_argument("--depth", type=int, help="without a TOML: data_dir_depth (default 0)")
    parser.add_argument(
        "--out", metavar="DIR", help="output folder (default with a TOML: <outputs_dir>/discover/)"
    )
    parser.set_defaults(handler=_run_discover)


def _run_discover(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hamflow.data.discover import (
        incomplete_reason,
        no_structures_error,
        scan_dft_dir,
        stray_reason,
        write_manifest,
    )
    from hamflow.errors import ConfigError, DataError, os_errors

    cfg = None
    if args.config:
        if args.inputs_dir is not None or args.depth is not None:
            raise ConfigError(
                "--inputs-dir/--depth", "give either TRAIN.toml or --inputs-dir/--depth, not both"
            )
        from hamflow.config.train_config import load_train_config

        cfg = load_train_config(args.config)
        inputs_dir, depth = cfg.data.inputs_dir, cfg.data.dft.data_dir_depth
        out = Path(args.out) if args.out else Path(cfg.data.outputs_dir) / "discover"
    else:
        if args.inputs_dir is None or args.out is None:
            raise ConfigError("--inputs-dir", "without TRAIN.toml, give --inputs-dir DIR and --out DIR")
        inputs_dir, depth, out = args.inputs_dir, args.depth or 0, Path(args.out)
    dft_dir = Path(inputs_dir) / "dft"
    found = scan_dft_dir(dft_dir, depth)
    for stray in found.strays:
        print(f"hamflow: warning: {stray_reason(dft_dir, stray)}", file=sys.stderr)
    if not found.ids:
        raise no_structures_error(dft_dir, depth, found)
    lines = [incomplete_reason(dft_dir, sid) for sid in found.incomplete]
    if lines and cfg is not None and cfg.data.dft.on_bad_structure == "fail":
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        raise DataError(f'{lines[0]}{more}; fix the folders or set [data.dft] on_bad_structure = "skip"')
    for line in lines:
        print(f"hamflow: warning: skipping {line}", file=sys.stderr)
    with os_errors("write the manifest", out / "manifest.json"):
        write_manifest(
            out / "manifest.json",
            inputs_dir=inputs_dir,
            depth=depth,
            ids=found.ids,
            incomplete=found.incomplete,
        )
    skipped = f", {len(found.incomplete)} incomplete folder(s) skipped" if found.incomplete else ""
    print(f"discovered {len(found.ids)} structures in {dft_dir} (depth {depth}){skipped}")
    print(f"manifest -> {out / 'manifest.json'}")
    if cfg is not None:
        from hamflow.data.split import load_split, make_split, write_split

        loader = cfg.process.train.dataloader
        if loader.dataset_split_json:
            split = load_split(loader.dataset_split_json, found.ids)
        else:
            split = make_split(
                found.ids,
                train_size=loader.train_size,
                validate_size=loader.validate_size,
                test_size=loader.test_size,
                seed=cfg.system.random_seed,
            )
        with os_errors("write the split", out / "dataset_split.json"):
            write_split(out / "dataset_split.json", split)
        sizes = ", ".join(f"{part} {len(ids)}" for part, ids in split.items())
        print(f"split: {sizes} -> {out / 'dataset_split.json'}")
    return 0


# -- validate: check every structure's files (present, parseable, consistent) ---------------------


def _shard_spec(text: str) -> tuple[int, int]:
    """``K/N`` -> (K, N): the K-th (0-based) of N shards."""
    shard, sep, total = text.partition("/")
    try:
        k, n = int(shard), int(total)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 0/4, got {text!r}") from None
    if not sep or n < 1 or not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, got {text!r}")
    return k, n


def _add_validate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check every structure under INPUTS_DIR/dft: files present, parseable, consistent",
        description="Check each structure: files present and parseable, orbital counts consistent "
        "between info.json, POSCAR and the blocks, atom indices in range, block shapes, atom_pairs equal "
        "across H/S/Rho, mirror pairs with M(R)ij = M(-R)ji^T, no NaN/Inf, on-site overlaps positive. "
        "Prints one line per bad structure, then a summary; exit 0 when all are sound, else 1.",
    )
    parser.add_argument("inputs_dir", metavar="INPUTS_DIR", help="the inputs folder (holding dft/)")
    parser.add_argument("--depth", type=int, help="data_dir_depth (default: the manifest's, else 0)")
    parser.add_argument("--manifest", metavar="M", help="validate the ids of this manifest.json")
    parser.add_argument(
        "--shard", type=_shard_spec, metavar="K/N", help="only the K-th (0-based) of N contiguous shards"
    )
    parser.add_argument("--report", metavar="OUT.json", help="also write the full report as JSON")
    parser.add_argument("--allow-bad", action="store_true", help="exit 0 even when structures are bad")
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="J", help="parallel processes (<= 0: all cores)"
    )
    parser.add_argument(
        "--quantities",
        metavar="Q1,Q2",
        help="matrix files to require and check, e.g. S for inference inputs (default: H,S required, "
        "density matrix checked when present)",
    )
    parser.add_argument(
        "--mirror-atol",
        type=float,
        default=1e-6,
        help="tolerance of M(R)ij = M(-R)ji^T, times max(1, largest |entry| of the block) (default 1e-6)",
    )
    parser.set_defaults(handler=_run_validate)


def _run_validate(args: argparse.Namespace) -> int:
    from hamflow.data.discover import (
        no_structures_error,
        read_manifest,
        scan_dft_dir,
        shard_ids,
        stray_reason,
    )
    from hamflow.data.validate import validate_tree
    from hamflow.errors import ConfigError, DataError

    depth = args.depth
    ids = None
    if args.manifest:
        manifest = read_manifest(args.manifest)
        if depth is not None and depth != manifest.depth:
            raise ConfigError(
                "--depth", f"= {depth} but the manifest {args.manifest} was made with depth {manifest.depth}"
            )
        depth, ids = manifest.depth, manifest.ids
    depth = 0 if depth is None else depth
    dft_dir = f"{args.inputs_dir}/dft"
    if ids is None:
        found = scan_dft_dir(dft_dir, depth)
        for stray in found.strays:
            print(f"hamflow: warning: {stray_reason(dft_dir, stray)}", file=sys.stderr)
        if not found.ids:  # zero structures is an error, whatever the incomplete folders
            raise no_structures_error(dft_dir, depth, found)
        ids = sorted(found.ids + found.incomplete)
    elif not ids and args.shard is None:
        raise DataError("the manifest lists no structure", file=args.manifest)
    if args.shard is not None:
        ids = shard_ids(ids, *args.shard)
    quantities = [q.strip() for q in args.quantities.split(",") if q.strip()] if args.quantities else None
    report = validate_tree(
        args.inputs_dir,
        depth=depth,
        ids=ids,
        quantities=quantities,
        n_jobs=args.jobs,
        mirror_atol=args.mirror_atol,
    )
    if args.report:
        report.write(args.report)
    for line in report.bad_lines():
        print(line)
    shard = f" (shard {args.shard[0]}/{args.shard[1]})" if args.shard is not None else ""
    print(report.summary() + shard)
    return 1 if report.bad and not args.allow_bad else 0


# -- graph: DFT structures -> graph store (whole, one shard, or shards joined) --------------------


def _add_graph(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "graph",
        help="build the graph store of a train.toml (or one shard of it, or join shards)",
        description="Discover, validate and turn the structures of a train.toml into its graph store at "
        "inputs_dir/graph/<dataset_name>.<graph_type>.<storage_type>.h5 and print its path. A store "
        "already built from the same inputs and settings is reused; a stale one is rebuilt. With --shard "
        "K/N only the K-th of N slices of the structures is built (to --out); with --join the shard "
        "stores are concatenated into one store.",
    )
    parser.add_argument("config", metavar="TRAIN.toml", help="the DeepH-pack train.toml")
    parser.add_argument(
        "--ids-from", metavar="MANIFEST", help="take the structure ids from this manifest.json"
    )
    parser.add_argument(
        "--reports",
        nargs="+",
        metavar="REPORT.json",
        help="validation reports (hamflow validate --report) of the structures: use their ok ids, "
        "do not validate again",
    )
    parser.add_argument(
        "--shard",
        type=_shard_spec,
        metavar="K/N",
        help="build only the K-th (0-based) of N contiguous shards",
    )
    parser.add_argument("--join", nargs="+", metavar="SHARD.h5", help="join these shard stores, in order")
    parser.add_argument("--out", metavar="PATH", help="output store (default: the DeepH-pack place)")
    _add_set_argument(parser, "override a TOML key, e.g. --set data.graph.parallel_num=4 (repeatable)")
    parser.set_defaults(handler=_run_graph)


def _run_graph(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hamflow.config.logging_setup import configure_logging
    from hamflow.config.train_config import load_train_config, with_overrides
    from hamflow.errors import ConfigError

    cfg = load_train_config(args.config)
    if args.overrides:
        cfg = with_overrides(cfg, dict(args.overrides))
    configure_logging(None, cfg.system.log_level)
    if args.join:
        if args.shard or args.ids_from or args.reports:
            raise ConfigError(
                "--join", "joins finished shards: give it without --shard, --ids-from, --reports"
            )
        from hamflow.graph.store import join_shards, store_path

        graph = cfg.data.graph
        out = Path(
            args.out
            or store_path(cfg.data.inputs_dir, graph.dataset_name, graph.graph_type, graph.storage_type)
        )
        join_shards([Path(p) for p in args.join], out)
        print(out)
        return 0
    from hamflow.graph.stage import build_graph_store

    ids = None
    if args.ids_from:
        from hamflow.data.discover import read_manifest

        manifest = read_manifest(args.ids_from)
        ids = sorted(manifest.ids + manifest.incomplete)  # incomplete folders meet on_bad_structure
    reports = None
    if args.reports:
        from hamflow.data.validate import ValidationReport

        reports = [ValidationReport.read(path) for path in args.reports]
    out = build_graph_store(
        cfg, ids=ids, out=Path(args.out) if args.out else None, shard=args.shard, reports=reports
    )
    print(out)
    return 0


# -- infer: a trained model -> hamiltonian_pred.h5 for every structure of an infer.toml ------------


def _add_infer(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "infer",
        help="predict H (or Rho) with a trained model for every structure of an infer.toml",
        description="Run a DeepH-pack infer.toml: build (or reuse) the graphs of the structures under "
        "inputs_dir/dft (POSCAR + info.json, with overlap.h5 or not), load the [model] checkpoint, "
        "predict, make the blocks Hermitian and write dft/<sid>/hamiltonian_pred.h5 per structure "
        '(into the run folder, or beside the inputs with output_into = "to_input").',
    )
    parser.add_argument("config", metavar="INFER.toml", help="the DeepH-pack inference TOML")
    parser.add_argument("--run-dir", help="run folder (default: <outputs_dir>/<timestamp>/)")
    parser.add_argument(
        "--split", metavar="SPLIT.json", help="only the structures of one part of a dataset_split.json"
    )
    parser.add_argument("--part", default="test", help="the part of --split to predict (default test)")
    _add_set_argument(parser, "override a TOML key, e.g. --set model.model_dir=RUN/model (repeatable)")
    parser.set_defaults(handler=_run_infer)


def _run_infer(args: argparse.Namespace) -> int:
    from hamflow.config.device import configure_jax_environment
    from hamflow.config.infer_config import load_infer_config, with_overrides

    cfg = load_infer_config(args.config)
    if args.overrides:
        cfg = with_overrides(cfg, dict(args.overrides))
    configure_jax_environment(cfg.system)
    from hamflow.infer.stage import run_inference

    result = run_inference(cfg, run_dir=args.run_dir, ids=_split_ids(args.split, args.part))
    if result.only_graph:
        print(f"graph store -> {result.graph_store} (only_save_graph: no prediction)")
    else:
        print(f"{len(result.predicted)} structure(s) predicted -> {result.output_dir}")
    print(f"run folder -> {result.run_dir}")
    return 0


# -- evaluate: predictions against DFT files -> metrics.json and CSV tables -----------------------


def _k_grid(text: str) -> tuple[int, int, int]:
    """``4,4,1`` -> (4, 4, 1) (three integers >= 1)."""
    try:
        values = tuple(int(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three integers such as 4,4,1, got {text!r}") from None
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected three integers >= 1 such as 4,4,1, got {text!r}")
    return values  # type: ignore[return-value]


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="compare predicted H (or Rho) with DFT files: MAE per structure, element and shell pair, "
        "eigenvalues",
        description="Compare every PRED/<sid>/hamiltonian_pred.h5 (or density_matrix_pred.h5) with "
        "DFT/<sid>/ (PRED/dft and DFT/dft are used when they exist). Writes OUT/metrics.json, "
        "per_structure.csv, per_element_pair.csv, per_shell_pair.csv, eigenvalues.csv, parity.npz and "
        "bands/<sid>.npz; errors in meV. Predictions without DFT data are listed as not compared.",
    )
    parser.add_argument("--dft", required=True, metavar="DFT_DIR", help="the DFT structures (holding <sid>/)")
    parser.add_argument(
        "--pred", required=True, metavar="PRED_DIR", help="the predictions (an infer run folder or its dft/)"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--depth", type=int, default=0, help="data_dir_depth of both trees (default 0)")
    parser.add_argument("--target", choices=("H", "Rho"), help="what to compare (default: H if present)")
    parser.add_argument(
        "--gauge",
        action="store_true",
        help="also report the gauge-corrected error |dH - mu S|, mu = <dH,S>/<S,S> per structure (the "
        "tables then hold the corrected errors)",
    )
    parser.add_argument("--no-bands", action="store_true", help="skip the eigenvalue / band errors")
    parser.add_argument(
        "--window",
        type=float,
        default=2.0,
        help="eV around the Fermi level for near-Fermi errors (default 2)",
    )
    parser.add_argument(
        "--k-grid",
        type=_k_grid,
        default=(4, 4, 4),
        metavar="N1,N2,N3",
        help="k grid for periodic structures without K_PATH (default 4,4,4)",
    )
    parser.add_argument(
        "--split", metavar="SPLIT.json", help="only the structures of one part of a dataset_split.json"
    )
    parser.add_argument("--part", default="test", help="the part of --split to evaluate (default test)")
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="J", help="parallel processes (<= 0: all cores)"
    )
    parser.set_defaults(handler=_run_evaluate)


def _split_ids(split_path: str | None, part: str) -> list[str] | None:
    """The ids of one part of a dataset_split.json (None without a file)."""
    if not split_path:
        return None
    import json

    from hamflow.errors import ConfigError

    try:
        with open(split_path, encoding="utf-8") as handle:
            split = json.load(handle)
    except (OSError, ValueError) as error:
        raise ConfigError("--split", f"= {split_path!r} cannot be read as JSON: {error}") from None
    if not isinstance(split, dict) or not isinstance(split.get(part), list):
        parts = ", ".join(sorted(split)) if isinstance(split, dict) else "none"
        raise ConfigError("--part", f"= {part!r} is not a list in {split_path} (parts: {parts})")
    return [str(sid) for sid in split[part]]


def _run_evaluate(args: argparse.Namespace) -> int:
    from hamflow.infer.evaluate import evaluate_predictions

    result = evaluate_predictions(
        args.dft,
        args.pred,
        out_dir=args.out,
        depth=args.depth,
        target=args.target,
        standardize_gauge=args.gauge,
        bands=not args.no_bands,
        window=args.window,
        k_grid=args.k_grid,
        ids=_split_ids(args.split, args.part),
        jobs=args.jobs,
    )
    _print_evaluation(result)
    return 0


def _print_evaluation(result) -> None:  # an hamflow.infer.evaluate.EvaluationResult
    """The MAE table of ``hamflow evaluate`` and ``hamflow test``: overall, then per element pair."""
    overall = result.summary.overall
    unit = "meV" if result.target == "H" else "x1e-3 electrons"
    gauge = " (gauge-corrected)" if result.standardize_gauge else ""
    print(
        f"{len(result.summary.structures)} structure(s), {overall.count} entries: "
        f"MAE {overall.mae * 1000:.4g} {unit}{gauge}, max {overall.maximum * 1000:.4g} {unit}"
    )
    pairs = sorted(result.summary.element_pairs.items())
    if pairs:
        print(f"  {'pair':<8} {'entries':>10} {'MAE ' + unit:>16} {'max ' + unit:>16}")
        for (first, second), stats in pairs:
            print(
                f"  {first + '-' + second:<8} {stats.count:>10} {stats.mae * 1000:>16.4g} "
                f"{stats.maximum * 1000:>16.4g}"
            )
    for sid, reason in result.not_compared.items():
        print(f"hamflow: note: structure {sid} not compared: {reason}", file=sys.stderr)
    print(f"results -> {result.out_dir}")


# -- test: a trained run on one part of a split -> predictions, evaluation and the MAE table ------


def _add_test(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "test",
        help="one-shot test of a trained run (like DeePMD-kit's `dp test`): infer + evaluate, MAE table",
        description="Predict with RUN_DIR's model (as `hamflow infer`) every structure of one part of a "
        "dataset_split.json (default: the test part of RUN_DIR/dataset_split.json; without one, every "
        "structure under --data), compare with the DFT files (as `hamflow evaluate`) and print the MAE "
        "table. OUT holds the inference run (deepx.log, infer.toml, predictions.json, "
        "dft/<sid>/hamiltonian_pred.h5) and evaluation/ (metrics.json, the CSV tables); it appears "
        "complete or not at all. Device, float type and data_dir_depth default to the run's train.toml.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory (or its model/)")
    parser.add_argument(
        "--data", required=True, metavar="DIR", help="the inputs folder holding dft/ (or the dft/ folder)"
    )
    parser.add_argument(
        "--split", metavar="SPLIT.json", help="dataset_split.json (default: RUN_DIR/dataset_split.json)"
    )
    parser.add_argument("--part", default="test", help="the part of the split to test (default test)")
    parser.add_argument(
        "--out", metavar="DIR", help="output folder (default: a new temporary folder, printed)"
    )
    parser.add_argument("--device", help="e.g. cpu*1 or gpu*1 (default: the run's [system].device)")
    parser.add_argument("--depth", type=int, help="data_dir_depth (default: the run's, else 0)")
    parser.add_argument(
        "--load-model-type", choices=("best", "latest"), default="best", help="checkpoint (default best)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="structures per batch (default 1)")
    parser.add_argument("--no-bands", action="store_true", help="skip the eigenvalue / band errors")
    parser.set_defaults(handler=_run_test)


def _test_out_dir(out: str | None):
    """The final output folder: ``--out`` (new, empty, or an earlier test output), else a new tmp one."""
    import tempfile
    from pathlib import Path

    from hamflow.errors import ConfigError
    from hamflow.infer.stage import PREDICTIONS_FILE

    if out is None:
        return Path(tempfile.mkdtemp(prefix="hamflow-test-")) / "out"
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError("--out", f"= {out!r} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / PREDICTIONS_FILE).is_file():
        raise ConfigError("--out", f"= {out!r} is a non-empty folder that no `hamflow test` wrote")
    return path


def _run_test(args: argparse.Namespace) -> int:
    import os
    import tempfile
    from pathlib import Path

    from hamflow.atomic import atomic_dir
    from hamflow.config.device import configure_jax_environment
    from hamflow.config.infer_config import parse_infer_config
    from hamflow.config.toml_io import read_toml
    from hamflow.errors import ConfigError
    from hamflow.infer.evaluate import resolve_dft_dir
    from hamflow.train.saved_model import resolve_model_dir

    run = Path(args.run_dir)
    if not run.is_dir():
        raise ConfigError("RUN_DIR", f"= {args.run_dir!r} is not a folder")
    layout = resolve_model_dir(run)
    if not Path(args.data).is_dir():
        raise ConfigError("--data", f"= {args.data!r} is not a folder")
    dft_dir = resolve_dft_dir(args.data, "--data").resolve()
    trained = read_toml(layout.train_toml) if layout.train_toml.is_file() else {}
    split = args.split
    if split is None and layout.split.is_file():
        split = str(layout.split)
    ids = _split_ids(split, args.part)
    if ids is not None and not ids:
        raise ConfigError("--part", f"= {args.part!r} holds no structures in {split}")
    system = {key: value for key, value in trained.get("system", {}).items() if key != "note"}
    if args.device is not None:
        system["device"] = args.device
    system.setdefault("device", "cpu*1")
    dft = dict(trained.get("data", {}).get("dft", {}))
    if args.depth is not None:
        dft["data_dir_depth"] = args.depth
    out = _test_out_dir(args.out)
    with tempfile.TemporaryDirectory(prefix="hamflow-test-inputs-") as inputs, atomic_dir(out) as build:
        # The graph store goes under inputs_dir/graph: a scratch folder whose dft/ leads to --data, so
        # that testing never writes into the data folder.
        os.symlink(dft_dir, Path(inputs) / "dft", target_is_directory=True)
        cfg = parse_infer_config(
            {
                "system": system,
                "data": {
                    "inputs_dir": inputs,
                    "outputs_dir": str(build),
                    "dft": dft,
                    "graph": {"dataset_name": "TEST"},
                },
                "model": {"model_dir": str(layout.model), "load_model_type": args.load_model_type},
                "process": {"infer": {"dataloader": {"batch_size": args.batch_size}}},
            },
            source=None,
        )
        configure_jax_environment(cfg.system)
        from hamflow.infer.evaluate import evaluate_predictions
        from hamflow.infer.stage import run_inference

        inferred = run_inference(cfg, run_dir=build, ids=ids)
        result = evaluate_predictions(
            dft_dir,
            inferred.output_dir,
            out_dir=build / "evaluation",
            depth=cfg.data.dft.data_dir_depth,
            bands=not args.no_bands,
            ids=inferred.predicted,
        )
    what = f"part {args.part!r} of {split}" if split else f"every structure under {dft_dir}"
    print(f"{len(inferred.predicted)} structure(s) tested ({what}), checkpoint {inferred.checkpoint}")
    result.out_dir = out / "evaluation"
    _print_evaluation(result)
    print(f"predictions -> {out / 'dft'}")
    return 0


# -- plot: PNG figures of a run directory (loss, learning rate) and of an evaluation ---------------


def _add_plot(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="PNG figures: loss/learning-rate curves of a run, parity, element-pair heat map, bands",
        description="Make every figure the given folders allow: from a run directory (metrics.csv) "
        "training_curves.png; from a `hamflow evaluate` folder parity.png, element_pair_mae.png and "
        "bands_<sid>.png for periodic structures with a K_PATH.",
    )
    parser.add_argument("sources", nargs="+", metavar="RUN_DIR|EVAL_DIR", help="run or evaluation folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for the PNG files")
    parser.set_defaults(handler=_run_plot)


def _run_plot(args: argparse.Namespace) -> int:
    from hamflow.infer.plots import plot_all

    for path in plot_all(args.sources, args.out):
        print(path)
    return 0


# (sub-command sections go here, one per command)


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_train,
    _add_schedule,
    _add_check_config,
    _add_discover,
    _add_validate,
    _add_graph,
    _add_infer,
    _add_evaluate,
    _add_test,
    _add_plot,
    # (each section appends its _add_<name> here)
    _add_convert,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hamflow`` command with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="hamflow",
        description="DFT calculations -> trained E(3)-equivariant Hamiltonian network (DeepH method).",
    )
    parser.add_argument("--version", action="version", version=f"hamflow {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except HamflowError as error:
        print(f"hamflow: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt as interrupt:  # hamflow.errors.Interrupted carries its line and exit code
        message = str(interrupt)
        print(f"hamflow: error: {message}" if message else "hamflow: interrupted", file=sys.stderr)
        return int(getattr(interrupt, "exit_code", 130))
    except OSError as error:  # one the stage did not name itself: still one line, never a traceback
        print(f"hamflow: error: {os_error_line(args.command, error)}", file=sys.stderr)
        return 1


def os_error_line(command: str, error: OSError) -> str:
    """``hamflow train: cannot complete: No space left on device (/path)`` for an unnamed OS error."""
    reason = error.strerror or str(error) or type(error).__name__
    paths = " -> ".join(str(p) for p in (error.filename, error.filename2) if p is not None)
    return f"hamflow {command}: cannot complete: {reason}" + (f" ({paths})" if paths else "")


if __name__ == "__main__":
    sys.exit(main())
