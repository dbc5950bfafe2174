"""experiments/device_check.py --dry-run: every part of the one-call accelerator check runs and reports."""
import json
import math
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "experiments"))
import device_check  # noqa: E402


@pytest.mark.slow
def test_dry_run_reports_every_part(tmp_path, capsys):
    out = tmp_path / "check.json"
    assert device_check.main(["--dry-run", "--repeats", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["dry_run"] and report["platform"] == "cpu" and report["devices"] == 8
    for row in report["attention"]:  # bfloat16 against float32 softmax attention, output and gradient
        assert row["implementation"] == "einsum" and row["dtype"] == "bfloat16"
        assert 0 < row["output_rel_error"] < 2e-2 and 0 < row["grad_rel_error"] < 2e-2
    assert [row["batch"] for row in report["sampling"]] == [1, 2]
    for row in report["sampling"]:
        assert row["sampling_s"] > 0 and row["decode_s"] > 0 and row["compile_s"] > 0
        assert row["estimate_gb"] > 0 and row["device_peak_gb"] is None  # the CPU keeps no device statistics
    training = report["training"]
    assert training["images_per_s"] > 0 and training["tflops_per_step"] > 0 and math.isfinite(training["loss"])
    assert training["mfu"] is None  # no peak FLOP/s is known for a CPU
