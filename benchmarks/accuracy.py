"""Accuracy within a wall-clock budget on any DeepH-format folder: train, infer, evaluate, one table.

    python benchmarks/accuracy.py --data DIR --minutes M [--config TOML] [--depth N] [--json OUT]

DIR holds ``dft/<...>/<sid>/`` structures (POSCAR, info.json, overlap.h5, hamiltonian.h5). The split
is ``DIR/dataset_split.json`` when present, else 75 / 12.5 / 12.5 % drawn with ``--seed``. The
training configuration is ``--config`` (default: ``config/accuracy.toml``, hamflow's recommended
accuracy configuration) with the data keys pointed at DIR; ``max_epoch`` is chosen to fill the budget.

The budget M (minutes) covers everything up to a trained model: the graph stage, a calibration
run (the TOML as given, stopped after two epochs: it measures the start-up, the compile and the time
per epoch, and fills the persistent compilation cache), and the real run, whose ``max_epoch`` is set
so that it ends inside the budget (a run still going at the deadline gets SIGTERM, saves and stops;
the best model is used).
The learning-rate schedule is a runtime input of the compiled step, so the real run reuses the
calibration's compiled programs. Inference and evaluation of the test split come after, timed apart.

Everything runs through the ``hamflow`` commands a user would type (in subprocesses), in a work
folder (``--work``, default a temporary one) that also holds the graph store, so DIR is only read.
Printed: structures per split, parameters, optimizer steps, wall and CPU seconds, test MAE of H in
meV (plain and gauge-corrected), on-site and off-site MAE, occupied-orbital-energy MAE (generalized
eigenproblem with the DFT overlap, at Gamma for molecules), and the learning curve (validation MAE
against steps). ``--json OUT`` writes the same figures.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tomli_w

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "config" / "accuracy.toml"
HAMFLOW = [sys.executable, "-c", "import sys; from hamflow.cli import main; sys.exit(main(sys.argv[1:]))"]
CALIBRATION_EPOCHS = 2
CURVE_POINTS = 12


def find_depth(data: Path) -> int:
    """data_dir_depth of DIR: folder levels between ``dft/`` and the first structure found."""
    for depth in range(8):  # glob follows symbolic links (rglob does not)
        if next((data / "dft").glob("/".join(["*"] * (depth + 1)) + "/POSCAR"), None) is not None:
            return depth
    raise SystemExit(f"accuracy.py: no POSCAR under {data / 'dft'}: not a DeepH-format folder")


def structure_ids(data: Path, depth: int) -> list[str]:
    """Sorted structure ids ('a/b/sid' for depth > 0) of every folder holding a POSCAR."""
    ids = []
    for poscar in (data / "dft").glob("/".join(["*"] * (depth + 1)) + "/POSCAR"):
        ids.append(poscar.parent.relative_to(data / "dft").as_posix())
    return sorted(ids)


def make_split(data: Path, depth: int, seed: int, out: Path) -> dict[str, list[str]]:
    """DIR/dataset_split.json if present, else 75 / 12.5 / 12.5 % by ``seed``; written to ``out``."""
    given = data / "dataset_split.json"
    if given.is_file():
        split = json.loads(given.read_text())
    else:
        ids = structure_ids(data, depth)
        order = np.random.default_rng(seed).permutation(len(ids))
        n_train, n_validate = round(0.75 * len(ids)), round(0.125 * len(ids))
        split = {
            "train": sorted(ids[k] for k in order[:n_train]),
            "validate": sorted(ids[k] for k in order[n_train : n_train + n_validate]),
            "test": sorted(ids[k] for k in order[n_train + n_validate :]),
        }
    split = {part: list(split.get(part, [])) for part in ("train", "validate", "test")}
    out.write_text(json.dumps(split, indent=1))
    return split


def train_toml(config: Path, inputs: Path, work: Path, depth: int, split: dict, split_path: Path) -> dict:
    """The user's accuracy TOML with the data keys pointed at the work copy of DIR."""
    cfg = tomllib.loads(config.read_text())
    cfg.setdefault("data", {})
    cfg["data"]["inputs_dir"] = str(inputs)
    cfg["data"]["outputs_dir"] = str(work / "outputs")
    cfg["data"].setdefault("dft", {})["data_dir_depth"] = depth
    digest = hashlib.sha1(str(inputs.resolve()).encode()).hexdigest()[:8]
    cfg["data"].setdefault("graph", {})["dataset_name"] = f"ACCURACY-{digest}"
    loader = cfg.setdefault("process", {}).setdefault("train", {}).setdefault("dataloader", {})
    loader["dataset_split_json"] = str(split_path)
    for part in ("train", "validate", "test"):
        loader[f"{part}_size"] = len(split[part])
    train = cfg["process"]["train"]
    train["compilation_cache_dir"] = str(work / "jax_cache")
    cfg.setdefault("system", {})["show_train_process_bar"] = False
    return cfg


def infer_toml(train_cfg: dict, run: Path, work: Path) -> dict:
    """Inference TOML for the test split: the training run's device, precision and data."""
    system = train_cfg.get("system", {})
    data = train_cfg["data"]
    return {
        "system": {
            "device": system.get("device", "cpu*1"),
            "float_type": system.get("float_type", "fp32"),
            "log_level": "warning",
            "jax_memory_preallocate": False,
        },
        "data": {
            "inputs_dir": data["inputs_dir"],
            "outputs_dir": str(work / "infer_outputs"),
            "dft": {"data_dir_depth": data["dft"]["data_dir_depth"]},
            "graph": {"dataset_name": data["graph"]["dataset_name"] + "-INFER", "graph_type": "S"},
        },
        "model": {"model_dir": str(run / "model"), "load_model_type": "best"},
        "process": {
            "infer": {
                "multi_way_jit_num": train_cfg["process"]["train"].get("multi_way_jit_num", 1),
                "dataloader": {"batch_size": train_cfg["process"]["train"]["dataloader"].get("batch_size")},
            }
        },
    }


def hamflow(
    args: Sequence[str],
    *,
    log: Path,
    timeout: float | None = None,
    stop_when: Callable[[], bool] | None = None,
) -> float:
    """Run one hamflow command (output to ``log``); SIGTERM at ``timeout`` seconds or once
    ``stop_when()`` holds (polled every 0.5 s): the run saves and stops. Returns its wall seconds;
    exits with the log's tail on failure."""
    start = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.Popen([*HAMFLOW, *args], stdout=handle, stderr=subprocess.STDOUT)
        stopped = False
        while proc.poll() is None:
            late = timeout is not None and time.perf_counter() - start > timeout
            if late or (stop_when is not None and stop_when()):
                proc.send_signal(signal.SIGTERM)
                stopped = True
                proc.wait()
                break
            time.sleep(0.5)
    wall = time.perf_counter() - start
    # 128 + SIGTERM: hamflow saved a checkpoint and stopped, as asked at the deadline
    if proc.returncode != 0 and not (stopped and proc.returncode == 128 + signal.SIGTERM):
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"accuracy.py: hamflow {args[0]} failed (exit {proc.returncode}):\n{tail}")
    return wall


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def log_figure(run: Path, pattern: str) -> float | None:
    match = re.search(pattern, (run / "deepx.log").read_text())
    return float(match.group(1)) if match else None


def onsite_offsite_mae(data: Path, pred: Path, sids: Sequence[str]) -> tuple[float, float]:
    """Plain MAE (meV) of H over on-site (R = 0, i = j) and off-site blocks of the test structures."""
    from hamflow.data.matrix_h5 import read_matrix_h5
    from hamflow.infer.metrics import compare_entries

    on, off = [], []
    for sid in sids:
        reference = read_matrix_h5(data / "dft" / sid / "hamiltonian.h5")
        predicted = read_matrix_h5(pred / "dft" / sid / "hamiltonian_pred.h5")
        cmp = compare_entries(reference, predicted, structure=sid)
        pairs = cmp.pairs[cmp.pair_of_entry]
        onsite = np.all(pairs[:, :3] == 0, axis=1) & (pairs[:, 3] == pairs[:, 4])
        error = np.abs(cmp.predicted - cmp.reference)
        on.append(error[onsite])
        off.append(error[~onsite])
    return float(np.concatenate(on).mean() * 1e3), float(np.concatenate(off).mean() * 1e3)


def curve_points(rows: list[dict[str, str]]) -> list[tuple[int, float]]:
    """(step, validation MAE in meV) at about CURVE_POINTS epochs spread over the run."""
    points = [(int(r["step"]), float(r["validate_mae"]) * 1e3) for r in rows if r["validate_mae"] != "nan"]
    if len(points) <= CURVE_POINTS:
        return points
    keep = np.unique(np.geomspace(1, len(points), CURVE_POINTS).astype(int) - 1)
    return [points[k] for k in keep]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="DeepH-format folder (holding dft/)")
    parser.add_argument("--minutes", type=float, required=True, help="training budget, compile included")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training TOML")
    parser.add_argument("--depth", type=int, help="data_dir_depth (default: found from the folder)")
    parser.add_argument("--seed", type=int, default=137, help="seed of the 75/12.5/12.5 split")
    parser.add_argument("--work", type=Path, help="work folder (default: a new temporary one)")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    parser.add_argument("--label", default="", help="a name for this run in the table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    deadline = started + 60.0 * args.minutes
    data = args.data.resolve()
    depth = find_depth(data) if args.depth is None else args.depth
    work = (args.work or Path(tempfile.mkdtemp(prefix="hamflow-accuracy-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    inputs = work / "data"  # DIR is only read: its dft/ is linked, the graph store lands here
    inputs.mkdir(exist_ok=True)
    if not (inputs / "dft").exists():
        (inputs / "dft").symlink_to(data / "dft", target_is_directory=True)
    split_path = work / "dataset_split.json"
    split = make_split(data, depth, args.seed, split_path)
    cfg = train_toml(args.config, inputs, work, depth, split, split_path)
    toml_path = work / "train.toml"
    toml_path.write_text(tomli_w.dumps(cfg))

    graph_s = hamflow(["graph", str(toml_path)], log=work / "graph.log")
    calibration = work / "calibration"

    def calibrated() -> bool:
        metrics = calibration / "metrics.csv"
        return metrics.is_file() and len(metrics.read_text().splitlines()) > CALIBRATION_EPOCHS

    # the calibration runs the TOML as it is (its max_epoch) and is stopped after two epochs
    hamflow(
        ["train", str(toml_path), "--run-dir", str(calibration), "--split", str(split_path)],
        log=work / "calibration.log",
        stop_when=calibrated,
    )  # fmt: skip
    cal_rows = read_metrics(calibration)
    epoch_s = float(cal_rows[-1]["wall_time_s"]) - float(cal_rows[-2]["wall_time_s"])
    compile_s = log_figure(calibration, r"ahead-of-time compiled \d+ program\(s\) in ([\d.]+) s") or 0.0
    cal_wall = time.perf_counter() - started - graph_s
    startup_s = max(cal_wall - float(cal_rows[-1]["wall_time_s"]) - 0.8 * compile_s, 5.0)
    left = deadline - time.perf_counter() - startup_s
    steps_per_epoch = max(int(cal_rows[0]["step"]), 1)
    # the schedule's warmup must fit (DeePMD-kit and DeepH-pack refuse an empty decay phase)
    warmup = int(cfg["process"]["train"].get("scheduler", {}).get("warmup_steps", 0) or 0)
    epochs = max(int(left // epoch_s), warmup // steps_per_epoch + 1, 1)
    run = work / "run"
    train_s = hamflow(
        ["train", str(toml_path), "--run-dir", str(run), "--split", str(split_path),
         "--set", f"process.train.max_epoch={epochs}"],
        log=work / "train.log",
        # never stopped before its start-up and a first epoch are through (a budget already spent
        # by the calibration still gives a model; the wall time printed says by how much it ran over)
        timeout=max(deadline - time.perf_counter(), startup_s + compile_s + 2.0 * epoch_s),
    )  # fmt: skip
    budget_wall = time.perf_counter() - started

    infer_path = work / "infer.toml"
    infer_path.write_text(tomli_w.dumps(infer_toml(cfg, run, work)))
    pred = work / "pred"
    infer_s = hamflow(
        ["infer", str(infer_path), "--run-dir", str(pred), "--split", str(split_path), "--part", "test"],
        log=work / "infer.log",
    )
    evaluation = work / "eval"
    eval_s = hamflow(
        ["evaluate", "--dft", str(inputs), "--pred", str(pred), "--out", str(evaluation), "--depth",
         str(depth), "--gauge", "--split", str(split_path), "--part", "test"],
        log=work / "evaluate.log",
    )  # fmt: skip
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    metrics = json.loads((evaluation / "metrics.json").read_text())
    rows = read_metrics(run)
    onsite, offsite = onsite_offsite_mae(inputs, pred, split["test"])
    eigen = metrics.get("eigenvalues") or {}
    figures = {
        "label": args.label or args.config.stem,
        "data": str(data),
        "config": str(args.config),
        "structures": {part: len(ids) for part, ids in split.items()},
        "parameters": int(log_figure(run, r"(\d+) parameters") or 0),
        "epochs": int(rows[-1]["epoch"]),
        "steps": int(rows[-1]["step"]),
        "budget_minutes": args.minutes,
        "wall_s": round(budget_wall, 1),
        "graph_s": round(graph_s, 1),
        "calibration_epoch_s": round(epoch_s, 2),
        "train_s": round(train_s, 1),
        "compile_s": log_figure(run, r"ahead-of-time compiled \d+ program\(s\) in ([\d.]+) s"),
        "infer_s": round(infer_s, 1),
        "evaluate_s": round(eval_s, 1),
        "cpu_s": round(children.ru_utime + children.ru_stime, 1),
        "test_mae_meV": metrics["overall"]["plain_mae_meV"],
        "test_mae_gauge_meV": metrics["overall"]["mae_meV"],
        "test_onsite_mae_meV": onsite,
        "test_offsite_mae_meV": offsite,
        "occupied_orbital_energy_mae_meV": (eigen.get("occupied") or {}).get("mae_meV"),
        "curve": curve_points(rows),
        "work": str(work),
    }
    print_table(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


def print_table(f: dict) -> None:
    s = f["structures"]
    occupied = f["occupied_orbital_energy_mae_meV"]
    print(f"\n## {f['label']}: {f['data']}\n")
    print("| quantity | value |\n|---|---|")
    print(f"| structures train / validate / test | {s['train']} / {s['validate']} / {s['test']} |")
    print(f"| parameters | {f['parameters']:,} |")
    print(f"| epochs (optimizer steps) | {f['epochs']} ({f['steps']:,}) |")
    print(f"| wall s (budget {f['budget_minutes']} min: graph + calibration + training) | {f['wall_s']} |")
    print(f"| CPU s (user + sys, all commands) | {f['cpu_s']} |")
    print(f"| infer / evaluate wall s | {f['infer_s']} / {f['evaluate_s']} |")
    print(f"| **test MAE of H, meV** (plain) | **{f['test_mae_meV']:.3f}** |")
    print(f"| test MAE of H, gauge-corrected, meV | {f['test_mae_gauge_meV']:.3f} |")
    on, off = f["test_onsite_mae_meV"], f["test_offsite_mae_meV"]
    print(f"| on-site / off-site MAE, meV | {on:.3f} / {off:.3f} |")
    print(f"| occupied-orbital-energy MAE, meV | {'n/a' if occupied is None else f'{occupied:.3f}'} |")
    curve = ", ".join(f"{step}: {mae:.2f}" for step, mae in f["curve"])
    print(f"\nlearning curve (step: validation MAE meV): {curve}")


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    raise SystemExit(main())
