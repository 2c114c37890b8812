"""Tests of tools/make_pretrained.py: one command rebuilds one shipped weight file."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch

from sagan_edu import pretrained
from sagan_edu.training import sample_images

TOOL = Path(__file__).resolve().parents[1] / "tools" / "make_pretrained.py"


@pytest.fixture
def tool(tmp_path, monkeypatch):
    """The script as a module, writing into tmp_path instead of the package's weights folder."""
    spec = importlib.util.spec_from_file_location("make_pretrained", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(module, "RUNS", tmp_path / "runs")
    tiny = {"train_args": ["--dataset", "twin-shapes", "--steps", "2", "--attention-at", "8",
                           "--z-dim", "16", "--g-channels", "8", "--d-channels", "8",
                           "--batch-size", "8", "--no-progress"],
            "keep_discriminator": False}  # fmt: skip
    monkeypatch.setitem(module.RECIPES, "tiny", tiny)
    return module


def test_one_command_trains_exports_and_records_the_checksum(tool, tmp_path):
    assert tool.main(["tiny"]) == 0
    path = tmp_path / "weights" / "tiny.safetensors"
    G = pretrained.load(str(path))
    assert sample_images(G, 2).shape == (2, 3, 32, 32) and list(G.attention_layers()) == ["8x8"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (tmp_path / "weights" / "SHA256SUMS").read_text() == f"{digest}  tiny.safetensors\n"
    with pytest.raises(ValueError, match="ships only its generator"):
        pretrained.load_pretrained(str(path))
    # Running it again resumes the finished run (no retraining) and exports the same weights.
    before = {k: v.clone() for k, v in G.state_dict().items()}
    assert tool.main(["tiny"]) == 0
    after = pretrained.load(str(path)).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_unknown_names_are_refused_with_the_known_ones(tool, capsys):
    with pytest.raises(SystemExit):
        tool.main(["cifar-sagan"])
    assert "mnist5k-sagan32" in capsys.readouterr().err
