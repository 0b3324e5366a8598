"""Benchmark of a training run's start-up: cold, warm with runtime values changed, warm and identical.

Three ``hamflow train`` processes in a row on one TOML (default: config/train.toml on the demo
molecules with 4 shape buckets and ahead-of-time compilation, 2 epochs), sharing one fresh
compilation cache folder (``process.train.compilation_cache_dir``, which also holds the program
cache):

1. **cold**: the cache folder empty;
2. **warm, changed**: ``max_epoch`` and ``warmup_steps`` changed (runtime values: no new program);
3. **warm, identical**: the first run's settings again.

For each: seconds from the process start to the end of the first training step (the log's
``start-up:`` line, which also splits it into phases), the ahead-of-time phase (programs compiled and
loaded from the program cache), wall seconds of the whole process, and its peak resident memory
(``ru_maxrss`` of the child from ``os.wait4``, GiB). CPU seconds, not a GPU's: compare the rows with
each other (ratios), measured in one run. A version of hamflow without the start-up line is timed to
the log stamp of its ahead-of-time line (it compiles everything before the first step; 1 s
resolution, shown with "~").

    python benchmarks/startup.py [--config TOML] [--data DIR] [--depth N] [--set KEY=TOML ...]
                                 [--work DIR] [--json OUT] [--cold-only]

``--data`` points the runs at any DeepH-format folder holding ``dft/`` (linked into the work
folder, where the graph store is built; ``--depth`` its ``data_dir_depth``); ``--set`` overrides
any TOML key of every run (e.g. a smaller model). To measure another version of hamflow in the
same session, run this script with that version first on ``PYTHONPATH`` (the children inherit it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO_INPUTS = REPO / "data" / "demo" / "molecules"

#: the default run: the demo sparrow with 4 buckets, every program compiled before the first epoch
DEFAULT_OVERRIDES = {
    "data.inputs_dir": str(DEMO_INPUTS),
    "process.train.multi_way_jit_num": 4,
    "process.train.ahead_of_time_compile": True,
    "process.train.max_epoch": 2,
}
#: the second run's changes: values the compiled programs take as inputs
CHANGED = {"process.train.max_epoch": 3, "process.train.scheduler.warmup_steps": 7}

START_UP = re.compile(r"start-up: first training step done ([\d.]+) s after the process started \((.*)\)")
#: the "(N loaded ...)" part is absent in versions without the program cache
AOT = re.compile(r"ahead-of-time compiled (\d+) program\(s\) in ([\d.]+) s(?: \((\d+) loaded)?")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def run_once(config: Path, run_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """One ``hamflow train`` child: start-up and ahead-of-time figures from its log, wall, peak RSS."""
    args = [sys.executable, "-m", "hamflow.cli", "train", str(config), "--run-dir", str(run_dir)]
    for key, value in overrides.items():
        args += ["--set", f"{key}={_toml_value(value)}"]
    errors = run_dir.parent / f"{run_dir.name}.stderr"
    launched = time.time()
    t0 = time.perf_counter()
    with open(errors, "w") as stderr:
        child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)  # reaped here: its own peak RSS
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"hamflow train failed ({code}):\n{errors.read_text()[-4000:]}")
    log = (run_dir / "deepx.log").read_text()
    start = START_UP.search(log)
    aot = AOT.search(log)
    first_step = float(start.group(1)) if start else None
    if first_step is None and aot:  # a version without the start-up line: its programs, then the step
        stamp = log[: aot.start()].rsplit("\n", 1)[-1][:19]
        first_step = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() - launched
    return {
        "first_step_s": first_step,
        "from_start_up_line": start is not None,
        "phases": start.group(2) if start else "",
        "compiled": int(aot.group(1)) if aot else None,
        "aot_s": float(aot.group(2)) if aot else None,
        "loaded": int(aot.group(3)) if aot and aot.group(3) else 0,
        "wall_s": wall,
        "peak_rss_gib": _peak_rss_gib(usage),
    }


def _peak_rss_gib(usage: Any) -> float:
    return usage.ru_maxrss * 1024 / 2**30  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "config" / "train.toml")
    parser.add_argument("--data", type=Path, help="a DeepH-format folder (default: the demo molecules)")
    parser.add_argument("--depth", type=int, help="its data_dir_depth (default: the TOML's)")
    parser.add_argument("--work", type=Path, help="folder for runs and the cache (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--cold-only", action="store_true", help="only the first run (cold): e.g. to compare versions"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=TOML",
        help="override a TOML key in every run, e.g. --set process.train.multi_way_jit_num=2 (repeatable)",
    )
    args = parser.parse_args()
    overrides = dict(DEFAULT_OVERRIDES)
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.strip()] = tomllib.loads(f"v = {value}")["v"]
    work = (args.work or Path(tempfile.mkdtemp(prefix="hamflow-startup-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.data:  # DIR is only read: its dft/ is linked, the graph store lands in the work folder
        inputs = work / "data"
        inputs.mkdir(exist_ok=True)
        if not (inputs / "dft").exists():
            (inputs / "dft").symlink_to(args.data.resolve() / "dft", target_is_directory=True)
        overrides["data.inputs_dir"] = str(inputs)
    if args.depth is not None:
        overrides["data.dft.data_dir_depth"] = args.depth
    overrides["data.outputs_dir"] = str(work / "outputs")
    overrides["process.train.compilation_cache_dir"] = str(work / f"cache-{os.getpid()}")
    runs = [
        ("cold", overrides),
        ("warm, max_epoch + warmup_steps changed", {**overrides, **CHANGED}),
        ("warm, identical", overrides),
    ][: 1 if args.cold_only else None]
    rows = []
    for index, (name, settings) in enumerate(runs):
        figures = run_once(args.config, work / f"run{index}-{os.getpid()}", settings)
        rows.append({"run": name, **figures})
        print(f"# {name}: {figures['phases']}", flush=True)
    cold = rows[0]["first_step_s"]
    print(f"\nstart-up of `hamflow train` ({platform.node()}, {os.cpu_count()} CPU cores, CPU seconds)")
    print("| run | to the 1st step (s) | vs cold | AOT (s) | compiled / loaded | wall (s) | peak RSS (GiB) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        first = row["first_step_s"]
        ratio = f"{cold / first:.1f}x faster" if first and cold and row is not rows[0] else "-"
        # "~": no start-up line in the log, the time its programs were done (1 s resolution)
        shown = "-" if first is None else f"{first:.1f}" if row["from_start_up_line"] else f"~{first:.0f}"
        print(
            f"| {row['run']} | {shown} | {ratio} | "
            f"{row['aot_s']} | {row['compiled']} / {row['loaded']} | {row['wall_s']:.1f} | "
            f"{row['peak_rss_gib']:.2f} |"
        )
    if args.json:
        payload = {"date": dt.datetime.now().isoformat(timespec="seconds"), "rows": rows}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
