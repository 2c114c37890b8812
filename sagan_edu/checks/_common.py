"""What every check shares: calling the learner's code, comparing results, explaining failures."""

from __future__ import annotations

import contextlib
import functools
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


# Errors PyTorch raises for a few common mistakes, and what to do about each.
_ERROR_ADVICE = [
    (
        "modified by an inplace operation",
        "An in-place operation (w *= …, w += …, w[...] = …, w.masked_fill_(…)) overwrote a tensor "
        "that autograd still needs for the backward pass. Write it out of place instead: "
        "w = w * …, w = w + …, w = w.masked_fill(…).",
    ),
    (
        "refers to a single memory location",
        "An in-place write into an expanded tensor (.expand() shares memory between entries): "
        "compute a new tensor instead (mask = mask | …, not mask |= …).",
    ),
    (
        "view size is not compatible",
        ".view() needs a tensor whose memory is laid out in order, which a transposed tensor is "
        "not: use .reshape() (or .contiguous().view()).",
    ),
    (
        "does not require grad and does not have a grad_fn",
        "The result is cut off from autograd: avoid .detach(), .item(), .data, torch.tensor(...) "
        "and torch.no_grad() on the path from the inputs to the result.",
    ),
    (
        "appears to not have been used in the graph",
        "The loss was not computed from the tensor you differentiate with respect to: make that "
        "tensor once, compute everything from it, and differentiate with respect to it.",
    ),
    (
        "cannot be multiplied",
        "In a @ b, a's last size must equal b's second-to-last: print both shapes to see which "
        "operand needs a transpose, or has one too many.",
    ),
    (
        "Dimension out of range",
        "A dim index is out of range for a tensor with fewer dimensions: index dims from the "
        "end (dim=-1, -2), and remember that F.normalize's default is dim=1 (use dim=0 for a "
        "vector).",
    ),
]


def _advice_for(err: BaseException) -> str:
    text = str(err)
    return next((advice for key, advice in _ERROR_ADVICE if key in text), "")


def _call(
    fn: Callable, *args: Any, hint: str = "", may_change: tuple[int, ...] = (), **kwargs: Any
) -> Any:
    """Call your code. A stub's NotImplementedError passes through; other errors get context.

    The tensors passed in must be unchanged afterwards, except the positions in `may_change`: a
    function that writes into its arguments (mask |= …) silently changes its caller's data.
    """
    originals = [(i, a, a.detach().clone()) for i, a in enumerate(args) if torch.is_tensor(a)]
    try:
        result = fn(*args, **kwargs)
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
        if advice := _advice_for(err):
            message += f"\n  {advice}"
        if isinstance(err, TypeError) and len(traceback.extract_tb(err.__traceback__)) == 1:
            # Raised by the call itself, before any line of your function ran.
            message += (
                f"\n  Your {name} does not take the arguments the check passes: keep the "
                "parameters of the exercise's stub, in its order."
            )
        if hint:
            message += f"\n  {hint}"
        raise CheckFailed(message) from err
    for index, arg, original in originals:
        if index in may_change:
            continue
        if arg.shape != original.shape or not torch.equal(arg.detach(), original):
            name = getattr(fn, "__name__", type(fn).__name__)
            _fail(
                f"your {name} changed argument {index + 1} ({_describe(original)}) in place: "
                "an in-place operation on an argument (x |= …, x += …, x[...] = …, "
                "x.masked_fill_(…)) rewrites the caller's tensor. Build a new tensor instead "
                "(x = x | …, x = x.masked_fill(…))"
            )
    return result


def checked(check: Callable[..., None]) -> Callable[..., None]:
    """Make sure a check ends in a sentence: an error it did not foresee becomes CheckFailed.

    Such errors come from a result the check could not work with (a wrong shape deep inside a
    comparison, say); a stub's NotImplementedError still passes through unchanged.
    """

    @functools.wraps(check)
    def wrapper(learner: Any) -> None:
        if not callable(learner):
            _not_callable(check, learner)
        try:
            check(learner)
        except CheckFailed:
            raise
        except NotImplementedError as err:
            if _raised_by_a_stub(err):
                raise
            _stopped(check, err)
        except Exception as err:
            _stopped(check, err)

    return wrapper


def _not_callable(check: Callable, learner: Any) -> NoReturn:
    """The usual cause: the function was called (its result passed) instead of passed itself."""
    _fail(
        f"{check.__name__} takes your function itself, but got {_describe(learner)}, which "
        f"cannot be called. Pass the function's name without parentheses or arguments: "
        f"{check.__name__}(my_function), not {check.__name__}(my_function(...))"
    )


def _stopped(check: Callable, err: Exception) -> NoReturn:
    message = (
        f"{check.__name__} could not use what your code returned: {type(err).__name__}: {err}. "
        "Compare the shapes and types you return with the ones the exercise describes."
    )
    if advice := _advice_for(err):
        message += f"\n  {advice}"
    raise CheckFailed(message) from err


def _tensor(value: Any, what: str) -> Tensor:
    if value is None:
        _fail(f"{what} is None: did you forget the `return` statement?")
    if isinstance(value, int | float):
        _fail(
            f"{what} is a Python number ({value!r}); return the tensor itself (no .item() or "
            "float(...)), so that it keeps its dtype and autograd can backpropagate through it"
        )
    if type(value).__module__ == "numpy":
        _fail(
            f"{what} is a NumPy {type(value).__name__}; return a torch.Tensor: keep to torch "
            "operations (no .numpy()), so the dtype stays and autograd can backpropagate"
        )
    if not isinstance(value, torch.Tensor):
        _fail(f"{what} should be a torch.Tensor, got {type(value).__name__}")
    return value


def _scalar_loss(value: Any, what: str) -> Tensor:
    """The learner's loss as a tensor, refused unless it is one number (a 0-d tensor)."""
    loss = _tensor(value, what)
    if loss.dim() != 0:
        _fail(
            f"{what} has shape {tuple(loss.shape)}; a loss is a single number (a 0-d tensor): "
            "average over the batch with .mean()"
        )
    return loss


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
    if _lost_unit_dims(actual.shape, expected.shape):
        _fail(_squeeze_advice(what, actual.shape, expected.shape, where))
    if actual.shape != expected.shape:
        _fail(f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)} ({where})")
    message = (
        f"{what} differs from the reference by up to {_max_diff(actual, expected):.3g} ({where})."
    )
    _fail(message + (f"\n  {advice}" if advice else ""))


def _lost_unit_dims(actual: torch.Size, expected: torch.Size) -> bool:
    """True when two shapes differ only by dimensions of size 1 (a .squeeze(), or a [0])."""
    return actual != expected and [n for n in actual if n != 1] == [n for n in expected if n != 1]


def _squeeze_advice(what: str, actual: torch.Size, expected: torch.Size, where: str) -> str:
    return (
        f"{what} has shape {tuple(actual)}, expected {tuple(expected)} ({where}): the same "
        "numbers, but a dimension of size 1 went missing or appeared. .squeeze() removes every "
        "size-1 dimension, including real ones like a single query (Lq = 1) or a batch of 1: "
        "keep the shape, or name the dimension (.squeeze(-1))"
    )


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
    """Gradients of a random weighted sum of `outputs` with respect to `inputs`.

    A backward pass through your graph can fail where the forward pass worked (an in-place
    change to a tensor autograd saved); that becomes a CheckFailed saying what to change.
    """
    gen = torch.Generator().manual_seed(seed)
    try:
        loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outputs)
        grads = torch.autograd.grad(loss, list(inputs), allow_unused=True)
    except RuntimeError as err:
        message = (
            "your values are fine, but backpropagating through your result failed: "
            f"{type(err).__name__}: {err}"
        )
        if advice := _advice_for(err):
            message += f"\n  {advice}"
        raise CheckFailed(message) from err
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads, strict=True)]


def _expect_grad(
    got: Tensor,
    expected: Tensor,
    name: str,
    where: str,
    mistakes: Sequence[tuple[Tensor | None, str]] = (),
) -> None:
    """Fail unless the gradient with respect to `name` is right, naming a detach if it is one."""
    if _close(got, expected):
        return
    for wrong, explanation in mistakes:
        if wrong is not None and _close(got, wrong):
            _fail(f"{explanation}\n  (Seen for {where}.)")
    if got.abs().max() == 0 and expected.abs().max() > 0:
        _fail(
            f"no gradient reaches {name} ({where}), although your values are right: something "
            "on the path from it to the result is detached (.detach(), .data, .item(), "
            "torch.tensor(...) or a torch.no_grad() block)"
        )
    _fail(
        f"the gradient with respect to {name} differs from the reference by up to "
        f"{_max_diff(got, expected):.3g} ({where}), although your values are right: part of the "
        "computation is cut off from autograd (a .detach(), .data or torch.no_grad() on one of "
        "the paths from the input to the result) or changed in place"
    )


def _expect_loss_gradients(
    fn: Callable, reference: Callable, logits: dict[str, Tensor], what: str, shown: str
) -> None:
    """Fail unless the gradients of `fn(*logits)` match `reference(*logits)`'s.

    logits: name -> a 1-D tensor of logits (a leaf that requires grad); `shown` writes them out
    for the message.
    """
    inputs = list(logits.values())
    loss = _scalar_loss(_call(fn, *inputs), what)
    _expect_graph(loss, what)
    got, want = _grads([loss], inputs), _grads([reference(*inputs)], inputs)
    for name, g, r in zip(logits, got, want, strict=True):
        _expect_grad(g, r, f"the {name} logits", shown)


def _randn(*shape: int, gen: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(shape, generator=gen, dtype=dtype)


def _shapes(**tensors: Tensor) -> str:
    return ", ".join(f"{name} {tuple(t.shape)}" for name, t in tensors.items())
