"""Tests of the training loop: finite losses, exact resume, atomic checkpoints, divergence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
import torch

from sagan_edu import training
from sagan_edu.fast_step import CapturedStep
from sagan_edu.models import Generator
from sagan_edu.training import (
    TrainConfig,
    Trainer,
    TrainingDiverged,
    atomic_save,
    load_checkpoint,
    load_generator,
    sample_images,
    update_ema,
)


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    """A run small enough for a few steps in a second or two on a CPU."""
    settings = dict(
        dataset="mnist5k", img_size=32, z_dim=16, g_channels=8, d_channels=8, batch_size=8,
        attention_at=(16,), steps=4, log_every=2, checkpoint_every=2, out_dir=str(tmp_path / "run"),
        progress=False, seed=3,
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


def all_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of G, D and EMA G, flattened into one dict."""
    state = {}
    for tag, model in (("G", trainer.G), ("D", trainer.D), ("G_ema", trainer.G_ema)):
        state |= {f"{tag}.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    return state


def test_a_few_steps_keep_losses_finite_and_record_history(tmp_path):
    trainer = training.train(tiny_config(tmp_path, steps=6))
    history = trainer.history
    assert history["step"] == [2.0, 4.0, 6.0]
    for name in ("loss_d", "loss_g", "d_real", "d_fake", "gamma/G/16x16", "gamma/D/16x16"):
        assert len(history[name]) == 3
        assert all(torch.isfinite(torch.tensor(history[name])))
    # γ starts at 0 and moves once training begins: the attention gates do learn.
    assert history["gamma/G/16x16"][-1] != 0.0 and history["gamma/D/16x16"][-1] != 0.0
    assert trainer.step_count == 6


def test_callback_runs_every_log_every_steps(tmp_path):
    seen = []
    training.train(
        tiny_config(tmp_path, steps=6, log_every=3), callback=lambda t: seen.append(t.step_count)
    )
    assert seen == [3, 6]


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
@pytest.mark.parametrize("conditional", [False, True])
def test_architectures_and_conditioning_train(tmp_path, arch, conditional):
    trainer = training.train(tiny_config(tmp_path, steps=2, arch=arch, conditional=conditional))
    assert all(torch.isfinite(torch.tensor(v)).all() for v in trainer.history.values())
    assert (trainer.G.num_classes == 10) is conditional


def test_nonsaturating_loss_and_n_dis(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, loss="nonsaturating", n_dis=2))
    before = trainer.data_rng.get_state()
    trainer.step()
    # n_dis = 2: two real batches drawn from the data stream per generator step.
    probe = torch.Generator().set_state(before)
    torch.randint(1, (8,), generator=probe)
    torch.randint(1, (8,), generator=probe)
    assert torch.equal(probe.get_state(), trainer.data_rng.get_state())


def test_mixed_precision_path_runs_on_cpu_with_bf16(tmp_path, monkeypatch):
    """The AMP code path (autocast) exercised on CPU: losses finite, weights stay float32."""
    monkeypatch.setattr(training, "amp_dtype", lambda device: torch.bfloat16)
    trainer = Trainer(tiny_config(tmp_path))
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    for _ in range(3):
        metrics = trainer.step()
    assert all(torch.isfinite(v) for v in metrics.values())
    assert all(p.dtype == torch.float32 for p in trainer.G.parameters())
    layer = trainer.G.attention_layers()["16x16"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer.query.weight.dtype == torch.float32  # spectral norm computed in float32


def test_channels_last_layout_trains_and_matches_the_default_layout(tmp_path):
    """channels_last changes only the memory layout: the same numbers, up to rounding."""
    default = training.train(tiny_config(tmp_path / "a", steps=2))
    nhwc = training.train(tiny_config(tmp_path / "b", steps=2, channels_last=True))
    conv = nhwc.G.blocks[0].conv.parametrizations.weight.original
    assert conv.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(default.G.parameters(), nhwc.G.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_compiled_models_train_to_the_same_numbers_and_save_plain_state(tmp_path):
    """torch.compile fuses kernels but must not change the maths, nor the checkpoint's keys."""
    eager = training.train(tiny_config(tmp_path / "a", steps=2))
    compiled = training.train(tiny_config(tmp_path / "b", steps=2, compile=True))
    for name, value in all_state(eager).items():
        torch.testing.assert_close(all_state(compiled)[name], value, atol=1e-4, rtol=1e-3)
    # The checkpoint holds the plain modules' state (no "_orig_mod." prefixes): it loads into
    # an uncompiled generator.
    G = load_generator(compiled.checkpoint_path)
    assert torch.equal(sample_images(G, 2), sample_images(compiled.G_ema, 2))


def test_update_ema_matches_formula():
    torch.manual_seed(0)
    model, ema = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        ema.weight.copy_(torch.tensor([0.0, 0.0, 6.0]))
        model.running_mean.copy_(torch.tensor([5.0, 5.0, 5.0]))
    update_ema(ema, model, decay=0.9)
    torch.testing.assert_close(ema.weight, torch.tensor([0.1, 0.2, 5.7]))  # 0.9·ema + 0.1·model
    torch.testing.assert_close(ema.running_mean, torch.tensor([5.0, 5.0, 5.0]))  # copied


def test_update_ema_matches_the_per_tensor_formula_on_a_whole_generator():
    torch.manual_seed(1)
    model = Generator(z_dim=8, img_size=32, base_channels=8, attention_at=(16,))
    ema = Generator(z_dim=8, img_size=32, base_channels=8, attention_at=(16,))
    with torch.no_grad():  # make every parameter and buffer differ between the two
        for t in [*model.parameters(), *model.buffers()]:
            t.copy_(torch.randint_like(t, 0, 5) if not t.is_floating_point() else t + 1)
    decay = 0.37
    expected = {  # float64, one tensor at a time: ema·decay + param·(1 − decay)
        name: e.double() * decay + p.double() * (1 - decay)
        for (name, e), p in zip(ema.named_parameters(), model.parameters(), strict=True)
    }
    update_ema(ema, model, decay)
    for name, value in ema.named_parameters():
        torch.testing.assert_close(value.double(), expected[name], atol=1e-6, rtol=0)
    for (name, e), b in zip(ema.named_buffers(), model.buffers(), strict=True):
        assert torch.equal(e, b), name  # buffers are copied, not averaged


def test_each_spectral_norm_runs_one_power_iteration_per_step(tmp_path):
    """After one step every layer's u is one round from its old u on the pre-step weight."""
    trainer = Trainer(tiny_config(tmp_path))
    layers = [
        (module.original.detach().clone(), sn, sn.u.clone())
        for model in (trainer.G, trainer.D)
        for module in model.modules()
        if isinstance(module, torch.nn.utils.parametrize.ParametrizationList)
        for sn in module
    ]
    # G: stem, 3 convs, head; D: 3 convs, head; and q, k, v, out of each attention block.
    assert len(layers) == 5 + 4 + 2 * 4
    trainer.step()
    for weight, sn, u_before in layers:
        w = weight.flatten(1).double()  # one round in float64, written out
        v = w.T @ u_before.double()
        v = v / v.norm()
        u = w @ v
        torch.testing.assert_close(sn.u.double(), u / u.norm(), atol=1e-5, rtol=0)


def test_fast_step_on_cpu_says_why_not_and_trains_like_eager(tmp_path, capsys):
    eager = training.train(tiny_config(tmp_path / "a", steps=2))
    fast = training.train(tiny_config(tmp_path / "b", steps=2, fast_step=True))
    out = capsys.readouterr().out
    assert out.count("fast_step is off: CUDA graphs need a CUDA GPU") == 1
    assert fast.captured_step is None
    for name, value in all_state(eager).items():
        assert torch.equal(all_state(fast)[name], value), name


@pytest.mark.parametrize("overrides", [{}, {"conditional": True, "n_dis": 2}])
def test_captured_iteration_uncaptured_on_cpu_matches_the_eager_step(tmp_path, overrides):
    """What fast_step records (static inputs, same random draws, tensor EMA) run as plain code."""
    eager = Trainer(tiny_config(tmp_path / "a", **overrides))
    static = Trainer(tiny_config(tmp_path / "b", **overrides))
    iteration = CapturedStep(static)  # its buffers are plain tensors; no graph on a CPU
    for _ in range(3):
        expected = eager.step()
        iteration._load_inputs()
        got = iteration._iteration()
        static.step_count += 1
        for name, value in expected.items():
            assert torch.equal(got[name], value), name
    for name, value in all_state(eager).items():
        torch.testing.assert_close(all_state(static)[name], value, atol=1e-6, rtol=0)


def test_checkpoint_loads_with_weights_only_and_holds_everything(tmp_path):
    trainer = training.train(tiny_config(tmp_path))
    state = torch.load(trainer.checkpoint_path, weights_only=True)
    assert state["step"] == 4
    expected = {
        "config",
        "G_config",
        "G",
        "D",
        "G_ema",
        "opt_g",
        "opt_d",
        "scaler",
        "rng",
        "history",
    }
    assert expected <= set(state)
    assert state["config"]["attention_at"] == (16,)


@pytest.fixture
def one_thread():
    """Bit-for-bit comparisons need one CPU thread: some multi-threaded CPU kernels may sum in a
    different order from run to run, which changes the last bits (not the training)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(threads)


def test_exact_resume_in_a_new_process(tmp_path, one_thread):
    """N steps straight == N/2 steps, then a new process resuming for N/2 (bit for bit on CPU)."""
    straight = training.train(tiny_config(tmp_path / "a", steps=6, checkpoint_every=3))

    config = tiny_config(tmp_path / "b", steps=3)
    training.train(config)
    script = textwrap.dedent(
        f"""
        from sagan_edu.training import TrainConfig, train
        config = TrainConfig(**{vars(replace(config, steps=6, resume=True))!r})
        train(config)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300, env=one_thread)
    resumed = Trainer(replace(config, steps=6, resume=True))

    assert resumed.step_count == 6
    a, b = all_state(straight), all_state(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resume"
    assert straight.opt_g.state_dict()["state"][0]["exp_avg"].equal(
        resumed.opt_g.state_dict()["state"][0]["exp_avg"]
    )
    # The first run also logged its last step (3), so the resumed history has one entry more;
    # windows that cover the same steps agree.
    assert straight.history["step"] == [2, 4, 6] and resumed.history["step"] == [2, 3, 4, 6]
    for name in ("loss_d", "loss_g", "d_real", "gamma/G/16x16"):
        assert straight.history[name][0] == resumed.history[name][0]
        assert straight.history[name][-1] == pytest.approx(resumed.history[name][-1], rel=1e-6)


def test_ctrl_c_mid_step_finishes_the_step_and_fit_again_matches_an_uninterrupted_run(
    tmp_path, one_thread, monkeypatch
):
    """Ctrl-C between the D and the G update used to stop the step halfway: D had been updated
    but the step not counted, so fit() again updated D twice and the run drifted away."""
    straight = training.train(tiny_config(tmp_path / "a", steps=4))

    trainer = Trainer(tiny_config(tmp_path / "b", steps=4))
    real_generator_step = Trainer._generator_step

    def ctrl_c_before_the_second_g_update(self, labels, z):
        if self.step_count == 1:  # the second step: its D update is done
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does to this process
        return real_generator_step(self, labels, z)

    monkeypatch.setattr(Trainer, "_generator_step", ctrl_c_before_the_second_g_update)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    # The step finished, and so did the log and checkpoint due after it.
    assert trainer.step_count == 2 and trainer.history["step"] == [2.0]
    assert load_checkpoint(trainer.checkpoint_path)["step"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler put back

    monkeypatch.setattr(Trainer, "_generator_step", real_generator_step)
    trainer.fit()
    a, b = all_state(straight), all_state(trainer)
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after the interrupted fit()"
    assert trainer.history == straight.history


def test_a_second_ctrl_c_stops_at_once():
    """The first Ctrl-C waits for the end of the block; the second one (a hung step) does not."""
    reached = []
    with pytest.raises(KeyboardInterrupt), training.interrupts_deferred():
        signal.raise_signal(signal.SIGINT)
        reached.append("after the first")
        signal.raise_signal(signal.SIGINT)
        reached.append("after the second")
    assert reached == ["after the first"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resume_without_checkpoint_starts_fresh_and_warns_on_changed_settings(tmp_path):
    config = tiny_config(tmp_path, resume=True, steps=2)
    with pytest.warns(UserWarning, match="no checkpoint in .*starting a new run from step 0"):
        assert Trainer(config).step_count == 0  # nothing to resume yet
    with pytest.warns(UserWarning, match="no checkpoint"):
        training.train(config)
    with pytest.warns(UserWarning, match=r"n_dis=3"):
        trainer = Trainer(replace(config, steps=4, n_dis=3, lr_d=1e-4))
    assert trainer.config.n_dis == 1 and trainer.config.steps == 4 and trainer.step_count == 2
    # Learning rates may change on resume (the answer to a diverged run), optimizer state kept.
    assert trainer.config.lr_d == 1e-4 and trainer.opt_d.param_groups[0]["lr"] == 1e-4
    assert trainer.opt_d.state_dict()["state"]


def test_process_killed_during_checkpoint_write_leaves_previous_checkpoint(tmp_path):
    config = tiny_config(tmp_path, steps=2)
    training.train(config)
    path = tmp_path / "run" / "checkpoint.pt"
    before = path.read_bytes()

    # A new process resumes, and dies (SIGKILL, no clean-up) halfway through its next save.
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from sagan_edu.training import TrainConfig, train
        real_save = torch.save
        def dying_save(obj, f, *args, **kwargs):
            f.write(b"half a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        train(TrainConfig(**{vars(replace(config, steps=4, resume=True))!r}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=300)
    assert result.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 2
    # And the run resumes from it.
    assert Trainer(replace(config, steps=4, resume=True)).step_count == 2


def test_atomic_save_cleans_up_after_an_error(tmp_path):
    path = tmp_path / "x.pt"
    atomic_save({"a": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_save({"a": Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {"a": 1}
    assert os.listdir(tmp_path) == ["x.pt"]  # no temporary file left behind


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, steps=8, log_every=1, checkpoint_every=2)
    trainer = Trainer(config)
    real_loss = trainer.d_loss_fn

    def loss_that_explodes(real, fake):
        loss = real_loss(real, fake)
        return loss * float("nan") if trainer.step_count >= 3 else loss

    trainer.d_loss_fn = loss_that_explodes
    with pytest.raises(
        TrainingDiverged, match=r"loss_d became nan by step 4.*checkpoint.*lower learning rates"
    ):
        trainer.fit()
    assert load_checkpoint(trainer.checkpoint_path)["step"] == 2


def test_sampling_is_reproducible_and_load_generator_rebuilds_ema_g(tmp_path):
    trainer = training.train(tiny_config(tmp_path))
    a, b = trainer.sample(5, seed=1), trainer.sample(5, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, trainer.sample(5, seed=2))
    assert a.shape == (5, 1, 32, 32) and a.min() >= -1 and a.max() <= 1
    generator = load_generator(trainer.checkpoint_path)
    assert isinstance(generator, Generator) and not generator.training
    assert torch.equal(sample_images(generator, 5, seed=1), a)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"steps": 0}, ValueError, "steps must be a positive integer"),
        ({"lr_d": 0.0}, ValueError, "lr_d must be positive"),
        ({"ema_decay": 1.0}, ValueError, r"ema_decay must be in \[0, 1\)"),
    ],
)
def test_bad_config_values(tmp_path, overrides, error, message):
    with pytest.raises(error, match=message):
        tiny_config(tmp_path, **overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"attention_at": (5,)}, "5"),
        ({"img_size": 48}, "48"),
        ({"dataset": "imagenet"}, "imagenet"),
        ({"arch": "vit"}, "vit"),
        ({"loss": "wasserstein"}, "wasserstein"),
        ({"device": "cuda"} if not torch.cuda.is_available() else {"arch": "?"}, "GPU|\\?"),
    ],
)
def test_bad_configurations_fail_before_training(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        Trainer(tiny_config(tmp_path, **overrides))


def test_conditional_needs_labels(tmp_path):
    with pytest.raises(ValueError, match="conditional=True needs class labels"):
        Trainer(tiny_config(tmp_path, dataset="twin-shapes", conditional=True))


def test_ranks_take_disjoint_rows_of_the_same_global_batch(tmp_path):
    trainer = Trainer(tiny_config(tmp_path))
    batch = torch.arange(12)
    rows = []
    for rank in range(3):
        trainer.rank, trainer.world_size = rank, 3
        rows.append(trainer._shard(batch))
    assert [r.tolist() for r in rows] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]


def test_torchrun_two_processes_then_resume_with_one(tmp_path):
    """DDP on CPU (gloo): rank 0 alone writes; the checkpoint resumes in a single process."""
    out = tmp_path / "ddp"
    args = ["--steps", "4", "--out", str(out), "--device", "cpu", "--z-dim", "16",
            "--g-channels", "8", "--d-channels", "8", "--batch-size", "4", "--log-every", "2",
            "--checkpoint-every", "2", "--no-progress"]  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                "--standalone", "-m", "sagan_edu.cli", "train"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*torchrun, *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("trained to step 4") == 1  # only rank 0 reports
    assert "2 processes" in result.stdout
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 4 and state["history"]["step"] == [2.0, 4.0]
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".tmp") == []

    resumed = training.train(tiny_config(tmp_path, out_dir=str(out), steps=6, resume=True,
                                         batch_size=4))  # fmt: skip
    assert resumed.step_count == 6 and resumed.history["step"] == [2.0, 4.0, 6.0]
