"""Metric averaging, the JSONL / console / TensorBoard writer, FLOP utilisation and image grids."""
import io
import json
import struct
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ldm_jax.training import metrics as metrics_lib
from ldm_jax.training.metrics import MetricAverager, MetricsWriter


def test_averages_each_metric_over_the_steps_that_returned_it():
    averager = MetricAverager()
    averager.update({"loss": jnp.float32(1.0), "lr": 0.1})
    averager.update({"loss": jnp.float32(3.0), "lr": 0.1})
    averager.update({"loss": jnp.array(5.0), "grad_norm": 2.0})  # e.g. a metric that starts later
    values = averager.compute_and_reset()
    assert values == pytest.approx({"loss": 3.0, "lr": 0.1, "grad_norm": 2.0})
    assert all(isinstance(v, float) for v in values.values())
    assert averager.compute() == {}
    averager.update({"loss": 7.0})
    assert averager.compute() == {"loss": 7.0}


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_records_every_log_step_and_is_appended_to_on_resume(tmp_path):
    lines = []
    with MetricsWriter(tmp_path, total_steps=100, batch_size=8, console=lines.append, peak_flops=0) as writer:
        first = writer.write_scalars(10, {"loss": 0.5, "grad_norm": jnp.float32(2.0)})
        second = writer.write_scalars(20, {"loss": 0.25, "lr": 1e-4})
        # Flushed at once: readable while the writer is still open.
        assert [r["step"] for r in _read_jsonl(writer.jsonl_path)] == [10, 20]
    assert "images_per_sec" not in first  # the first call only starts the clock
    assert second["images_per_sec"] > 0 and second["eta_seconds"] >= 0
    assert second["images_per_sec"] == pytest.approx(8 * second["steps_per_sec"])
    assert "mfu" not in second  # no peak known
    assert lines[0].startswith("step 10/100 | loss 0.5 | grad_norm 2")
    assert "img/s" in lines[1] and "ETA" in lines[1] and "lr 1.000e-04" in lines[1]

    with MetricsWriter(tmp_path, console=lines.append) as resumed:
        resumed.write_scalars(30, {"loss": 0.125})
    records = _read_jsonl(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["loss"]) for r in records] == [(10, 0.5), (20, 0.25), (30, 0.125)]
    assert records[0]["grad_norm"] == 2.0


def test_flop_utilisation_from_a_given_peak(tmp_path):
    assert metrics_lib.flop_utilisation(2e12, 0.5, 1e12, 8) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="positive"):
        metrics_lib.flop_utilisation(1e12, 0.0, 1e12, 1)
    with MetricsWriter(tmp_path, flops_per_step=3e9, peak_flops=1e12, num_devices=4, console=lambda _: None) as writer:
        writer.restart_clock(0)
        record = writer.write_scalars(5, {"loss": 1.0})
    assert record["mfu"] == pytest.approx(3e9 * record["steps_per_sec"] / 4e12)
    assert _read_jsonl(tmp_path / "metrics.jsonl")[0]["mfu"] == pytest.approx(record["mfu"])


def test_peak_flops_by_device_kind():
    def device(kind):
        return types.SimpleNamespace(device_kind=kind)

    assert metrics_lib.peak_flops_per_device(device("NVIDIA H100 80GB HBM3")) == 989e12
    assert metrics_lib.peak_flops_per_device(device("NVIDIA H100 PCIe")) == 756e12
    assert metrics_lib.peak_flops_per_device(device("TPU v5 lite")) == 197e12
    assert metrics_lib.peak_flops_per_device(device("TPU v4")) == 275e12
    assert metrics_lib.peak_flops_per_device(device("cpu")) is None


def test_step_flops_counts_a_matmul():
    m, k, n = 64, 128, 32
    flops = metrics_lib.step_flops(jax.jit(lambda a, b: a @ b), jax.ShapeDtypeStruct((m, k), jnp.float32),
                                   jax.ShapeDtypeStruct((k, n), jnp.float32))
    assert flops == pytest.approx(2 * m * k * n, rel=0.05)


def test_image_grid_is_written_and_readable(tmp_path):
    images = np.full((4, 8, 6, 3), -1.0, np.float32)
    images[1] = 1.0  # second image white
    images[2, ..., 0] = 0.0  # third: red channel at mid grey
    path = metrics_lib.write_image_grid(tmp_path / "grids" / "samples.png", jnp.asarray(images))
    with Image.open(path) as grid:
        assert grid.format == "PNG" and grid.size == (12, 16)  # 2 x 2 tiles of 6 x 8
        pixels = np.asarray(grid.convert("RGB"))
    assert (pixels[:8, :6] == 0).all() and (pixels[:8, 6:] == 255).all()
    assert (pixels[8:, :6, 0] == 127).all() and (pixels[8:, :6, 1:] == 0).all()
    with pytest.raises(ValueError, match="NHWC"):
        metrics_lib.write_image_grid(tmp_path / "bad.png", np.zeros((8, 8, 3)))


def test_write_images_names_grids_by_step(tmp_path):
    with MetricsWriter(tmp_path, console=lambda _: None) as writer:
        paths = writer.write_images(1200, {"samples": np.zeros((2, 4, 4, 3)), "inputs": np.ones((1, 4, 4, 1))})
    assert sorted(p.name for p in paths) == ["inputs_00001200.png", "samples_00001200.png"]
    assert all(p.parent == tmp_path / "images" and p.exists() for p in paths)


def test_without_tensorboard_only_jsonl_is_written(tmp_path, monkeypatch):
    real_find_spec = metrics_lib.importlib.util.find_spec
    monkeypatch.setattr(metrics_lib.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboardX", "tensorboard") else real_find_spec(name, *a))
    assert metrics_lib._tensorboard_writer_class() is None
    with MetricsWriter(tmp_path, console=lambda _: None) as writer:
        writer.write_scalars(1, {"loss": 1.0})
        writer.write_images(1, {"x": np.zeros((1, 4, 4, 3))})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "metrics.jsonl"]


def _tensorboard_events(folder):
    """Every Event in the TFRecord event files under `folder` (length, CRC, payload, CRC per record)."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
            offset += 12 + length + 4
    return events


def test_tensorboard_event_files_hold_the_scalars_and_images(tmp_path):
    pytest.importorskip("tensorboardX")  # in the test extra; optional for users
    with MetricsWriter(tmp_path, console=lambda _: None) as writer:
        writer.write_scalars(3, {"loss": 0.5})
        writer.write_scalars(7, {"loss": 0.25, "grad_norm": 2.0})
        writer.write_images(7, {"samples": np.zeros((4, 4, 4, 3))})
    values = [(event.step, value) for event in _tensorboard_events(tmp_path / "tensorboard")
              for value in event.summary.value]
    scalars = {(step, value.tag): value.simple_value for step, value in values if value.HasField("simple_value")}
    assert scalars[(3, "loss")] == 0.5 and scalars[(7, "loss")] == 0.25 and scalars[(7, "grad_norm")] == 2.0
    (step, tag, image), = [(step, value.tag, value.image) for step, value in values if value.HasField("image")]
    assert step == 7 and tag == "samples"
    grid = Image.open(io.BytesIO(image.encoded_image_string))
    assert grid.size == (image.width, image.height) == (8, 8)  # the 2 x 2 grid of 4x4 images the PNG holds


def test_a_disabled_writer_writes_nothing(tmp_path):
    lines = []
    writer = MetricsWriter(tmp_path / "run", console=lines.append, enabled=False)
    record = writer.write_scalars(1, {"loss": 2.0})
    assert record["loss"] == 2.0 and writer.write_images(1, {"x": np.zeros((1, 4, 4, 3))}) == []
    writer.close()
    assert not (tmp_path / "run").exists() and lines == []
