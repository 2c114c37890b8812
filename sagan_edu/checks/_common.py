"""What every check shares: calling the learner's code, comparing results, explaining failures."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import torch
from torch import nn

Tensor = torch.Tensor


class CheckFailed(AssertionError):
    """Your code runs but does not do what the exercise asks; the message says what is wrong."""


# ---------------------------------------------------------------------------------------------
# Shared helpers: calling your code, comparing, explaining
# ---------------------------------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    raise CheckFailed(message)


def _passed(check: str, what: str) -> None:
    print(f"✅ {check} passed: {what}")


@contextlib.contextmanager
def _fixed_seed(seed: int = 0) -> Iterator[None]:
    """Seed torch inside the block and restore the notebook's random state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} tensor {tuple(value.shape)}"
    if isinstance(value, nn.Module | torch.optim.Optimizer):
        return type(value).__name__
    return repr(value)


def _raised_by_a_stub(err: NotImplementedError) -> bool:
    """True for `raise NotImplementedError(...)` in your code, False for PyTorch's own
    NotImplementedError ("... not implemented for 'Long'"), which is a bug to report."""
    frames = traceback.extract_tb(err.__traceback__)
    line = (frames[-1].line or "raise") if frames else "raise"
    return line.lstrip().startswith("raise")


def _call(fn: Callable, *args: Any, hint: str = "", **kwargs: Any) -> Any:
    """Call your code. A stub's NotImplementedError passes through; other errors get context."""
    try:
        return fn(*args, **kwargs)
    except CheckFailed:
        raise
    except Exception as err:
        if isinstance(err, NotImplementedError) and _raised_by_a_stub(err):
            raise
        name = getattr(fn, "__name__", type(fn).__name__)
        given = ", ".join(
            [_describe(a) for a in args] + [f"{k}={_describe(v)}" for k, v in kwargs.items()]
        )
        message = f"your {name} raised {type(err).__name__}: {err}\n  It was called with: {given}."
        if "view size is not compatible" in str(err):
            message += (
                "\n  .view() needs a tensor whose memory is laid out in order, which a transposed "
                "tensor is not: use .reshape() (or .contiguous().view())."
            )
        if hint:
            message += f"\n  {hint}"
        raise CheckFailed(message) from err


def _tensor(value: Any, what: str) -> Tensor:
    if value is None:
        _fail(f"{what} is None: did you forget the `return` statement?")
    if not isinstance(value, torch.Tensor):
        _fail(f"{what} should be a torch.Tensor, got {type(value).__name__}")
    return value


def _pair(value: Any, what: str, names: str) -> tuple[Any, Any]:
    if value is None:
        _fail(f"{what} returned None: did you forget the `return` statement?")
    if not isinstance(value, tuple | list) or len(value) != 2:
        got = type(value).__name__ if not isinstance(value, tuple | list) else f"{len(value)} items"
        _fail(f"{what} should return two things, ({names}); it returned {got}")
    return value[0], value[1]


def _number(value: Any, what: str) -> float:
    if value is None:
        _fail(f"{what} is None: did you forget the `return` statement?")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            _fail(f"{what} should be a single number, got a tensor of shape {tuple(value.shape)}")
        value = value.detach().reshape(())
    if isinstance(value, complex) or (isinstance(value, torch.Tensor) and value.is_complex()):
        _fail(f"{what} is a complex number ({value}): keep its real part (.real)")
    try:
        return float(value)
    except (TypeError, ValueError):
        _fail(f"{what} should be a number (float or 0-d tensor), got {type(value).__name__}")


def _tolerances(dtype: torch.dtype) -> dict[str, float]:
    if dtype == torch.float64:
        return {"rtol": 1e-7, "atol": 1e-9}
    return {"rtol": 1e-4, "atol": 1e-5}


def _close(actual: Tensor, expected: Tensor, **tol: float) -> bool:
    if actual.shape != expected.shape:
        return False
    tol = tol or _tolerances(expected.dtype)
    return torch.allclose(actual.detach().cpu().double(), expected.detach().cpu().double(), **tol)


def _max_diff(actual: Tensor, expected: Tensor) -> float:
    return (actual.detach().cpu().double() - expected.detach().cpu().double()).abs().max().item()


def _expect_close(
    actual: Tensor,
    expected: Tensor,
    what: str,
    where: str,
    mistakes: Sequence[tuple[Tensor | None, str]] = (),
    advice: str = "",
    **tol: float,
) -> None:
    """Fail unless actual ≈ expected; if a known mistake reproduces `actual`, name it."""
    if _close(actual, expected, **tol):
        return
    for wrong, explanation in mistakes:
        if wrong is not None and _close(actual, wrong, **tol):
            _fail(f"{explanation}\n  (Seen for {where}.)")
    if actual.shape != expected.shape:
        _fail(f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)} ({where})")
    message = (
        f"{what} differs from the reference by up to {_max_diff(actual, expected):.3g} ({where})."
    )
    _fail(message + (f"\n  {advice}" if advice else ""))


def _expect_dtype(actual: Tensor, dtype: torch.dtype, what: str) -> None:
    if actual.dtype != dtype:
        _fail(
            f"{what}: dtype {actual.dtype}, but the inputs were {dtype}. The result should keep "
            "the inputs' dtype (avoid .float(), torch.tensor(...) or a hard-coded dtype)"
        )


def _expect_graph(output: Tensor, what: str) -> None:
    if not output.requires_grad:
        _fail(
            f"{what}: cut off from autograd, so no gradient can flow back through it. Avoid "
            ".detach(), .item(), .numpy(), .data and torch.tensor(...) on intermediate results"
        )


def _grads(outputs: Sequence[Tensor], inputs: Sequence[Tensor], seed: int = 1) -> list[Tensor]:
    """Gradients of a random weighted sum of `outputs` with respect to `inputs`."""
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outputs)
    grads = torch.autograd.grad(loss, list(inputs), allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads, strict=True)]


def _randn(*shape: int, gen: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(shape, generator=gen, dtype=dtype)


def _shapes(**tensors: Tensor) -> str:
    return ", ".join(f"{name} {tuple(t.shape)}" for name, t in tensors.items())
