"""Benchmark of the jitted training step on the demo molecules: compile, step time, padding, memory.

For net_type sparrow (consider_parity true) and eagle (false), each at its default ``net_irreps`` for the
demo basis (:func:`hamflow.graph.irreps.default_net_irreps`) and ``--blocks`` blocks, on the graph store
of data/demo/molecules (config/train.toml, built or reused with hamflow.graph.stage.build_graph_store):

- parameter count;
- compile time of the jitted train step (make_steps + make_optimizer + a fitted Normaliser, batch_size 4,
  one shape bucket): trace (``jit.lower``) and XLA compile (``.compile()``), first in a fresh process
  with an empty persistent compilation cache, then in a second process with the same cache folder;
- steady-state step time (median of ``--steps`` steps after the first, ``block_until_ready`` each) in
  the cached process, per structure (/ batch_size);
- peak resident memory (``ru_maxrss``) of each process;
- padding waste of the shape buckets (plan_buckets + padding_waste) with multi_way_jit_num 1 and 4, on
  the demo set's sizes, on an ethanol-heavy mix of the demo kinds, and on a synthetic wide distribution.

The timing runs in subprocesses of this script (``--worker``). On a CPU the absolute seconds are context
only (labelled CPU); the comparisons are the ratios printed beside them, all measured in one run.

    python benchmarks/train_step.py [--quick] [--json OUT] [--steps 10] [--blocks 3] [--nets sparrow,eagle]
        [--irreps NET_IRREPS] [--profile N] [--xla-options JSON]

``--irreps`` sets the networks' size (e.g. ~350k parameters for a DeepH-E3-sized comparison);
``--profile N`` adds the step's time by kind of XLA operation over N steps (:mod:`step_profile`: dots,
scatters, gathers, reductions, elementwise) and the optimizer update timed alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TRAIN_TOML = REPO / "config" / "train.toml"
DEMO_INPUTS = REPO / "data" / "demo" / "molecules"
BATCH_SIZE = 4
RESULT_MARKER = "TRAIN_STEP_RESULT "
#: structures of each demo kind (h2o, nh3, ch4, ethanol) in the ethanol-heavy synthetic mix
ETHANOL_HEAVY_MIX = {"h2o": 100, "nh3": 100, "ch4": 100, "ethanol": 700}


def benchmark_config(net_type: str, num_blocks: int, cache_dir: str = "none", irreps: str = "") -> Any:
    """config/train.toml on the demo molecules with the model at its defaults for ``net_type``
    (``irreps``: a ``net_irreps`` instead of the default for the basis)."""
    from hamflow.config.train_config import load_train_config, with_overrides

    return with_overrides(
        load_train_config(TRAIN_TOML),
        {
            "data.inputs_dir": str(DEMO_INPUTS),
            "model.net_type": net_type,
            "model.advanced.net_irreps": irreps,
            "model.advanced.num_blocks": num_blocks,
            "model.advanced.consider_parity": net_type == "sparrow",
            "process.train.dataloader.batch_size": BATCH_SIZE,
            "process.train.multi_way_jit_num": 1,
            "process.train.compilation_cache_dir": cache_dir,
        },
    )


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------------------- worker


def run_worker(
    net_type: str,
    num_blocks: int,
    cache_dir: Path,
    steps: int,
    store_path: Path,
    irreps: str = "",
    profile: int = 0,
    xla_options: dict | None = None,
) -> dict:
    """Build, compile and time one train step in this process; return the figures (seconds, MiB).
    ``profile`` > 0: also the step's time by kind of operation over that many steps
    (:mod:`step_profile`), and the optimizer update alone. ``xla_options``: XLA debug options of
    the compile (``Lowered.compile(compiler_options=...)``)."""
    import jax
    import jax.numpy as jnp

    from hamflow.config.precision import apply_float_type
    from hamflow.graph.batch import GraphBatch
    from hamflow.graph.buckets import epoch_batches
    from hamflow.nn.model import count_parameters, init_params
    from hamflow.train.data import open_data, plan_batches
    from hamflow.train.normaliser import fit_normaliser
    from hamflow.train.saved_model import build_network, model_spec
    from hamflow.train.schedules import learning_rate_schedule
    from hamflow.train.step import TrainState, make_optimizer, make_steps

    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    cfg = benchmark_config(net_type, num_blocks, str(cache_dir), irreps)
    tcfg = cfg.process.train
    policy = apply_float_type(cfg.system.float_type)

    # the training run's own steps: store and split, model spec, bucket plan (one shape, one device)
    data = open_data(cfg, store_path, None)
    store, train = data.store, np.asarray(data.index["train"])
    spec = model_spec(cfg, data.basis, store.meta)
    irreps = spec.net_irreps
    normaliser = fit_normaliser((store.get(int(i)) for i in train), spec.shell_ls)
    plan = plan_batches(cfg, data, jax.devices()[:1], policy.label_dtype)
    shape = plan.plan.shapes[0]
    batches = [
        plan.train.host_batch(bucket, members)
        for bucket, members in epoch_batches(plan.plan, seed=0, epoch=1, shuffle=True)
    ]
    device_batches = [jax.device_put(b) for b in batches]
    model = build_network(spec, policy.compute_dtype)
    one_share = jax.tree_util.tree_map(lambda x: x[0], batches[0])
    t0 = time.perf_counter()
    params = init_params(model, one_share, cfg.system.random_seed)["params"]
    init_s = time.perf_counter() - t0

    optimizer = make_optimizer(tcfg.optimizer)
    total_steps = tcfg.max_epoch * len(batches)
    lr_fn = learning_rate_schedule(
        tcfg.scheduler, init_learning_rate=tcfg.optimizer.init_learning_rate, total_steps=total_steps
    )

    def apply_fn(p: Any, batch: GraphBatch) -> jnp.ndarray:
        return model.apply({"params": p}, batch)

    train_step, _ = make_steps(
        apply_fn,
        optimizer,
        normaliser,
        loss_type=cfg.model.loss_type,
        standardize_gauge=cfg.model.advanced.standardize_gauge,
        spinful=bool(store.meta.spinful),
    )
    state = TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), jnp.ones((), jnp.float32))
    state = jax.device_put(state)
    jit_train = jax.jit(train_step, donate_argnums=0)

    t0 = time.perf_counter()
    rate = jnp.asarray(lr_fn(0), jnp.float32)
    lowered = jit_train.lower(state, device_batches[0], rate)
    t1 = time.perf_counter()
    compiled = lowered.compile(compiler_options=xla_options or None)
    t2 = time.perf_counter()
    state, metrics = compiled(state, device_batches[0], rate)
    jax.block_until_ready(state)
    first_step_s = time.perf_counter() - t2
    losses = [float(metrics.loss)]

    step_times = []
    for n in range(steps):
        start = time.perf_counter()
        state, metrics = compiled(state, device_batches[(n + 1) % len(device_batches)], rate)
        jax.block_until_ready(state)
        step_times.append(time.perf_counter() - start)
        losses.append(float(metrics.loss))
    profiled = optimizer_ms = None
    if profile > 0:
        from step_profile import step_profile

        held = {"state": state}

        def one_step() -> None:
            held["state"], _ = compiled(held["state"], device_batches[0], rate)
            jax.block_until_ready(held["state"])

        profiled = step_profile(one_step, compiled.as_text(), profile)
        optimizer_ms = optimizer_update_ms(optimizer, held["state"].params, profile)
    return {
        "net_type": net_type,
        "net_irreps": irreps,
        "num_blocks": num_blocks,
        "parameters": count_parameters(params),
        "batch_shape": {"nodes": shape.num_nodes, "edges": shape.num_edges, "graphs": shape.num_graphs},
        "init_s": init_s,
        "trace_s": t1 - t0,
        "compile_s": t2 - t1,
        "first_step_s": first_step_s,
        "step_times_s": step_times,
        "step_median_s": statistics.median(step_times) if step_times else float("nan"),
        "losses": losses,
        "peak_rss_mib": peak_rss_mib(),
        "device": str(jax.devices()[0]),
        "profile": profiled,
        "optimizer_update_ms": optimizer_ms,
        "jax_version": jax.__version__,
        "xla_options": xla_options or {},
    }


def optimizer_update_ms(optimizer: Any, params: Any, repeats: int) -> float:
    """Median milliseconds of the optimizer's update and its application alone (jitted, gradients of
    ones), the part of a step that does not depend on the graph."""
    import jax
    import jax.numpy as jnp
    import optax

    @jax.jit
    def update(p: Any, opt_state: Any) -> tuple[Any, Any]:
        grads = jax.tree_util.tree_map(jnp.ones_like, p)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    opt_state = optimizer.init(params)
    jax.block_until_ready(update(params, opt_state))
    times = []
    for _ in range(max(3, repeats)):
        start = time.perf_counter()
        jax.block_until_ready(update(params, opt_state))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def spawn_worker(
    net_type: str,
    num_blocks: int,
    cache_dir: Path,
    steps: int,
    store_path: Path,
    irreps: str = "",
    profile: int = 0,
    xla_options: str = "{}",
) -> dict:
    """Run :func:`run_worker` in a fresh Python process; return its figures plus the process wall time."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        net_type,
        "--blocks",
        str(num_blocks),
        "--cache-dir",
        str(cache_dir),
        "--steps",
        str(steps),
        "--store",
        str(store_path),
        "--irreps",
        irreps,
        "--profile",
        str(profile),
        "--xla-options",
        xla_options,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"worker for {net_type} failed with exit code {done.returncode}")
    result = json.loads(lines[-1][len(RESULT_MARKER) :])
    result["process_wall_s"] = wall
    return result


# --------------------------------------------------------------------------------------- padding


def demo_kind_sizes(store: Any) -> dict[str, tuple[int, int]]:
    """{kind: (atoms, edges)} of the demo molecules (the kind is the id's first folder: h2o/000)."""
    sizes: dict[str, tuple[int, int]] = {}
    for sid, nodes, edges in zip(store.ids, store.num_nodes, store.num_edges, strict=True):
        sizes.setdefault(sid.split("/")[0], (int(nodes), int(edges)))
    return sizes


def wide_synthetic_sizes(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(atoms, edges) of ``count`` synthetic molecules: 3..64 atoms uniform, every atom pair an edge
    up to 48 neighbours per atom (edges = atoms * min(atoms, 48)), a wide spread of sizes."""
    atoms = np.random.default_rng(seed).integers(3, 65, size=count)
    return atoms, atoms * np.minimum(atoms, 48)


def padding_rows(store: Any) -> list[dict]:
    """Padding waste with multi_way_jit_num 1 and 4 on the demo set and two synthetic size mixes."""
    from hamflow.graph.buckets import padding_waste, plan_buckets

    kinds = demo_kind_sizes(store)
    heavy = [kinds[kind] for kind, n in ETHANOL_HEAVY_MIX.items() for _ in range(n)]
    mix = ", ".join(f"{n} {kind}" for kind, n in ETHANOL_HEAVY_MIX.items())
    wide_nodes, wide_edges = wide_synthetic_sizes(1000)
    sets = [
        (f"demo molecules ({len(store)})", np.asarray(store.num_nodes), np.asarray(store.num_edges)),
        (f"ethanol-heavy demo mix ({mix})", np.array([a for a, _ in heavy]), np.array([e for _, e in heavy])),
        ("synthetic wide, 1000 of 3-64 atoms", wide_nodes, wide_edges),
    ]
    rows = []
    for name, nodes, edges in sets:
        row: dict[str, Any] = {"set": name, "structures": len(edges)}
        for ways in (1, 4):
            plan = plan_buckets(nodes, edges, batch_size=BATCH_SIZE, max_buckets=ways)
            row[f"waste_{ways}"] = padding_waste(plan, edges)
            row[f"shapes_{ways}"] = [s.num_edges for s in plan.shapes]
        # the used slots are the same, so padded slots (work per epoch) scale as (1 - waste)^-1
        row["slots_4_over_1"] = (1.0 - row["waste_1"]) / (1.0 - row["waste_4"])
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------- report


def machine_context() -> dict:
    """CPU model, cores and load average, for the record."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import hamflow

    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "hamflow_source": str(Path(hamflow.__file__).resolve().parent),
        "cpu_model": model,
        "cpu_cores": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def print_table(models: dict[str, dict], padding: list[dict], context: dict) -> None:
    nets = list(models)
    rows: list[tuple[str, list[str], str]] = []

    def add(label: str, values: list[float], fmt: str, ratio: bool = True) -> None:
        cells = [fmt.format(v) for v in values]
        rows.append((label, cells, _ratio(values[-1], values[0]) if ratio and len(values) > 1 else ""))

    first = [models[n]["first"] for n in nets]
    cached = [models[n]["cached"] for n in nets]
    add("parameters", [m["parameters"] for m in first], "{:,}")
    add("trace (jit.lower), empty cache, CPU s", [m["trace_s"] for m in first], "{:.1f}")
    add("XLA compile, empty cache, CPU s", [m["compile_s"] for m in first], "{:.1f}")
    add("trace (jit.lower), cached, CPU s", [m["trace_s"] for m in cached], "{:.1f}")
    add("XLA compile, cached, CPU s", [m["compile_s"] for m in cached], "{:.2f}")
    add(
        "cached / first (trace + compile)",
        [
            (c["trace_s"] + c["compile_s"]) / (f["trace_s"] + f["compile_s"])
            for f, c in zip(first, cached, strict=True)
        ],
        "{:.3f}",
        ratio=False,
    )
    add("process wall, empty cache, CPU s", [m["process_wall_s"] for m in first], "{:.1f}")
    add("process wall, cached, CPU s", [m["process_wall_s"] for m in cached], "{:.1f}")
    add("step time per structure, CPU ms", [1e3 * m["step_median_s"] / BATCH_SIZE for m in cached], "{:.1f}")
    add("training structures per second, CPU", [BATCH_SIZE / m["step_median_s"] for m in cached], "{:.1f}")
    add("peak RSS, empty-cache process, MiB", [m["peak_rss_mib"] for m in first], "{:.0f}")
    add("peak RSS, cached process, MiB", [m["peak_rss_mib"] for m in cached], "{:.0f}")

    shape = first[0]["batch_shape"]
    print(
        f"train step, demo molecules, batch_size {BATCH_SIZE} padded to {shape['nodes']} nodes / "
        f"{shape['edges']} edges (multi_way_jit_num 1), {first[0]['num_blocks']} blocks, fp32, "
        f"{first[0]['device']}; {context['cpu_model']}, {context['cpu_cores']} cores, load "
        f"{context['load_average'][0]:.1f} at the end; {context['date']}"
    )
    for net in nets:
        print(f"  {net}: net_irreps {models[net]['first']['net_irreps']}")
    steps = len(cached[0]["step_times_s"])
    print(f"  step time: median of {steps} steps in the cached process after its first step\n")
    width = max(len(r[0]) for r in rows) + 2
    ratio_head = f"{nets[-1]}/{nets[0]}" if len(nets) > 1 else ""
    header = f"{'quantity':{width}}" + "".join(f"{n:>14}" for n in nets) + f"{ratio_head:>16}"
    print(header)
    print("-" * len(header))
    for label, cells, ratio in rows:
        print(f"{label:{width}}" + "".join(f"{c:>14}" for c in cells) + f"{ratio:>16}")
    print("-" * len(header))
    profiled = [(n, models[n]["cached"]) for n in nets if models[n]["cached"].get("profile")]
    if profiled:
        from step_profile import CATEGORIES

        print("one step by kind of XLA operation (profiler events of the step), CPU ms per step [share]")
        for net, m in profiled:
            prof = m["profile"]
            cells = ", ".join(f"{c} {prof['ms'][c]:.1f} [{100 * prof['share'][c]:.0f}%]" for c in CATEGORIES)
            step_ms = 1e3 * m["step_median_s"]
            print(f"  {net}: {cells}; total {prof['total_ms']:.1f} of a {step_ms:.1f} ms step")
            optimizer_ms = m["optimizer_update_ms"]
            print(f"  {net}: the optimizer update alone (raveled, with clipping): {optimizer_ms:.2f} ms")
            top = "; ".join(f"{o['name']} ({o['category']}) {o['ms']:.2f}" for o in prof["top_ops"][:5])
            print(f"  {net}: costliest instructions: {top}")
        print("-" * len(header))
    print("padding waste (fraction of padded edge slots; shapes = padded edges per batch of 4)")
    for row in padding:
        print(
            f"  {row['set']}: multi_way_jit_num 1 {100 * row['waste_1']:.1f}% {row['shapes_1']}, "
            f"4 {100 * row['waste_4']:.1f}% {row['shapes_4']}; padded slots 4/1 = "
            f"{row['slots_4_over_1']:.2f}x"
        )


# --------------------------------------------------------------------------------------- main


def build_demo_store() -> Path:
    """The demo molecules' graph store (built, or reused when up to date)."""
    from hamflow.graph.stage import build_graph_store

    return build_graph_store(benchmark_config("sparrow", 3), progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sparrow only, 3 steps")
    parser.add_argument("--json", metavar="OUT", help="also write every figure to this JSON file")
    parser.add_argument("--steps", type=int, default=10, help="timed steps after the first (default 10)")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--nets", default="sparrow,eagle")
    parser.add_argument("--irreps", default="", help="net_irreps of every net (default: the basis's)")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="time the step by kind of operation over N steps"
    )
    parser.add_argument(
        "--xla-options",
        default="{}",
        metavar="JSON",
        help="XLA options of the compile, e.g. '{\"xla_backend_optimization_level\": 0}'",
    )
    parser.add_argument("--worker", metavar="NET", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        paths = Path(args.cache_dir), args.steps, Path(args.store)
        options = json.loads(args.xla_options)
        result = run_worker(args.worker, args.blocks, *paths, args.irreps, args.profile, options)
        print(RESULT_MARKER + json.dumps(result))
        return

    nets = ["sparrow"] if args.quick else args.nets.split(",")
    steps = 3 if args.quick else args.steps
    from hamflow.graph.store import GraphStore

    store_path = build_demo_store()
    with GraphStore.open(store_path) as store:
        padding = padding_rows(store)
    models: dict[str, dict] = {}
    for net in nets:
        with tempfile.TemporaryDirectory(prefix=f"hamflow-bench-{net}-") as cache:
            print(f"{net}: empty-cache process ...", file=sys.stderr, flush=True)
            options = args.xla_options
            first = spawn_worker(net, args.blocks, Path(cache), 0, store_path, args.irreps, 0, options)
            print(f"{net}: cached process ...", file=sys.stderr, flush=True)
            cached = spawn_worker(
                net, args.blocks, Path(cache), steps, store_path, args.irreps, args.profile, options
            )
        models[net] = {"first": first, "cached": cached}
    context = machine_context()
    print_table(models, padding, context)
    if args.json:
        from hamflow.atomic import atomic_write_text

        document = {"context": context, "batch_size": BATCH_SIZE, "models": models, "padding": padding}
        atomic_write_text(Path(args.json), json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
