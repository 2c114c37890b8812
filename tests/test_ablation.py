"""Smoke test of benchmarks/ablation.py: a tiny slice runs on CPU and writes sensible records.

It checks that the script keeps working as the library changes, not the numbers themselves.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str) -> ModuleType:
    """Import benchmarks/<name>.py (benchmarks/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    assert "| 16×16 | 10 | 8 | 4 | 0,1 | 1 / 2 | 2 ± 1.4 |" in text


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
