"""Smoke tests of the benchmark scripts (attention scaling, throughput, ablation) on tiny sizes.

These check that the scripts keep working as the library changes, not the numbers themselves.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str) -> ModuleType:
    """Import benchmarks/<name>.py (benchmarks/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_attention_scaling_runs_on_cpu(tmp_path):
    script = load_script("attention_scaling")
    out = tmp_path / "attention.json"
    argv = ["--device", "cpu", "--batch", "2", "--channels", "16", "--sizes", "8", "16",
            "--warmup", "0", "--repeats", "1", "--max-gib", "0.001",
            "--json", str(out)]  # fmt: skip
    results = script.main(argv)

    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    meta = results["meta"]
    for key in ("date", "command", "device", "torch", "python", "batch", "channels", "memory"):
        assert key in meta
    rows = results["rows"]
    assert {(r["size"], r["path"]) for r in rows} == {
        (size, path) for size in (8, 16) for path in script.PATHS
    }
    measured = [r for r in rows if r["status"] == "ok"]
    assert measured, rows
    for r in measured:
        assert positive(r["time_ms"]) and positive(r["peak_mib"]), r
        assert r["backend"]
    # The 16×16 full attention needs 2·256·256·4 B · 4 = 2 MiB > 0.001 GiB: skipped, not run.
    full_16 = next(r for r in rows if (r["size"], r["path"]) == (16, "explicit-full"))
    assert full_16["status"].startswith("skipped: would need")


def test_train_throughput_runs_on_cpu(tmp_path):
    script = load_script("train_throughput")
    out = tmp_path / "throughput.json"
    argv = ["--device", "cpu", "--img-sizes", "32", "--batch", "4", "--channels", "8",
            "--variants", "eager-fp32", "amp", "amp+fast_step", "--warmup", "1", "--steps", "1",
            "--repeats", "1", "--json", str(out)]  # fmt: skip
    results = script.main(argv)

    assert json.loads(out.read_text()) == results
    for key in ("date", "command", "device", "torch", "python", "peak_source"):
        assert key in results["meta"]
    eager, amp, fast = results["rows"]
    assert eager["variant"] == "eager-fp32" and eager["status"] == "ok"
    for key in ("images_per_s", "ms_per_step", "flops_per_step", "achieved_tflops"):
        assert positive(eager[key]), (key, eager)
    assert eager["speedup_vs_eager_fp32"] == 1.0
    assert amp["status"] == "GPU only"  # the Trainer never uses AMP on CPU
    assert fast["status"] == "GPU only"  # CUDA graphs need CUDA


def test_step_overhead_runs_on_cpu(tmp_path):
    script = load_script("step_overhead")
    out = tmp_path / "overhead.json"
    argv = ["--device", "cpu", "--batch", "1", "2", "--channels", "8", "--warmup", "1",
            "--steps", "2", "--json", str(out)]  # fmt: skip
    results = script.main(argv)

    assert json.loads(out.read_text()) == results
    for key in ("date", "command", "device", "torch", "python", "threads"):
        assert key in results["meta"]
    assert [(r["variant"], r["batch"]) for r in results["rows"]] == [("eager", 1), ("eager", 2)]
    for row in results["rows"]:
        assert row["status"] == "ok"
        assert positive(row["host_ms"]) and len(row["host_ms_all"]) == 2
        # The profiler also records wrappers (aten::linear around aten::addmm), so it sees more.
        assert row["aten_ops"] > row["dispatched_ops"] > 100
        assert "kernel_launches" not in row  # CUDA only
    # One step dispatches the same ops whatever the batch size.
    assert results["rows"][0]["dispatched_ops"] == results["rows"][1]["dispatched_ops"]


def test_peak_table_matches_device_names():
    script = load_script("train_throughput")
    assert script.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.0
    assert script.peak_tflops("NVIDIA A100-SXM4-40GB", "fp32") == 19.5
    assert script.peak_tflops("Tesla T4", "fp16") == 65.0
    assert script.peak_tflops("NVIDIA H100 PCIe", "bf16") is None  # not the SXM part
    assert script.peak_tflops("NVIDIA GeForce RTX 4090", "bf16") is None


def test_channels_last_trainer_steps_on_cpu(tmp_path):
    import torch

    script = load_script("train_throughput")
    args = script.parse_args(["--device", "cpu", "--channels", "8"])
    trainer = script.make_trainer(32, 4, "amp+channels_last", args, str(tmp_path))
    trainer.step()
    weight = trainer.D.blocks[1].conv.parametrizations.weight.original  # (out, in, 4, 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    images, _ = trainer._real_batch()
    assert images.is_contiguous(memory_format=torch.channels_last)


# ---- benchmarks/ablation.py ----


def tiny(tmp_path: Path) -> list[str]:
    return ["--seeds", "0", "--steps", "2", "--channels", "8", "--batch", "4",
            "--eval-samples", "16", "--device", "cpu", "--out", str(tmp_path / "results"),
            "--runs-dir", str(tmp_path / "runs")]  # fmt: skip


def test_sweep_writes_records_and_table(tmp_path, capsys):
    script = load_script("ablation")
    argv = ["--datasets", "twin-shapes", "--attention", "none", "16", "32", *tiny(tmp_path)]
    assert script.main(argv) == 0

    results = json.loads((tmp_path / "results" / "ablation.json").read_text())
    runs = results["runs"]
    assert [(r["dataset"], r["placement"], r["seed"]) for r in runs] == [
        ("twin-shapes", "none", 0),
        ("twin-shapes", "16", 0),
    ]
    assert any("attention at 32" in note for note in results["skipped"])  # no 32×32 map in D
    for r in runs:
        assert r["steps"] == 2 and r["config"]["steps"] == 2
        for key in ("device", "torch", "date", "wall_time_s", "train_time_s", "command"):
            assert key in r
        assert r["params"]["G"] > 0 and r["params"]["D"] > 0
        score = r["metrics"][script.CONSISTENCY_NAME]
        assert 0.0 <= score <= 1.0
        assert math.isfinite(r["metrics"][script.GREY_FD_NAME])
    # Attention adds parameters (1.25·C² + γ per block), so the counts must differ.
    assert runs[1]["params"]["G"] > runs[0]["params"]["G"]
    reference = next(iter(results["references"].values()))
    assert reference["consistency, real images"] > 0.9

    table = (tmp_path / "results" / "ablation.md").read_text()
    assert "## twin-shapes" in table and "| none |" in table and "| 16×16 |" in table
    assert "(1 seed)" in table  # one seed: no fake ± 0
    assert "## twin-shapes" in capsys.readouterr().out


def test_done_line_names_every_metric_apart():
    """The one-line summary of a run must not print two metrics under the same short name (the
    own-chance and kappa entries share their agreement's name up to the colon)."""
    script = load_script("ablation")
    shape = "shape agreement (halves' shape classes match)"
    metrics = {
        "KID (MNIST classifier features) std": 1.0,
        "consistency std over samples": 0.2,
        shape: 0.35,
        script.OWN_CHANCE_NAME.format(shape): 0.34,
        script.KAPPA_NAME.format(shape): 0.02,
    }
    line = script.short(metrics)
    names = [part.split("=")[0] for part in line.split(", ")]
    assert names == ["KID std", "consistency std over samples", "shape agreement",
                     "shape agreement chance", "shape agreement kappa"]  # fmt: skip
    assert "shape agreement kappa=0.02" in line


def test_skip_existing_resumes_without_retraining(tmp_path, capsys):
    script = load_script("ablation")
    argv = ["--datasets", "twin-shapes", "--attention", "none", *tiny(tmp_path)]
    script.main(argv)
    first = json.loads((tmp_path / "results" / "ablation.json").read_text())
    capsys.readouterr()
    script.main([*argv, "--skip-existing"])
    assert "exists: twin-shapes attention=none seed=0" in capsys.readouterr().out
    again = json.loads((tmp_path / "results" / "ablation.json").read_text())
    assert again["runs"] == first["runs"]


def test_d_width_apart_from_g_width_is_its_own_run(tmp_path, capsys):
    """--d-channels makes D wider than G: the networks get those widths, the record and table
    say G/D, and the run does not count as (or replace) the same-width run of that seed."""
    script = load_script("ablation")
    argv = ["--datasets", "twin-shapes", "--attention", "none", *tiny(tmp_path)]
    script.main(argv)
    script.main([*argv, "--d-channels", "16", "--skip-existing"])
    assert "exists" not in capsys.readouterr().out  # a new run, not the width-8 one again
    runs = json.loads((tmp_path / "results" / "ablation.json").read_text())["runs"]
    assert [(r["config"]["g_channels"], r["config"]["d_channels"]) for r in runs] == [
        (8, 8),
        (8, 16),
    ]
    assert runs[0]["run_id"].split("|")[4] == "8" and runs[1]["run_id"].split("|")[4] == "8/16"
    assert runs[1]["params"]["G"] == runs[0]["params"]["G"]
    assert runs[1]["params"]["D"] > 3 * runs[0]["params"]["D"]  # convs' weights grow as width²
    table = (tmp_path / "results" / "ablation.md").read_text()
    assert "| 2 | 8 | 4 |" in table and "| 2 | 8/16 | 4 |" in table
    script.main([*argv, "--d-channels", "16", "--skip-existing"])
    assert "exists: twin-shapes attention=none seed=0" in capsys.readouterr().out


def test_table_aggregates_seeds():
    script = load_script("ablation")
    run = {"dataset": "mnist5k", "placement": "16", "steps": 10, "train_time_s": 1.0,
           "params": {"G": 1, "D": 2}, "config": {"g_channels": 8, "batch_size": 4, "img_size": 32},
           "device": "cpu", "torch": "x", "date": "2026-01-01"}  # fmt: skip
    metrics = {script.KID_NAME: 0.0, "classes covered": 1.0}
    runs = [
        run | {"seed": s, "metrics": metrics | {script.FD_NAME: fd}}
        for s, fd in ((0, 1.0), (1, 3.0))
    ]
    text = script.table({"runs": runs, "references": {}})
    assert "| 16×16 | default | 10 | 8 | 4 | cpu | 0,1 | 1 / 2 | 2 ± 1.4 |" in text


def test_cpu_and_gpu_runs_of_one_setting_stay_apart():
    # The sweep trains in bf16 on CUDA and float32 on the CPU: the same seed and settings on the
    # two are different runs. Neither may replace the other, nor share a row of the table.
    script = load_script("ablation")
    run = {"dataset": "twin-shapes", "placement": "16", "steps": 10, "seed": 1,
           "eval_samples": 16, "train_time_s": 1.0, "params": {"G": 1, "D": 2},
           "config": {"g_channels": 8, "batch_size": 4, "img_size": 32},
           "torch": "x", "date": "2026-01-01"}  # fmt: skip
    on_cpu = run | {"device": "cpu: x86_64", "metrics": {script.CONSISTENCY_NAME: 0.25}}
    on_gpu = run | {"device": "cuda: NVIDIA H200", "metrics": {script.CONSISTENCY_NAME: 0.75}}
    assert script.run_id(on_cpu).endswith("|cpu") and script.run_id(on_gpu).endswith("|cuda")
    results = {"runs": [], "references": {}}
    for record in (on_cpu, on_gpu, on_cpu | {"metrics": {script.CONSISTENCY_NAME: 0.5}}):
        script.replace_run(results, record, script.run_key)
    assert sorted(r["metrics"][script.CONSISTENCY_NAME] for r in results["runs"]) == [0.5, 0.75]
    text = script.table(results)
    assert "| 16×16 | default | 10 | 8 | 4 | cpu | 1 | 1 / 2 | 0.5 (1 seed) |" in text
    assert "| 16×16 | default | 10 | 8 | 4 | cuda | 1 | 1 / 2 | 0.75 (1 seed) |" in text


def test_overfitting_records_the_gap(tmp_path):
    script = load_script("ablation")
    argv = ["--overfitting", "--attention", "none", "--subset", "20", "--every", "1",
            *tiny(tmp_path)]  # fmt: skip
    assert script.main(argv) == 0
    results = json.loads((tmp_path / "results" / "overfitting.json").read_text())
    (run,) = results["runs"]
    curve = run["curve"]
    assert curve["step"] == [0, 1, 2]
    for train, held, gap in zip(curve["d_train"], curve["d_held_out"], curve["gap"], strict=True):
        assert math.isclose(gap, train - held, abs_tol=1e-9)
    assert run["final_gap"] == curve["gap"][-1]


# ---- benchmarks/evaluate_pretrained.py ----


def test_evaluate_pretrained_scores_samples_it_saves(tmp_path):
    import numpy as np

    from sagan_edu.metrics import FD_NAME

    script = load_script("evaluate_pretrained")
    names = ["mnist5k-sagan32", "twin-shapes-noattn32"]
    results = script.main(["--names", *names, "--n", "40", "--out", str(tmp_path)])

    assert json.loads((tmp_path / "pretrained.json").read_text()) == results
    with np.load(tmp_path / "pretrained-samples.npz") as samples:
        assert samples["mnist5k-sagan32"].shape == (40, 1, 32, 32)
        assert samples["twin-shapes-noattn32"].shape == (40, 3, 32, 32)
        assert samples["mnist5k-sagan32"].dtype == np.uint8
    digits = results["generators"]["mnist5k-sagan32"]["metrics"]
    assert sum(digits["class histogram"]) == 40 and positive(digits[FD_NAME])
    shapes = results["generators"]["twin-shapes-noattn32"]["metrics"]
    assert 0 <= shapes["consistency (mean over samples)"] <= 1
    assert results["references"]["twin-shapes"]["consistency, real images"] > 0.9
    table = (tmp_path / "pretrained.md").read_text()
    assert "| mnist5k-sagan32 | 16×16 | 1500 |" in table and "## twin-shapes" in table


def _add_runs(path: str, first: int) -> None:
    script = load_script("ablation")
    for i in range(first, first + 40):
        with script.locked_json(Path(path), {"runs": []}) as results:
            results["runs"].append(i)


def test_side_by_side_sweeps_keep_every_record(tmp_path):
    import multiprocessing

    path = tmp_path / "ablation.json"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_runs, args=(str(path), k * 100)) for k in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    runs = json.loads(path.read_text())["runs"]
    assert sorted(runs) == [*range(40), *range(100, 140)]  # no write lost the other's record


def test_variants_record_the_causal_test_per_sample_scores_and_samples(tmp_path):
    import numpy as np

    script = load_script("ablation")
    base = ["--datasets", "twin-shapes", "--attention", "16", *tiny(tmp_path)]
    assert script.main([*base, "--attention-in", "g"]) == 0
    assert script.main([*base, "--block", "residual"]) == 0
    assert script.main([*base, "--tuning", "--lr-d", "2e-4", "--lr-g", "2e-4"]) == 0
    runs = json.loads((tmp_path / "results" / "ablation.json").read_text())["runs"]
    assert len(runs) == 2  # two variants: neither record replaced the other
    g_only, residual = runs
    assert g_only["config"]["attention_in"] == "g" and set(g_only["gamma"]) == {"G/16x16"}
    assert residual["config"]["attention_block"] == "residual"
    assert "attention_off" in g_only and "attention_off" not in residual  # no attention in G
    for name in ("scale 0", "uniform"):
        assert 0 <= g_only["attention_off"][name][script.SHAPE_NAME] <= 1
    per_sample = g_only["per_sample"]
    assert len(per_sample["consistency"]) == 16
    assert set(per_sample["shape"]) <= {0, 1} and set(per_sample["colour_left"]) <= set(range(6))
    # the mean of the per-sample values is the recorded mean
    mean = sum(per_sample["shape"]) / 16
    assert math.isclose(g_only["metrics"][script.SHAPE_NAME], mean, abs_tol=1e-6)
    # this model's own chance level, counted by hand from the recorded half classes
    for kind, name in (("shape", script.SHAPE_NAME), ("colour", script.COLOUR_NAME)):
        left, right = per_sample[f"{kind}_left"], per_sample[f"{kind}_right"]
        chance = sum(left.count(k) * right.count(k) for k in set(left)) / 16**2
        assert math.isclose(g_only["metrics"][script.OWN_CHANCE_NAME.format(name)], chance)
        agreement = sum(per_sample[kind]) / 16
        kappa = g_only["metrics"].get(script.KAPPA_NAME.format(name))
        if chance < 1:  # else kappa is undefined and left out
            assert math.isclose(kappa, (agreement - chance) / (1 - chance), abs_tol=1e-9)
    assert g_only["status"] in ("trained", "collapsed") and g_only["seed"] == 0
    tuning = json.loads((tmp_path / "results" / "tuning.json").read_text())
    assert tuning["runs"][0]["config"]["lr_d"] == 2e-4 and "collapse_rule" in tuning
    assert "| 0.0002 | 0.0002 |" in (tmp_path / "results" / "tuning.md").read_text()
    with np.load(tmp_path / "results" / "ablation-samples.npz") as samples:
        keys = set(samples.keys())
        assert f"{g_only['run_id']}|samples" in keys
        assert f"{g_only['run_id']}|samples_attention_off" in keys
        assert f"{residual['run_id']}|samples_attention_off" not in keys
        assert samples[f"{residual['run_id']}|samples"].shape == (16, 3, 32, 32)
        assert samples[f"{residual['run_id']}|samples"].dtype == np.uint8


# ---- benchmarks/gpu_sweep.py ----


def test_gpu_sweep_job_list_is_distinct_and_avoids_seed_zero(capsys):
    script = load_script("gpu_sweep")
    jobs = script.job_list()
    assert len(jobs) == 162 and len({tuple(j.args) for j in jobs}) == 162
    assert all(j.args[j.args.index("--seeds") + 1] != "0" for j in jobs)
    extra_seeds = [j for j in jobs if j.args[j.args.index("--seeds") + 1] in ("4", "5")]
    assert {j.cell for j in extra_seeds} == {"j", "n", "o"} and len(extra_seeds) == 6 + 22 + 20
    priority = "abcdgefhijklmnopq"  # notebook 05's √d cells (g) before the tuning grid (e)
    assert [j.cell for j in jobs] == sorted((j.cell for j in jobs), key=priority.index)
    tuning = [j for j in jobs if j.cell == "e"]
    assert len(tuning) == 30 and all("--tuning" in j.args for j in tuning)
    tuning_extra = [j for j in jobs if j.cell == "o"]
    assert len(tuning_extra) == 20 and all("--tuning" in j.args for j in tuning_extra)
    assert {tuple(j.args[:4]) + tuple(j.args[6:]) for j in tuning_extra} == {
        tuple(j.args[:4]) + tuple(j.args[6:]) for j in tuning
    }  # the same ten cells as the grid, only the seeds differ
    assert script.main(["--dry-run"]) == 0
    assert "72 jobs" in capsys.readouterr().out  # the default cells: a to g
    assert script.main(["--dry-run", "--cells", "hijk"]) == 0
    assert "24 jobs" in capsys.readouterr().out
    widths = [j.args[j.args.index("--channels") :][:4] for j in jobs if j.cell == "l"]
    assert len(widths) == 12 and {w[1] != w[3] for w in widths} == {True}  # G and D differ


def test_gpu_sweep_runs_two_tiny_jobs_into_one_folder(tmp_path):
    script = load_script("gpu_sweep")
    out = tmp_path / "out"
    argv = ["--out", str(out), "--only", "2", "--steps", "2", "--channels", "8",
            "--eval-samples", "8", "--device", "cpu", "--workers", "2"]  # fmt: skip
    assert script.main(argv) == 0
    runs = json.loads((out / "ablation.json").read_text())["runs"]
    assert sorted((r["placement"], r["seed"], r["steps"]) for r in runs) == [
        ("none", 1, 2),
        ("none", 2, 2),
    ]
    log = (out / "gpu-sweep.log").read_text()
    assert log.count(": ok in ") == 2 and "finished 2 jobs (0 failed)" in log
    # only result files: no lock files or per-job logs left in the folder
    allowed = {"ablation.json", "ablation.md", "tuning.md", "ablation-samples.npz", "gpu-sweep.log"}
    assert {p.name for p in out.iterdir()} <= allowed


def test_attention_cost_runs_on_cpu(tmp_path):
    script = load_script("attention_cost")
    out = tmp_path / "cost.json"
    argv = ["--channels", "8", "--batch", "4", "--warmup", "1", "--steps", "1", "--rounds", "2",
            "--json", str(out)]  # fmt: skip
    results = script.main(argv)

    assert json.loads(out.read_text()) == results
    for key in ("date", "command", "device", "torch", "threads", "setting"):
        assert key in results["meta"]
    rows = {r["variant"]: r for r in results["rows"]}
    assert list(rows) == ["none", "8x8", "16x16", "16x16 residual"]
    for r in rows.values():
        assert len(r["ms_per_step_per_round"]) == 2 and positive(r["ms_per_step_median"]), r
    assert rows["none"]["ratio_vs_none"] == 1.0
    # One SAGAN block on a C-channel map has 1.25·C² + 1 weights (C/8 query and key, C/2 value,
    # C/2 -> C output, γ). With base width 8, G's and D's 16×16 maps have C = 16: 321 weights.
    for net in ("params_G", "params_D"):
        assert rows["16x16"][net] - rows["none"][net] == 1.25 * 16**2 + 1


def test_course_05_cost_runs_the_notebook_cells(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGAN_EDU_FAST", "1")
    script = load_script("course_05_cost")
    out = tmp_path / "cost.json"
    results = script.main(["--rounds", "3", "--json", str(out)])

    assert json.loads(out.read_text()) == results
    assert results["meta"]["fast_mode"] is True
    cells = results["meta"]["cells"]  # name -> position in the notebook
    assert list(cells) == ["setup", "imports", "parameters", "cnn", "cost"]
    assert list(cells.values()) == sorted(cells.values())  # run in the notebook's order
    raw = results["raw"]
    assert raw["timing_rounds"] == 3  # the override, not the notebook's fast value
    for times in raw["seconds_per_step_per_round"].values():
        assert len(times["without"]) == len(times["with"]) == 3
        assert all(positive(t) for t in times["without"] + times["with"])
    # What the cell printed is what the raw numbers give: the median per-round CPU-time ratio.
    cpu = raw["seconds_per_step_per_round"]["CPU"]
    ratios = sorted(w / wo for wo, w in zip(cpu["without"], cpu["with"], strict=True))
    line = next(x for x in results["printed"] if x.strip().startswith("CPU time"))
    assert line.split()[2] == f"×{ratios[1]:.2f}"
    # the block: 1.25·C² multiply-adds per position plus N·M·(C/8 + C/2), C = 32, N = 256, M = 64
    madds = raw["forward_multiply_adds_per_image"]
    assert madds["with"] - madds["without"] == 1.25 * 32**2 * 256 + 256 * 64 * (4 + 16)
    assert raw["saved_for_backward_bytes"]["with"] > raw["saved_for_backward_bytes"]["without"]


def test_course_05_cost_keeps_the_recorded_run_in_fast_mode(monkeypatch):
    monkeypatch.setenv("SAGAN_EDU_FAST", "1")
    script = load_script("course_05_cost")
    recorded = (BENCHMARKS / "results" / "course-05-cost.json").read_bytes()
    with pytest.raises(SystemExit, match="pass --json"):
        script.main([])
    assert (BENCHMARKS / "results" / "course-05-cost.json").read_bytes() == recorded
