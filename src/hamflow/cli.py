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
from hamflow.cli_data import add_convert, add_discover, add_graph, add_set_argument, add_validate
from hamflow.errors import HamflowError

Handler = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------------------------------
# Sub-commands. Each has an ``_add_<name>(subparsers)`` that declares its arguments and sets
# ``handler``; the handler imports the library lazily (start-up stays fast, JAX loads only when used).
# The data-stage commands (discover, validate, graph, convert) are in hamflow.cli_data.
# --------------------------------------------------------------------------------------------------


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
    add_set_argument(parser, "override a TOML key, e.g. --set process.train.max_epoch=5 (repeatable)")
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
    add_set_argument(parser, "override a TOML key, e.g. --set model.model_dir=RUN/model (repeatable)")
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


# -- bands: the band structure of one folder from its (predicted) H, dense or sparse shift-invert ----


def _add_bands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bands",
        help="band structure of one structure folder from hamiltonian_pred.h5 (dense, or sparse for "
        "large systems)",
        description="Eigenvalues of H(k) c = E S(k) c along a band path for PRED_DIR (hamiltonian_pred.h5; "
        "POSCAR, info.json, overlap.h5 from --structure-dir, default PRED_DIR). k: Gamma for molecules, "
        "else --k-path FILE, the folder's K_PATH, or ASE's path (--k-path auto). Solver: dense up to "
        "4000 orbitals, sparse shift-invert above (--solver forces one). Writes OUT/bands.npz and "
        "OUT/bands.png (OUT defaults to PRED_DIR).",
    )
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="the structure folder with the Hamiltonian")
    parser.add_argument("--k-path", metavar="FILE|auto", help="a K_PATH file, or auto (ASE's path)")
    parser.add_argument("--num-bands", type=int, metavar="K", help="states per k nearest --around "
                        "(default: all for dense, 20 for sparse)")  # fmt: skip
    parser.add_argument("--around", type=float, metavar="E_eV", help="target energy, eV (default: "
                        "info.json fermi_energy_eV)")  # fmt: skip
    parser.add_argument("--solver", choices=("auto", "dense", "sparse"), default="auto", help="default auto")
    parser.add_argument("--structure-dir", metavar="DIR", help="folder holding POSCAR, info.json, overlap.h5")
    parser.add_argument("--matrix", default="hamiltonian_pred.h5", help="the H file in PRED_DIR")
    parser.add_argument("--num-k", type=int, default=100, help="about how many k-points an auto path gets")
    parser.add_argument("--out", metavar="DIR", help="output folder (default PRED_DIR)")
    parser.add_argument("--no-plot", action="store_true", help="write bands.npz only")
    parser.set_defaults(handler=_run_bands)


def _run_bands(args: argparse.Namespace) -> int:
    from hamflow.infer.band_structure import band_structure_command

    bands, written = band_structure_command(
        args.pred_dir,
        out_dir=args.out,
        plot=not args.no_plot,
        structure_dir=args.structure_dir,
        matrix_file=args.matrix,
        k_path=args.k_path,
        num_bands=args.num_bands,
        around=args.around,
        solver=args.solver,
        num_k=args.num_k,
    )
    per_k = float(bands.seconds_per_k.mean())
    print(
        f"{bands.sid}: {bands.eigenvalues.shape[1]} band(s) at {len(bands.path.k_frac)} k-point(s) "
        f"({bands.path.source}), {bands.solver} solver, N = {bands.size}, {per_k:.3g} s per k-point"
    )
    for path in written:
        print(path)
    return 0


# (sub-command sections go here, one per command)


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_train,
    _add_schedule,
    _add_check_config,
    add_discover,
    add_validate,
    add_graph,
    _add_infer,
    _add_evaluate,
    _add_test,
    _add_plot,
    _add_bands,
    # (each section appends its _add_<name> here)
    add_convert,
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
