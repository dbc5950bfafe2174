"""Training metrics: averages over each log interval, throughput and FLOP utilisation, and writers.

    averages = MetricAverager()
    writer = MetricsWriter(workdir, total_steps=config.steps, batch_size=config.batch_size,
                           flops_per_step=step_flops(train_step, state, batch, rng))
    for step ...:
        state, metrics = train_step(state, batch, rng)
        averages.update(metrics)                      # stays on device: no host sync per step
        if step % log_every == 0:
            writer.write_scalars(step, averages.compute_and_reset())
    writer.write_images(step, stage.log_images(state, batch, rng))

Every log step becomes one console line (step, loss, images/s, MFU, ETA) and one JSON object in
`<workdir>/metrics.jsonl` (flushed at once, appended to when a run resumes). TensorBoard event files
are written too when `tensorboardX` (or `tensorboard` with torch) is installed; neither is required.
Averaging uses `clu.metrics` only: `clu.metric_writers` would import TensorFlow.
"""
from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics
from PIL import Image

from ldm_jax.images import array_to_images, make_grid

# Peak dense bf16 FLOP/s of one device (one chip; one GPU), by a lower-case substring of
# `device.device_kind`, most specific first. Vendors' data sheets.
PEAK_FLOPS = (
    ("tpu v6 lite", 918e12),
    ("tpu v5 lite", 197e12),
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),
    ("tpu v4", 275e12),
    ("tpu v3", 123e12),
    ("tpu v2", 45e12),
    ("h100 pcie", 756e12),
    ("h100", 989e12),
    ("h200", 989e12),
    ("a100", 312e12),
    ("l4", 121e12),
)


def peak_flops_per_device(device: jax.Device | None = None) -> float | None:
    """The peak bf16 FLOP/s of `device` (default: the first device), None when not in the table."""
    kind = (device or jax.devices()[0]).device_kind.lower()
    for name, flops in PEAK_FLOPS:
        if name in kind:
            return flops
    return None


def step_flops(jitted: Callable, *args) -> float | None:
    """The FLOPs of one call of `jitted(*args)` over all devices, from XLA's cost analysis.

    `jitted` is a `jax.jit` function (e.g. `jit_train_step(...)`); `args` may be arrays or
    ShapeDtypeStructs. The count is taken before partitioning, so it is the model's FLOPs, not
    counting work repeated on several devices; else the compiled per-device count x devices.
    """
    lowered = jitted.lower(*args)
    cost = lowered.cost_analysis()
    if cost and cost.get("flops", 0) > 0:
        return float(cost["flops"])
    compiled = lowered.compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    if not cost or cost.get("flops", 0) <= 0:
        return None
    return float(cost["flops"]) * len(jax.devices())


def flop_utilisation(flops_per_step: float, seconds_per_step: float, peak_flops: float,
                     num_devices: int) -> float:
    """Achieved FLOP/s over the peak of all devices: the model FLOP utilisation, in [0, 1]."""
    if seconds_per_step <= 0 or peak_flops <= 0 or num_devices <= 0:
        raise ValueError(f"flop_utilisation needs positive time, peak and devices, got "
                         f"{seconds_per_step}, {peak_flops}, {num_devices}")
    return flops_per_step / seconds_per_step / (peak_flops * num_devices)


class MetricAverager:
    """The mean of every metric a train step returns, over the steps since the last reset.

    One `clu.metrics.Average` per name, accumulated on device; names may differ between steps
    (each is averaged over the steps that returned it).
    """

    def __init__(self):
        self._averages: dict[str, clu_metrics.Average] = {}

    def update(self, metrics: Mapping[str, Any]) -> None:
        for name, value in metrics.items():
            average = clu_metrics.Average.from_model_output(jnp.asarray(value, jnp.float32))
            self._averages[name] = self._averages[name].merge(average) if name in self._averages else average

    def compute(self) -> dict[str, float]:
        """The averages as Python floats (one transfer to the host)."""
        values = jax.device_get({name: average.compute() for name, average in self._averages.items()})
        return {name: float(value) for name, value in values.items()}

    def reset(self) -> None:
        self._averages = {}

    def compute_and_reset(self) -> dict[str, float]:
        values = self.compute()
        self.reset()
        return values


def write_image_grid(path: str | os.PathLike, images, rows: int | None = None) -> pathlib.Path:
    """Images (N, H, W, C) in [-1, 1] tiled into one PNG at `path` (folders created)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(array_to_images(np.asarray(jax.device_get(images), np.float32)), rows=rows).save(path, format="PNG")
    return path


def _tensorboard_writer_class():
    """`SummaryWriter` of tensorboardX, or of torch with the tensorboard package; None without."""
    if importlib.util.find_spec("tensorboardX") is not None:
        from tensorboardX import SummaryWriter
        return SummaryWriter
    if importlib.util.find_spec("tensorboard") is not None and importlib.util.find_spec("torch") is not None:
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter
    return None


def _format(value: float) -> str:
    return f"{value:.3e}" if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5) else f"{value:.4g}"


class MetricsWriter:
    """Console lines, `<workdir>/metrics.jsonl` and (if installed) TensorBoard, for one process.

    `batch_size`: global images per step (for images/s). `flops_per_step` (see `step_flops`) and
    the per-device `peak_flops` (default: looked up for the local devices) give the MFU; the rate
    is measured between consecutive `write_scalars` calls, so the first call only starts the clock
    (call `restart_clock` after a long pause such as compilation or evaluation).
    """

    def __init__(self, workdir: str | os.PathLike, *, total_steps: int | None = None,
                 batch_size: int | None = None, flops_per_step: float | None = None,
                 peak_flops: float | None = None, num_devices: int | None = None,
                 console: Callable[[str], None] | None = None, tensorboard: bool = True,
                 enabled: bool | None = None):
        self.workdir = pathlib.Path(workdir)
        self.total_steps, self.batch_size, self.flops_per_step = total_steps, batch_size, flops_per_step
        self.peak_flops = peak_flops if peak_flops is not None else peak_flops_per_device()
        self.num_devices = num_devices or jax.device_count()
        self.console = console or (lambda line: print(line, file=sys.stdout, flush=True))
        # Only one process writes; the others keep the same calls as no-ops.
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._clock: tuple[int, float] | None = None
        self._jsonl = None
        self._tensorboard = None
        if self.enabled:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.workdir / "metrics.jsonl", "a", encoding="utf-8")
            writer_class = _tensorboard_writer_class() if tensorboard else None
            if writer_class is not None:
                self._tensorboard = writer_class(str(self.workdir / "tensorboard"))

    @property
    def jsonl_path(self) -> pathlib.Path:
        return self.workdir / "metrics.jsonl"

    def restart_clock(self, step: int) -> None:
        """Measure the next rate from `step`, now."""
        self._clock = (int(step), time.perf_counter())

    def _rates(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        previous, self._clock = self._clock, (step, now)
        if previous is None or step <= previous[0] or now <= previous[1]:
            return {}
        seconds_per_step = (now - previous[1]) / (step - previous[0])
        rates = {"steps_per_sec": 1.0 / seconds_per_step}
        if self.batch_size:
            rates["images_per_sec"] = self.batch_size / seconds_per_step
        if self.flops_per_step and self.peak_flops:
            rates["mfu"] = flop_utilisation(self.flops_per_step, seconds_per_step, self.peak_flops, self.num_devices)
        if self.total_steps:
            rates["eta_seconds"] = max(0, self.total_steps - step) * seconds_per_step
        return rates

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> dict[str, Any]:
        """Log `scalars` (e.g. the averaged metrics) at `step`; returns the record written."""
        step = int(step)
        record = {"step": step, **{name: float(np.asarray(value)) for name, value in scalars.items()},
                  **self._rates(step)}
        if not self.enabled:
            return record
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tensorboard is not None:
            for name, value in record.items():
                if name != "step":
                    self._tensorboard.add_scalar(name, value, step)
            self._tensorboard.flush()
        self.console(self._line(record))
        return record

    def _line(self, record: Mapping[str, Any]) -> str:
        total = f"/{self.total_steps}" if self.total_steps else ""
        parts = [f"step {record['step']}{total}"]
        if "loss" in record:
            parts.append(f"loss {_format(record['loss'])}")
        rates = ("steps_per_sec", "images_per_sec", "mfu", "eta_seconds")
        parts += [f"{name} {_format(value)}" for name, value in record.items()
                  if name not in ("step", "loss", *rates)]
        if "images_per_sec" in record:
            parts.append(f"{record['images_per_sec']:.1f} img/s")
        if "mfu" in record:
            parts.append(f"MFU {100 * record['mfu']:.1f}%")
        if "eta_seconds" in record and math.isfinite(record["eta_seconds"]):
            parts.append(f"ETA {datetime.timedelta(seconds=round(record['eta_seconds']))}")
        return " | ".join(parts)

    def write_images(self, step: int, images: Mapping[str, Any]) -> list[pathlib.Path]:
        """Each NHWC [-1, 1] batch in `images` as `<workdir>/images/<name>_<step>.png` (and to TensorBoard)."""
        if not self.enabled:
            return []
        paths = []
        for name, batch in images.items():
            path = write_image_grid(self.workdir / "images" / f"{name}_{int(step):08d}.png", batch)
            paths.append(path)
            if self._tensorboard is not None:
                with Image.open(path) as grid:
                    self._tensorboard.add_image(name, np.asarray(grid.convert("RGB")), int(step), dataformats="HWC")
        if self._tensorboard is not None:
            self._tensorboard.flush()
        return paths

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
