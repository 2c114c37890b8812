"""Smoke tests of the benchmark scripts: they run on tiny sizes on CPU and write sensible JSON.

These check that the scripts keep working as the library changes, not the numbers themselves.
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
            "--variants", "eager-fp32", "amp", "--warmup", "1", "--steps", "1",
            "--repeats", "1", "--json", str(out)]  # fmt: skip
    results = script.main(argv)

    assert json.loads(out.read_text()) == results
    for key in ("date", "command", "device", "torch", "python", "peak_source"):
        assert key in results["meta"]
    eager, amp = results["rows"]
    assert eager["variant"] == "eager-fp32" and eager["status"] == "ok"
    for key in ("images_per_s", "ms_per_step", "flops_per_step", "achieved_tflops"):
        assert positive(eager[key]), (key, eager)
    assert eager["speedup_vs_eager_fp32"] == 1.0
    assert amp["status"] == "GPU only"  # the Trainer never uses AMP on CPU


def test_peak_table_matches_device_names():
    script = load_script("train_throughput")
    assert script.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.0
    assert script.peak_tflops("NVIDIA A100-SXM4-40GB", "fp32") == 19.5
    assert script.peak_tflops("Tesla T4", "fp16") == 65.0
    assert script.peak_tflops("NVIDIA H100 PCIe", "bf16") is None  # not the SXM part
    assert script.peak_tflops("NVIDIA GeForce RTX 4090", "bf16") is None


def test_padded_block_computes_the_same_attention():
    import torch

    from sagan_edu.attention import SelfAttention2d

    script = load_script("attention_scaling")
    torch.manual_seed(0)
    block = SelfAttention2d(32)
    with torch.no_grad():
        block.gamma.fill_(1.0)
    padded = script.PaddedSelfAttention2d(32)
    padded.load_state_dict(block.state_dict())
    x = torch.randn(2, 32, 8, 8)
    block.eval()  # eval: no power-iteration step, so both use the same σ
    padded.eval()
    torch.testing.assert_close(padded(x), block(x), atol=1e-5, rtol=1e-5)


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
