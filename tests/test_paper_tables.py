"""experiments/paper_tables/ (one config per reported row) and experiments/paper_tables.py (the tables).

Every row loads and names a real model config and valid sampler settings; every command of a
measurable row parses with `ldm-jax evaluate`'s own parser into the row's settings; the tables render
from results.json files; the toy rows run end to end at the smoke size (a subprocess on one CPU
device, about a minute on 2 busy cores: marked slow).
"""
import importlib.util
import json
import os
import shlex
import subprocess
import sys

import pytest

from ldm_jax import cli, config_files
from ldm_jax.diffusion.sampling import SAMPLERS
from ldm_jax.evaluation import evaluate as evaluate_lib
from tests.conftest import REPO

TABLES = (1, 2, 3, 5, 7, 8)


@pytest.fixture(scope="module")
def paper_tables():
    spec = importlib.util.spec_from_file_location("paper_tables_script", REPO / "experiments" / "paper_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def all_rows(paper_tables):
    return {number: paper_tables.table_rows(paper_tables.load_table(number)) for number in TABLES}


def _measurable(all_rows, paper_tables):
    return [row for rows in all_rows.values() for row in rows if paper_tables._rows_module()["runnable"](row)]


def test_every_row_loads_with_an_existing_model_config_and_valid_sampler_settings(paper_tables, all_rows):
    for number, rows in all_rows.items():
        module = paper_tables.load_table(number)
        assert [row.row for row in rows] == list(module.ROWS)
        for row in rows:
            spec = f"experiments/paper_tables/table{number}.py:{row.row}"
            assert config_files.load_config(REPO / spec).to_dict() == row.to_dict(), spec
            assert row.table == f"table{number}" and row.label
            assert list(row.paper) and set(row.paper) == set(module.COLUMNS), spec
            assert set(row.ours) <= set(module.COLUMNS), spec
            if row.model.config and not row.model.toy:
                model = config_files.load_config(REPO / row.model.config)
                assert "first_stage" in model.model, spec
                if row.model.checkpoint:
                    assert row.model.checkpoint == model.released.checkpoint, spec
            evaluation = row.evaluation
            if "sampler" in evaluation:
                assert evaluation.sampler in SAMPLERS and evaluation.steps >= 1, spec
                assert 0.0 <= evaluation.eta <= 1.0 and evaluation.get("guidance_scale", 1.0) >= 1.0, spec
            assert set(evaluation.get("metrics") or ()) <= set(evaluate_lib.METRICS), spec


def test_the_sampler_settings_the_paper_prints(all_rows):
    rows = {(row.table, row.row): row.evaluation for table in all_rows.values() for row in table}
    assert (rows["table1", "celebahq_ldm4"].steps, rows["table1", "ffhq_ldm4"].steps) == (500, 200)
    assert rows["table2", "ldm_kl8_guided"].guidance_scale == 1.5 and rows["table2", "ldm_kl8"].steps == 250
    assert rows["table3", "ldm4_guided"].guidance_scale == 1.5 and rows["table3", "ldm4"].guidance_scale == 1.0
    assert rows["table3", "ldm4_guided"].steps == 250 and rows["table3", "ldm4_guided"].num_samples == 50_000
    assert rows["table5", "ldm4_100"].steps == 100


def test_super_resolution_and_inpainting_rows_sample_their_checkpoint_on_the_data(paper_tables, all_rows):
    rows = {(row.table, row.row): row for table in all_rows.values() for row in table}
    sr, inpainting = rows["table5", "ldm4_100"], rows["table7", "big_ft"]
    for row in (sr, inpainting):
        settings = paper_tables.run_settings(row)
        assert settings["checkpoint"] and settings["config"] == row.model.config and "samples" not in settings
        assert settings["data"].startswith("/data/") and settings["steps"] >= 1
    assert set(sr.evaluation.metrics) == {"fid", "is", "psnr", "ssim"}
    # Tab. 5's training-split FID scores the first run's samples again, without sampling.
    train = paper_tables.run_settings(sr, "train_split")
    assert train["samples"] == f"{paper_tables.DEFAULT_RESULTS}/{paper_tables.results_name(sr)}/samples"
    assert "steps" not in train
    assert train["metrics"] == ["fid"] and train["data"] != sr.evaluation.data
    # Tab. 7: FID and LPIPS, all masks and the hard (40-50%) ones.
    assert set(inpainting.evaluation.metrics) == {"fid", "lpips"} and inpainting.evaluation.lpips_vgg16_weights
    hard = paper_tables.run_settings(inpainting, "hard")
    assert hard["mask_coverage"] == [0.4, 0.5] and hard["checkpoint"] == inpainting.model.checkpoint
    assert set(inpainting.ours) == set(inpainting.paper)


def test_table_3_and_8_have_toy_rows_with_an_empty_paper_column(all_rows):
    toy = [row for table in (3, 8) for row in all_rows[table] if row.model.toy]
    assert {row.row for row in toy} == {"toy_ldm", "toy_ldm_guided", "toy_kl_f4"}
    for row in toy:
        assert not any(row.paper.values())
        assert row.evaluation.features == "builtin" and row.evaluation.data == "builtin"
    guidance = {row.row: row.evaluation.get("guidance_scale") for row in toy}
    assert guidance["toy_ldm"] == 1.0 and guidance["toy_ldm_guided"] > 1.0


def test_bad_rows_fail_with_what_is_wrong(paper_tables):
    rows = paper_tables._rows_module()
    with pytest.raises(ValueError, match="unknown row 'ldm5'.*ldm4_guided"):
        paper_tables.load_table(3).get_config("ldm5")
    model = rows["released_model"]("configs/kl_f8.py")
    with pytest.raises(ValueError, match="sampler 'ddim2'"):
        rows["row"]("tableX", "r", "R", paper={"FID": "1"}, ours={"FID": ["fid"]}, model=model,
                    evaluation=rows["evaluation"](sampler="ddim2", steps=10))
    with pytest.raises(ValueError, match="eta must be in"):
        rows["row"]("tableX", "r", "R", paper={"FID": "1"}, ours={"FID": ["fid"]}, model=model,
                    evaluation=rows["evaluation"](eta=2.0))
    with pytest.raises(ValueError, match="not a results.json metric"):
        rows["row"]("tableX", "r", "R", paper={"FID": "1"}, ours={"FID": ["fidd"]}, model=model,
                    evaluation=rows["evaluation"]())
    with pytest.raises(ValueError, match="unknown evaluation settings"):
        rows["evaluation"](guidance=1.5)
    with pytest.raises(SystemExit):
        paper_tables.main(["--tables", "4"])
    with pytest.raises(SystemExit):
        paper_tables.main(["--run-toy"])


def test_every_command_parses_with_the_evaluate_cli_into_the_row_settings(paper_tables, all_rows, monkeypatch):
    parsed = []

    def fake_evaluate(settings, out_dir, *, progress=True, max_batches=None):
        parsed.append((settings, str(out_dir)))
        return {"complete": False, "batches_done": 0, "num_batches": 1}

    monkeypatch.setattr(evaluate_lib, "evaluate", fake_evaluate)
    rows = _measurable(all_rows, paper_tables)
    assert sum(not row.model.toy for row in rows) == 19   # 4 + 2 + 2 + 1 + 1 + 9 real rows
    for row in rows:
        for run in paper_tables.runs_of(row):
            line = paper_tables.command(row, run, results_dir="/results", work="/work")
            argv = shlex.split(line)
            assert argv[:2] == ["ldm-jax", "evaluate"]
            assert cli.main(argv[1:]) == 0, line
            settings, out = parsed.pop()
            assert settings == paper_tables.evaluation_settings(
                paper_tables.run_settings(row, run, work="/work")), line
            folder = "/work" if row.model.toy else "/results"
            assert out == f"{folder}/{paper_tables.results_name(row, run)}"


def _write_results(folder, name, metrics):
    (folder / name).mkdir(parents=True)
    (folder / name / "results.json").write_text(json.dumps({"settings": {}, "metrics": metrics, "num_samples": 8}))


def test_tables_render_ours_beside_the_paper_from_results_json(paper_tables, tmp_path):
    results = tmp_path / "results"
    _write_results(results, "table3_ldm4_guided",
                   {"fid": 3.712, "is": 240.1234, "is_std": 4.2, "precision": 0.861, "recall": 0.5049})
    _write_results(results, "table5_ldm4_100", {"fid": 2.93, "is": 160.04, "is_std": 3.1, "psnr": 24.06,
                                                "psnr_std": 3.71, "ssim": 0.6912, "ssim_std": 0.141})
    _write_results(results, "table5_ldm4_100-train_split", {"fid": 4.91})
    _write_results(results, "table8_kl_f8", {"r_fid": 0.951, "psnr": 24.0, "psnr_std": 4.3, "ssim": 0.7,
                                             "ssim_std": 0.15, "lpips": 0.0812, "lpips_std": 0.03})
    out = tmp_path / "tables.md"
    assert paper_tables.main(["--tables", "3,5,8", "--results", str(results), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert "## Tab. 3: class-conditional image synthesis, ImageNet 256x256" in lines

    def line_of(label):
        return next(line for line in lines if line.startswith(f"| {label} |"))

    cells = [cell.strip() for cell in line_of("LDM-4-G (ours), 250 steps, c.f.g. s = 1.5").split("|")[1:-1]]
    # ours beside paper, with the paper's decimals
    assert cells[1:9] == ["3.71", "3.60", "240.12 ± 4.20", "247.67 ± 5.59", "0.86", "0.87", "0.50", "0.48"]
    assert "DDIM 250 steps, eta 0, s = 1.5, 50,000 samples" in cells[9]
    assert line_of("LDM-4 (ours)").split("|")[2].strip() == "—"                      # not measured yet
    sr = [cell.strip() for cell in line_of("LDM-4 (ours, 100 steps)").split("|")[1:-1]]
    assert sr[1:9] == ["2.9 / 4.9", "2.8† / 4.8‡", "160.0 ± 3.1", "166.3", "24.1 ± 3.7", "24.4 ± 3.8",
                       "0.69 ± 0.14", "0.69 ± 0.14"]
    assert line_of("LDM-4 (ours, big, 100 steps)").split("|")[2].strip() == "n/a"   # no model to measure
    ae = [cell.strip() for cell in line_of("f=8, KL, c=4").split("|")[1:-1]]
    assert ae[1:13] == ["0.95", "0.90", "n/a", "209.90 ± 4.92", "24.00 ± 4.30", "24.19 ± 4.19", "n/a",
                        "1.02 ± 0.35", "0.70 ± 0.15", "0.69 ± 0.15", "0.0812 ± 0.0300", ""]
    text = "\n".join(lines)
    assert f"--out {results}/table3_ldm4_guided --checkpoint models/ldm/cin256-v2/model.ckpt" in text
    assert "--guidance-scale 1.5" in text and "/data/imagenet/train:" in text


@pytest.mark.slow
def test_toy_rows_train_evaluate_and_fill_the_tables(tmp_path):
    work, out = tmp_path / "work", tmp_path / "tables.md"
    # One CPU device, as a user runs it (the test process simulates 8); the tests' compilation cache.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_backend_optimization_level=0",
           "JAX_COMPILATION_CACHE_DIR": str(REPO / ".cache" / "jax_compilation"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
    subprocess.run([sys.executable, str(REPO / "experiments" / "paper_tables.py"), "--tables", "3,8", "--run-toy",
                    "--toy-size", "smoke", "--work", str(work), "--out", str(out), "--no-progress"],
                   check=True, cwd=REPO, env=env, capture_output=True, text=True)
    for name in ("table3_toy_ldm", "table3_toy_ldm_guided", "table8_toy_kl_f4"):
        results = json.loads((work / name / "results.json").read_text())
        assert results["complete"] and results["num_samples"] == 12, name
    guided = json.loads((work / "table3_toy_ldm_guided" / "results.json").read_text())
    assert guided["settings"]["guidance_scale"] == 3.0 and guided["settings"]["steps"] == 2
    assert 1.0 <= guided["metrics"]["is"] <= 12.0 and 0.0 <= guided["metrics"]["precision"] <= 1.0
    lines = out.read_text().splitlines()
    for label in ("toy: class-conditional LDM, built-in shapes 16x16", "toy: f=4, KL, c=3, built-in shapes 16x16"):
        cells = [cell.strip() for cell in next(line for line in lines if line.startswith(f"| {label} |")).split("|")]
        assert cells[2] not in ("—", "n/a") and float(cells[2].split()[0]) >= 0.0, cells   # FID / R-FID filled
        assert "12 " in cells[-2], cells   # the smoke size's sample count, not the default's
