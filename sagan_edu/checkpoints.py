"""Checkpoint files and run folders: no crash, kill or full disk loses the last good checkpoint.

Writing (`atomic_save`):

1. the checkpoint is serialised in memory first, so a full disk shows up as a plain
   "no space left" error from `write` (torch.save writing straight into a file reports it as
   "unexpected pos ..." instead);
2. the bytes go to a temporary file `.checkpoint.pt.<random>.tmp` in the same folder, which is
   flushed to the disk (fsync);
3. the temporary file is renamed over `checkpoint.pt` (atomic: a reader, or a crash, sees the old
   file or the whole new one), and the folder is fsynced so that a power cut cannot undo the
   rename;
4. temporary files left by a process that was killed mid-write are removed.

The file gets the permissions any new file would get (0644 under the usual umask 022), so
classmates sharing a course folder can read each other's runs.

Reading (`load_checkpoint`) uses `torch.load(weights_only=True)`: tensors and plain Python values
only, so no code in a file can run. A file that is not a sagan_edu checkpoint (truncated, random
bytes, someone else's pickle, a safetensors export, a folder) gets a `CheckpointError` that names
the file, says what is wrong with it and what to do.

Run folders (`check_output_folder`, `RunLock`): a training run checks at start that it can write
its folder, and holds a lock on it while it trains, so a second run into the same folder refuses
instead of interleaving checkpoints; a run that fails before saving anything removes the folders
it made (`remove_unused_run_folder`). Output files (`check_output_file`) are checked before any
work, and an existing one is replaced only when the caller says so. The lock is an
`fcntl.flock` on an open file: the operating system releases it when the process ends, however it
ends, so a crashed run never leaves it stuck.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch

__all__ = [
    "CHECKPOINT_NAME",
    "LOCK_NAME",
    "CheckpointError",
    "RunFolderBusy",
    "RunLock",
    "atomic_save",
    "atomic_write",
    "check_output_file",
    "check_output_folder",
    "check_resumable",
    "file_in_the_way",
    "folders_to_make",
    "is_safetensors_file",
    "load_checkpoint",
    "load_weights",
    "remove_stale_temp_files",
    "remove_unused_run_folder",
]

CHECKPOINT_NAME = "checkpoint.pt"
LOCK_NAME = ".sagan-edu.lock"
# Keys every training checkpoint holds (see Trainer.state_dict).
REQUIRED_KEYS = ("config", "step", "G_config", "G", "G_ema")
# And what continuing the run needs besides (Trainer._load_state reads them all).
RESUME_KEYS = ("D", "opt_g", "opt_d", "scaler", "rng", "history", "window", "window_steps")


class CheckpointError(ValueError):
    """A file that cannot be used as a training checkpoint; the message says why and what to do."""


class RunFolderBusy(RuntimeError):
    """Another process is training into the same run folder."""


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def atomic_save(obj: object, path: str | os.PathLike) -> None:
    """torch.save `obj` to `path` so that no crash, kill or full disk leaves a broken file there.

    On a full disk this raises OSError(ENOSPC) with a message that says so, and the previous file
    at `path` is unchanged.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # in memory: errors here never touch the disk
    atomic_write(buffer.getbuffer(), path, what="checkpoint")


def atomic_write(data: bytes | memoryview, path: str | os.PathLike, what: str = "file") -> None:
    """Write `data` to `path` through a temporary file, fsync and rename (see the module doc).

    Two processes writing one path at once are not supported (the trainer's RunLock prevents
    it): each would remove the other's temporary file. `what` names the file in errors.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; give it the mode open() would (0666 minus the umask).
        if hasattr(os, "fchmod"):  # (not on Windows before Python 3.13)
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            _write_all(f, data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them the file
        os.replace(tmp, path)
        _fsync_folder(path.parent)  # ... and the rename itself is on disk too
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            again = "continue with --resume (resume=True)" if what == "checkpoint" else "try again"
            raise OSError(
                errno.ENOSPC,
                f"no space left on the device while writing {path} ({len(data) / 1e6:.1f} MB); "
                f"the previous {what} there, if any, is unchanged. Free some space, then {again}",
            ) from error
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_all(f: io.BufferedWriter, data: bytes | memoryview) -> None:
    """Write every byte of `data` (a separate function so tests can make the disk full)."""
    f.write(data)


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Delete the `.NAME.*.tmp` files a killed writer of `path` left behind; returns them."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.*.tmp"))
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return stale


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk. POSIX only: Windows cannot open folders."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a training checkpoint safely (weights_only=True: no code in the file can run).

    Raises FileNotFoundError if there is no file, and CheckpointError (a ValueError) for a file
    that is not a complete sagan_edu training checkpoint.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a string or a Path to a checkpoint.pt, got {path!r}")
    path = Path(path)
    if path.is_dir():
        inside = path / CHECKPOINT_NAME
        hint = (
            f"pass {inside}"
            if inside.is_file()
            else "pass the checkpoint.pt file inside a run folder"
        )
        raise CheckpointError(f"{path} is a folder, not a checkpoint file; {hint}")
    if not path.exists():
        raise FileNotFoundError(
            f"no checkpoint at {path}; train first (sagan-edu train --out {path.parent}) or "
            "check the path"
        )
    _check_file_kind(path)
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since PyTorch 1.6
        raise _unreadable(path, None)
    try:
        with warnings.catch_warnings():  # torch's warnings about a bad file; we raise our own
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types; none of them is the user's fault
        raise _unreadable(path, error) from None
    _check_contents(path, state)
    return state


def _check_file_kind(path: Path) -> None:
    """Recognise files that are certainly not checkpoints by their first bytes."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes): {_LOST}")
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(
            f"{path} is a Git LFS pointer, not the file itself; fetch it with `git lfs pull`"
        )
    if path.suffix == ".safetensors" or _looks_like_safetensors(head):
        raise CheckpointError(
            f"{path} is a safetensors weight file (written by `sagan-edu export` or shipped with "
            "the package), not a training checkpoint; load it with "
            "sagan_edu.pretrained.load(path), or pass the run's checkpoint.pt"
        )


_LOST = (
    "it was probably cut short by a crash or a full disk. Use another checkpoint, or start "
    "the run again (sagan-edu train --overwrite)"
)


def _looks_like_safetensors(head: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header starting with {."""
    return len(head) > 8 and head[8:9] == b"{"


def is_safetensors_file(path: str | os.PathLike) -> bool:
    """Whether `path` names a safetensors file: by its suffix, or (any name) by its first bytes."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return True
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return _looks_like_safetensors(f.read(9))


def _unreadable(path: Path, error: Exception | None) -> CheckpointError:
    """The error for a file torch.load refused, in words (never torch's weights_only advice)."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            starts_like_zip = f.read(4) == b"PK\x03\x04"
        if starts_like_zip:
            return CheckpointError(f"{path} is truncated or damaged: {_LOST}")
        return CheckpointError(
            f"{path} is not a PyTorch checkpoint (its bytes are not in torch.save's format); "
            "pass the checkpoint.pt that `sagan-edu train` wrote"
        )
    if "weights_only" in str(error) or "Unsupported global" in str(error):
        return CheckpointError(
            f"{path} holds Python objects other than tensors and plain values, so it was not "
            "written by sagan_edu (whose checkpoints never need more) and is not loaded: loading "
            "it could run code from the file. Pass the checkpoint.pt that `sagan-edu train` wrote"
        )
    return CheckpointError(f"{path} could not be read ({type(error).__name__}): {_LOST}")


def _check_contents(path: Path, state: object) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} is a PyTorch file but not a sagan_edu training checkpoint (it holds a "
            f"{type(state).__name__}, not the dict `sagan-edu train` writes)"
        )
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"{path} is a PyTorch file but not a sagan_edu training checkpoint (it lacks "
            f"{', '.join(missing)}); pass the checkpoint.pt that `sagan-edu train` wrote"
        )


def check_resumable(path: str | os.PathLike, state: dict) -> None:
    """Raise CheckpointError unless `state` holds everything a run needs to continue."""
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"{path} holds a generator but not the whole training state (it lacks "
            f"{', '.join(missing)}), so the run cannot continue from it. Sample from it with "
            "`sagan-edu sample`, or start a new run (another --out, or --overwrite)"
        )


def load_weights(
    module: torch.nn.Module, weights: dict, path: str | os.PathLike, what: str
) -> None:
    """module.load_state_dict(weights), with a CheckpointError naming the file if they differ."""
    try:
        module.load_state_dict(weights)
    except (RuntimeError, KeyError, ValueError) as error:
        # torch's first line is a heading ("Error(s) in loading ..."); the second says what.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = (lines[1:] or lines or [type(error).__name__])[0][:200]
        raise CheckpointError(
            f"{path}: the saved {what} does not fit the model its config describes ({detail}). "
            "The file was changed after saving or written by another sagan_edu version; use "
            "the version that wrote it, or start a new run (another --out, or --overwrite)"
        ) from None


def check_known_settings(path: str | os.PathLike, what: str, saved: dict, known: set[str]) -> None:
    """Raise CheckpointError if a checkpoint's `saved` settings hold names this version lacks."""
    unknown = sorted(set(saved) - known)
    if unknown:
        raise CheckpointError(
            f"{path} was written by a newer sagan_edu: its {what} has settings this version does "
            f"not know ({', '.join(unknown)}). Upgrade sagan_edu (pip install -U sagan-edu) to "
            "use it"
        )


# ---------------------------------------------------------------------------------------------
# Run folders
# ---------------------------------------------------------------------------------------------


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """`path` or the nearest of its parents that exists but is a file: nothing can be made there
    (`notes.txt/run` cannot become a folder). None when every existing one is a folder."""
    path = Path(path)
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


def check_output_folder(folder: str | os.PathLike, flag: str = "--out") -> Path:
    """Create `folder` if needed and prove it is writable; raise ValueError saying why if not.

    Done before any work starts, so a bad output path fails in a second, not after the first
    checkpoint. `flag` names the setting in the message ("--out", "out_dir").
    """
    folder = Path(folder)
    blocker = file_in_the_way(folder)
    if blocker == folder:
        raise ValueError(f"{flag} {folder} is a file, not a folder; pass a folder path")
    if blocker is not None:
        raise ValueError(
            f"{flag} {folder} lies below {blocker}, which is a file, not a folder; "
            "pass a path inside a folder"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # the surest test: really write a file there
            pass
    except OSError as error:
        raise ValueError(
            f"{flag} {folder} cannot be written ({error.strerror}); pass a folder you can write to"
        ) from None
    return folder


def check_output_file(
    path: str | os.PathLike,
    suffixes: tuple[str, ...],
    overwrite: bool,
    flag: str = "out_path",
    overwrite_flag: str = "overwrite=True",
) -> Path:
    """Before any work: `path` ends in one of `suffixes`, is not a folder, lies in a folder that
    can be written, and an existing file there is replaced only with `overwrite`.

    `flag` and `overwrite_flag` name the settings in the messages ("--out", "--overwrite").
    """
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{flag} must end in {' or '.join(suffixes)}, got {path}")
    if path.is_dir():
        example = path / f"out{suffixes[0]}"
        raise ValueError(f"{flag} {path} is a folder; pass a file path such as {example}")
    blocker = file_in_the_way(path.parent)
    if blocker is not None:
        raise ValueError(
            f"{flag} {path} lies below {blocker}, which is a file, not a folder; "
            "pass a path inside a folder"
        )
    check_output_folder(path.parent, f"the folder of {flag}")
    if path.exists() and not overwrite:
        raise ValueError(
            f"{flag} {path} exists; pass another {flag}, or {overwrite_flag} to replace it"
        )
    return path


def folders_to_make(folder: str | os.PathLike) -> list[Path]:
    """The folders that creating `folder` would make: it and its missing parents, deepest first."""
    folder = Path(folder)
    return [path for path in (folder, *folder.parents) if not path.exists()]


def remove_unused_run_folder(made: list[Path]) -> None:
    """Remove the folders a run made (`folders_to_make`'s list) if it saved nothing in them.

    The run folder may hold only the run's lock file; rmdir then removes each folder only if it
    is empty, so nothing anyone else saved there can go. Call it while holding the lock.
    """
    if not made or not made[0].is_dir():
        return
    if any(path.name != LOCK_NAME for path in made[0].iterdir()):
        return  # the run saved something after all, or someone else did
    (made[0] / LOCK_NAME).unlink(missing_ok=True)
    for folder in made:
        try:
            folder.rmdir()
        except OSError:  # not empty: something else lives there now
            return


class RunLock:
    """An exclusive lock on a run folder while a process trains into it.

        with RunLock(out_dir):
            ...  # train and checkpoint

    A second RunLock on the same folder, from any process, raises RunFolderBusy. The lock is the
    operating system's (flock on an open file), so it ends with the process that holds it: a
    killed run leaves the lock file behind, but not the lock. On systems without fcntl
    (Windows) there is no lock.
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_NAME
        self._file = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")  # noqa: SIM115 (held open for as long as the lock is held)
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise RunFolderBusy(
                f"{self.path.parent} is in use: {holder} is training into it right now. Wait "
                "for it to finish, or train into another folder (--out / out_dir)"
            ) from None
        except OSError:  # a file system without locks (some network mounts): train unlocked
            file.close()
            return
        file.seek(0)
        file.truncate()
        file.write(f"process {os.getpid()}")
        file.flush()
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the lock
            self._file = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
