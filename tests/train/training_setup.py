"""A tiny, fast training setup on the demo H2O molecules, shared by the training-stage tests.

All runs share one model/shape configuration and one persistent compilation cache, so only the
first run of a test session pays XLA's compile time.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hamflow.config.train_config import load_train_config, with_overrides

REPO = Path(__file__).resolve().parents[2]
DEMO_MOLECULES = REPO / "data" / "demo" / "molecules"


def h2o_inputs(root: Path, count: int = 10) -> Path:
    """Copy ``count`` demo H2O structures to ``root/dft/h2o/<sid>`` (data_dir_depth = 1)."""
    source = DEMO_MOLECULES / "dft" / "h2o"
    sids = sorted(p.name for p in source.iterdir())[:count]
    for sid in sids:
        shutil.copytree(source / sid, root / "dft" / "h2o" / sid)
    return root


def tiny_overrides(inputs: Path, outputs: Path, cache: Path, **extra: Any) -> dict[str, Any]:
    """Overrides turning config/train.toml into a seconds-per-epoch run."""
    values: dict[str, Any] = {
        "data.inputs_dir": str(inputs),
        "data.outputs_dir": str(outputs),
        "data.graph.parallel_num": 1,
        "model.advanced.net_irreps": "8x0e+4x1o+4x1e+4x2e+2x2o+2x3o+2x3e+2x4e",
        "model.advanced.num_blocks": 1,
        "process.train.max_epoch": 4,
        "process.train.compilation_cache_dir": str(cache),
        "process.train.dataloader.batch_size": 2,
        "process.train.dataloader.train_size": 6,
        "process.train.dataloader.validate_size": 2,
        "process.train.dataloader.test_size": 2,
        "process.train.scheduler.warmup_steps": 2,
        "data.model_save.latest_interval": 1,
        "data.model_save.latest_num": 10,
    }
    values.update(extra)
    return values


def tiny_config(inputs: Path, outputs: Path, cache: Path, **extra: Any) -> Any:
    cfg = load_train_config(REPO / "config" / "train.toml")
    return with_overrides(cfg, tiny_overrides(inputs, outputs, cache, **extra))


def set_args(overrides: dict[str, Any]) -> list[str]:
    """The overrides as ``--set KEY=VALUE`` command-line arguments (TOML values)."""
    args = []
    for key, value in overrides.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        else:
            text = repr(value)
        args += ["--set", f"{key}={text}"]
    return args


#: An inference TOML for a trained run folder: ``.format(inputs=..., outputs=..., model=...)``.
INFER_TOML = """
[system]
device = "cpu*1"
log_level = "warning"
jax_memory_preallocate = false
[data]
inputs_dir = "{inputs}"
outputs_dir = "{outputs}"
[data.graph]
dataset_name = "TRAIN-TESTS-INFER"
parallel_num = 1
[model]
model_dir = "{model}"
"""
