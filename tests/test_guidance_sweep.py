"""experiments/guidance_sweep.py --dry-run: FID and CLIP score per guidance scale, end to end on tiny random
models (a text LDM, the built-in feature net, an open_clip-layout CLIP)."""
import json
import math
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "experiments"))
import guidance_sweep  # noqa: E402


@pytest.mark.slow
def test_dry_run_scores_every_scale(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert guidance_sweep.main(["--dry-run", "--work", str(tmp_path / "work"), "--out", str(out),
                                "--no-progress"]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [row["guidance_scale"] for row in rows] == list(guidance_sweep.TINY_SCALES)
    for row in rows:
        assert math.isfinite(row["fid"]) and 0 <= row["clip_score"] <= 100 and row["num_samples"] == 8
    assert report["settings"]["metrics"] == ["fid", "clip_score"]
    # Each scale is its own evaluation, its samples drawn with that guidance.
    for scale in guidance_sweep.TINY_SCALES:
        results = json.loads((tmp_path / "work" / f"cfg_{scale:g}" / "results.json").read_text())
        assert results["settings"]["guidance_scale"] == scale and results["clip_model"]["layout"] == "open_clip"
    assert rows[0]["fid"] != rows[1]["fid"]
    assert "| guidance scale | FID | CLIP score | samples |" in capsys.readouterr().out
