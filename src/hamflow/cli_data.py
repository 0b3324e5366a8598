"""The data-stage sub-commands of ``hamflow``: discover, validate, graph and convert.

Each ``add_<name>(subparsers)`` declares a sub-command's arguments and sets its handler; handlers
import the library lazily (start-up stays fast). :func:`add_set_argument` is the ``--set KEY=VALUE``
option shared with train and infer. :mod:`hamflow.cli` registers these with the other commands.
"""

from __future__ import annotations

import argparse
import sys


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


def add_set_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
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


# -- convert: other data formats -> the DeepH format (one sub-command per source format) ----------


def add_convert(subparsers: argparse._SubParsersAction) -> None:
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


# -- discover: structure ids -> manifest.json (+ dataset_split.json from a train.toml) -------------


def add_discover(subparsers: argparse._SubParsersAction) -> None:
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


def add_validate(subparsers: argparse._SubParsersAction) -> None:
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


def add_graph(subparsers: argparse._SubParsersAction) -> None:
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
    add_set_argument(parser, "override a TOML key, e.g. --set data.graph.parallel_num=4 (repeatable)")
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
