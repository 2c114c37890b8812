"""Tests of sagan_edu.checkpoints: no crash, kill or full disk loses work; wrong files are named.

Every failure case checks two things: the message (which file, what is wrong, what to do), and
that the checkpoint already on disk is byte for byte what it was.
"""

from __future__ import annotations

import errno
import os
import random
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import pytest
import torch

from sagan_edu import checkpoints, training
from sagan_edu.checkpoints import (
    LOCK_NAME,
    CheckpointError,
    RunFolderBusy,
    RunLock,
    atomic_save,
    check_output_file,
    folders_to_make,
    load_checkpoint,
    remove_unused_run_folder,
)
from sagan_edu.cli import main
from sagan_edu.training import TrainConfig, Trainer, load_generator


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    settings = dict(
        z_dim=16, g_channels=8, d_channels=8, batch_size=8, steps=2, log_every=1,
        checkpoint_every=2, out_dir=str(tmp_path / "run"), progress=False, seed=1,
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step run's checkpoint (module-wide: each test copies what it changes)."""
    tmp_path = tmp_path_factory.mktemp("trained")
    trainer = training.train(tiny_config(tmp_path))
    return trainer.checkpoint_path


def temp_files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def test_disk_full_says_so_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = training.train(tiny_config(tmp_path))
    before = trainer.checkpoint_path.read_bytes()

    def full_disk(f, data):
        f.write(data[: len(data) // 2])  # half the bytes fit, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints, "_write_all", full_disk)
    trainer.step()
    with pytest.raises(
        OSError, match=r"no space left .* previous checkpoint there, if any, is unchanged"
    ):
        trainer.save_checkpoint()
    assert trainer.checkpoint_path.read_bytes() == before
    assert temp_files(trainer.checkpoint_path.parent) == []


def test_disk_full_from_the_cli_is_one_line_and_exit_status_2(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--z-dim", "16", "--g-channels", "8", "--d-channels",
            "8", "--batch-size", "8", "--no-progress"]  # fmt: skip
    assert main([*args, "--steps", "1"]) == 0
    before = (out / "checkpoint.pt").read_bytes()

    def full_disk(f, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints, "_write_all", full_disk)
    capsys.readouterr()
    assert main([*args, "--steps", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left" in err and "--resume" in err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_checkpoint_file_and_folder_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    atomic_save({"a": torch.ones(3)}, tmp_path / "x.pt")
    assert synced == ["file", "folder"]  # the bytes before the rename, the rename after it


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_checkpoint_permissions_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_save({"a": 1}, tmp_path / "x.pt")
        (tmp_path / "plain.txt").write_text("made by open()")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.pt").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode  # like any other file


def test_kill_mid_write_leaves_the_old_checkpoint_and_the_next_run_removes_the_temp_file(tmp_path):
    config = tiny_config(tmp_path, steps=2)
    training.train(config)
    path = tmp_path / "run" / "checkpoint.pt"
    before = path.read_bytes()

    # A resumed run dies (SIGKILL: no clean-up runs) with half its checkpoint written to disk.
    script = textwrap.dedent(
        f"""
        import os, signal
        from sagan_edu import checkpoints
        from sagan_edu.training import TrainConfig, train
        def dying_write(f, data):
            f.write(data[: len(data) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        checkpoints._write_all = dying_write
        train(TrainConfig(**{vars(replace(config, steps=4, resume=True))!r}))
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], timeout=300, env=env)
    assert result.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    leftovers = temp_files(path.parent)
    assert len(leftovers) == 1 and leftovers[0].startswith(".checkpoint.pt.")

    resumed = training.train(replace(config, steps=4, resume=True))
    assert resumed.step_count == 4 and load_checkpoint(path)["step"] == 4
    assert temp_files(path.parent) == []


def test_saving_removes_temp_files_of_killed_writers(tmp_path):
    for i in range(3):
        (tmp_path / f".x.pt.dead{i}.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".other.pt.keep.tmp").write_bytes(b"another file's")
    atomic_save({"a": 1}, tmp_path / "x.pt")
    assert temp_files(tmp_path) == [".other.pt.keep.tmp"]
    assert load_checkpoint_raw(tmp_path / "x.pt") == {"a": 1}


def load_checkpoint_raw(path):
    return torch.load(path, weights_only=True)


# ---------------------------------------------------------------------------------------------
# Two runs, one folder
# ---------------------------------------------------------------------------------------------


def test_a_second_run_into_a_folder_in_use_refuses_and_a_killed_holder_frees_it(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from sagan_edu.checkpoints import RunLock
            lock = RunLock({str(folder)!r})
            lock.acquire()
            print("locked", flush=True)
            time.sleep(300)
        """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusy, match=rf"in use: process {holder.pid} .*--out"):
            RunLock(folder).acquire()
        with pytest.raises(RunFolderBusy, match="in use"):
            Trainer(tiny_config(tmp_path))  # refused at start, before any training
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert (folder / checkpoints.LOCK_NAME).exists()  # the file stays, the lock does not
    with RunLock(folder):
        pass
    assert Trainer(tiny_config(tmp_path)).step_count == 0


def test_a_run_holds_its_folder_while_it_trains(tmp_path):
    config = tiny_config(tmp_path, steps=2)
    errors = []

    def try_a_second_run(trainer):
        try:
            Trainer(config)
        except RunFolderBusy as error:
            errors.append(str(error))

    training.train(config, callback=try_a_second_run)
    assert len(errors) == 2 and "in use" in errors[0]  # refused at steps 1 and 2
    assert Trainer(replace(config, resume=True)).step_count == 2  # free again afterwards


def test_cli_second_run_into_a_busy_folder_is_one_line(tmp_path, capsys):
    folder = tmp_path / "run"
    with RunLock(folder):
        assert main(["train", "--out", str(folder), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use" in err


# ---------------------------------------------------------------------------------------------
# Reading: every wrong file gets an error that names it, says what is wrong and what to do
# ---------------------------------------------------------------------------------------------


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def wrong_files(tmp_path, trained) -> dict:
    """name -> (path of a file that is not a usable checkpoint, what the error must say)."""
    data = trained.read_bytes()
    files = {}

    def write(name, content):
        path = tmp_path / name
        path.write_bytes(content)
        return path

    files["truncated"] = (write("cut.pt", data[: len(data) // 2]), "truncated or damaged")
    noise = random.Random(0).randbytes(5000)
    files["random"] = (write("random.pt", noise), "not a PyTorch checkpoint")
    # A pickle header with a protocol torch has never written: torch.load warns before failing,
    # and that warning must not reach the user as a second line.
    files["pickle header"] = (write("pickled.pt", b"\x80\x59" + noise), "not a PyTorch checkpoint")
    files["empty"] = (write("empty.pt", b""), "is empty")
    torch.save({"weight": torch.ones(2)}, tmp_path / "state_dict.pt")
    files["someone else's"] = (tmp_path / "state_dict.pt", "not a sagan_edu training checkpoint")
    torch.save(Evil(), tmp_path / "evil.pt")
    files["malicious pickle"] = (tmp_path / "evil.pt", "could run code")
    files["folder"] = (trained.parent, f"is a folder.*pass {re.escape(str(trained))}")
    files["lfs pointer"] = (
        write("lfs.pt", b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n"),
        "Git LFS pointer.*git lfs pull",
    )
    from sagan_edu.pretrained import export_pretrained

    files["safetensors"] = (
        export_pretrained(trained, tmp_path / "g.safetensors"),
        "safetensors weight file.*pretrained.load",
    )
    state = torch.load(trained, weights_only=True)
    state["config"]["setting_from_the_future"] = 1
    state["G_config"]["setting_from_the_future"] = 1
    torch.save(state, tmp_path / "newer.pt")
    files["newer version"] = (tmp_path / "newer.pt", "newer sagan_edu.*from_the_future.*Upgrade")
    return files


CASES = ["truncated", "random", "pickle header", "empty", "someone else's", "malicious pickle",
         "folder", "lfs pointer", "safetensors", "newer version"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_a_wrong_checkpoint_gets_a_clear_error(tmp_path, trained, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    path, message = wrong_files(tmp_path, trained)[case]
    with pytest.raises(CheckpointError, match=message) as error:
        load_generator(path)  # what `sample` and `export` do
    text = str(error.value)
    assert str(path) in text
    assert "weights_only" not in text  # never PyTorch's advice to load unsafely
    assert not (tmp_path / "pwned").exists()  # the malicious pickle never ran


@pytest.mark.parametrize("case", CASES)
def test_a_wrong_checkpoint_from_the_cli_is_one_line_and_exit_status_2(
    tmp_path, trained, capsys, case
):
    path, _ = wrong_files(tmp_path, trained)[case]
    # `sample` also takes exported (safetensors) weights; `export` needs a checkpoint.
    command, out = ("export", "x.safetensors") if case == "safetensors" else ("sample", "s.png")
    assert main([command, "--checkpoint", str(path), "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sagan-edu {command}: error: ")
    assert "Traceback" not in err and "weights_only" not in err


@pytest.mark.parametrize("case", ["truncated", "random", "someone else's", "newer version"])
def test_resuming_from_a_wrong_checkpoint_is_refused_and_leaves_it_alone(tmp_path, trained, case):
    path, message = wrong_files(tmp_path, trained)[case]
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match=message):
        Trainer(tiny_config(tmp_path, resume=True))
    assert (run / "checkpoint.pt").read_bytes() == path.read_bytes()


def test_load_checkpoint_of_a_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .* train first"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_an_old_checkpoint_without_the_new_fields_still_resumes(tmp_path):
    """Checkpoints from before `overwrite` and `download` existed load with their defaults."""
    config = tiny_config(tmp_path)
    trainer = training.train(config)
    state = torch.load(trainer.checkpoint_path, weights_only=True)
    del state["config"]["overwrite"], state["config"]["download"], state["sagan_edu_version"]
    torch.save(state, trainer.checkpoint_path)
    assert Trainer(replace(config, resume=True, steps=3)).step_count == 2


# `train` as the CLI runs it, except that after each checkpoint it writes, it prints a line and
# waits for one on stdin: the test decides when it may go on, so a run can never finish on its own
# before the test kills it (however slow or busy the machine).
GATED_CLI = textwrap.dedent("""
    import sys
    from sagan_edu import training
    from sagan_edu.cli import main

    save_checkpoint = training.Trainer.save_checkpoint

    def save_then_wait(self, path=None):
        written = save_checkpoint(self, path)
        print(f"checkpoint written at step {self.step_count}", flush=True)
        sys.stdin.readline()
        return written

    training.Trainer.save_checkpoint = save_then_wait
    sys.exit(main(sys.argv[1:]))
""")


def kill_during_the_step_after_a_checkpoint(args: list[str], env: dict, delay: float) -> int:
    """Run `train` with `args` until it has written a checkpoint, let it go on for `delay` seconds
    (into the next step and its checkpoint write, which it cannot pass), then SIGKILL it.
    Returns the step of the checkpoint it wrote."""
    process = subprocess.Popen([sys.executable, "-c", GATED_CLI, *args], env=env, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)  # fmt: skip
    try:
        lines = []  # the CLI's own log lines come first
        while not (line := process.stdout.readline()).startswith("checkpoint written"):
            assert line, f"train exited before its first checkpoint:\n{''.join(lines)}"
            lines.append(line)
        process.stdin.write("go on\n")
        process.stdin.flush()
        time.sleep(delay)
    finally:
        process.send_signal(signal.SIGKILL)
        status = process.wait(timeout=60)
    assert status == -signal.SIGKILL  # killed mid-training, not after the end
    return int(line.split()[-1])


@pytest.mark.slow
def test_kill_9_loop_never_corrupts_and_resumes_bit_identically(tmp_path):
    """`train --resume` killed (SIGKILL) again and again, each time just after it wrote a
    checkpoint (so in the middle of the next step, often of the next write), then let finish:
    every checkpoint left behind loads, the end state equals an uninterrupted run's bit for bit,
    and no temporary file is left."""
    args = ["train", "--steps", "40", "--checkpoint-every", "1", "--log-every", "1",
            "--z-dim", "16", "--g-channels", "8", "--d-channels", "8", "--batch-size", "8",
            "--no-progress", "--device", "cpu"]  # fmt: skip
    command = [sys.executable, "-m", "sagan_edu.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*command, "--out", str(tmp_path / "straight")], check=True, env=env,
                   capture_output=True, timeout=300)  # fmt: skip

    run = tmp_path / "killed"
    path = run / "checkpoint.pt"
    rng = random.Random(0)
    steps_seen = []
    for _ in range(6):
        written = kill_during_the_step_after_a_checkpoint(
            [*args, "--out", str(run), "--resume"], env, rng.uniform(0.0, 0.05)
        )
        step = load_checkpoint(path)["step"]  # never a corrupt checkpoint
        assert step in (written, written + 1)  # the one it wrote, or the next if that completed
        steps_seen.append(step)
    subprocess.run([*command, "--out", str(run), "--resume"], check=True, env=env,
                   capture_output=True, timeout=300)  # fmt: skip

    # Every killed run resumed where the last one stopped and wrote at least one more step.
    assert steps_seen == sorted(set(steps_seen)) and steps_seen[-1] < 40
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    resumed = load_checkpoint(path)
    assert resumed["step"] == straight["step"] == 40
    for part in ("G", "D", "G_ema"):
        for name, value in straight[part].items():
            assert torch.equal(resumed[part][name], value), f"{part}.{name} differs"
    assert temp_files(run) == []


def test_export_on_a_full_disk_is_one_line_and_leaves_no_partial_file(
    tmp_path, trained, monkeypatch, capsys
):
    def full_disk(f, data):
        f.write(data[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints, "_write_all", full_disk)
    out = tmp_path / "g.safetensors"
    assert main(["export", "--checkpoint", str(trained), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left" in err
    assert list(tmp_path.iterdir()) == []  # neither half a weight file nor a temporary file


def test_remove_unused_run_folder_removes_only_empty_folders_the_run_made(tmp_path):
    run = tmp_path / "a" / "b" / "run"
    made = folders_to_make(run)
    assert made == [run, tmp_path / "a" / "b", tmp_path / "a"]
    run.mkdir(parents=True)
    (run / LOCK_NAME).write_text("process 1")
    (tmp_path / "a" / "someone-elses.txt").write_text("keep")
    remove_unused_run_folder(made)
    assert not (tmp_path / "a" / "b").exists()  # the run's lock file and two empty folders
    assert (tmp_path / "a" / "someone-elses.txt").read_text() == "keep"

    run.mkdir(parents=True)
    (run / LOCK_NAME).write_text("process 1")
    (run / "history.json").write_text("{}")  # the run saved something: all of it stays
    remove_unused_run_folder(made)
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME, "history.json"]
    remove_unused_run_folder([])  # a run that made no folder removes nothing


def test_check_output_file_says_what_is_wrong_with_a_path(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    (tmp_path / "a.safetensors").mkdir()
    cases = {
        tmp_path / "g.pt": r"out_path must end in \.safetensors, got .*g\.pt",
        tmp_path / "a.safetensors": r"out_path .*a\.safetensors is a folder; pass a file path such "
        r"as .*a\.safetensors/out\.safetensors",
        notes / "g.safetensors": r"lies below .*notes\.txt, which is a file, not a folder",
    }
    for path, message in cases.items():
        with pytest.raises(ValueError, match=message):
            check_output_file(path, (".safetensors",), overwrite=False)
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"my weights")
    with pytest.raises(ValueError, match=r"--out .*mine\.safetensors exists; .* or --overwrite"):
        check_output_file(mine, (".safetensors",), False, "--out", "--overwrite")
    assert check_output_file(mine, (".safetensors",), overwrite=True) == mine
    assert mine.read_bytes() == b"my weights" and notes.read_text() == "my notes"
