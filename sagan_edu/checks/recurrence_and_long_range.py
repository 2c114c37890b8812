"""Checks for solutions/06_recurrence_and_long_range.ipynb: an LSTM cell, gradients that travel."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sagan_edu.checks._common import (
    Tensor,
    _call,
    _expect_close,
    _expect_dtype,
    _expect_grad,
    _expect_graph,
    _fail,
    _fixed_seed,
    _grads,
    _pair,
    _passed,
    _randn,
    _tensor,
    checked,
)
from sagan_edu.sequence import IGNORE, AttentionClassifier, LSTMClassifier, TokenClassifier

# ---------------------------------------------------------------------------------------------
# Exercise 11: one step of an LSTM
# ---------------------------------------------------------------------------------------------


def reference_lstm_cell(
    x: Tensor, h: Tensor, c: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias: Tensor
) -> tuple[Tensor, Tensor]:
    """nn.LSTMCell with these weights (its two biases folded into one): (h', c')."""
    cell = nn.LSTMCell(x.shape[-1], h.shape[-1]).to(x.dtype)
    weights = {  # the very tensors given, so gradients reach them
        "weight_ih": weight_ih,
        "weight_hh": weight_hh,
        "bias_ih": bias,
        "bias_hh": torch.zeros_like(bias),
    }
    return torch.func.functional_call(cell, weights, (x, (h, c)))


def _cell_variant(
    x: Tensor,
    h: Tensor,
    c: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias: Tensor,
    *,
    order: str = "ifgo",
    g_activation: Callable[[Tensor], Tensor] = torch.tanh,
    input_gate: bool = True,
    tanh_on_cell: bool = True,
    new_cell_in_h: bool = True,
    recurrent: bool = True,
    bias_twice: bool = False,
    one_minus_f: bool = False,
    coupled: bool = False,
) -> tuple[Tensor, Tensor]:
    """An LSTM step written out, with one thing done the way a common mistake does it."""
    gates = x @ weight_ih.T + bias + (h @ weight_hh.T if recurrent else 0)  # (B, 4H)
    gates = gates + bias if bias_twice else gates
    chunks = dict(zip(order, gates.chunk(4, dim=-1), strict=True))
    i, f, o = (torch.sigmoid(chunks[name]) for name in "ifo")
    g = g_activation(chunks["g"])
    if coupled:  # a GRU-style update: one gate for forgetting and writing
        i = 1 - f
    c_new = (1 - f if one_minus_f else f) * c + (i * g if input_gate else g)  # (B, H)
    cell = c_new if new_cell_in_h else c
    h_new = o * (torch.tanh(cell) if tanh_on_cell else cell)
    return h_new, c_new


_LSTM_MISTAKES = {
    "order": (
        {"order": "ifog"},
        "your gates are in the order i, f, o, g; PyTorch's LSTM stacks the four blocks of rows "
        "as input, forget, cell (g), output: gates.chunk(4, dim=-1) gives i, f, g, o",
    ),
    "sigmoid g": (
        {"g_activation": torch.sigmoid},
        "the candidate cell g must go through tanh (values in (−1, 1), so the cell can also "
        "decrease); only the three gates i, f, o use the sigmoid",
    ),
    "sigmoid then tanh": (
        {"g_activation": lambda t: torch.tanh(torch.sigmoid(t))},
        "your g went through the sigmoid and then tanh: apply the sigmoid to the i, f and o "
        "blocks only, and tanh straight to the g block's pre-activation",
    ),
    "no input gate": (
        {"input_gate": False},
        "the new cell adds g without the input gate: c' = f·c + i·g",
    ),
    "no tanh": (
        {"tanh_on_cell": False},
        "h' = o·c' is missing the tanh: h' = o·tanh(c')",
    ),
    "old cell": (
        {"new_cell_in_h": False},
        "h' uses the old cell c; it should use the new one: h' = o·tanh(c')",
    ),
    "bias twice": (
        {"bias_twice": True},
        "you added the bias twice (once per matrix product); here `bias` is already the sum of "
        "nn.LSTM's two biases: x @ weight_ihᵀ + h @ weight_hhᵀ + bias",
    ),
    "1 - f": (
        {"one_minus_f": True},
        "your cell keeps (1 − f)·c; the forget gate is the share of the old cell that is kept: "
        "c' = f·c + i·g (f near 1 remembers)",
    ),
    "coupled": (
        {"coupled": True},
        "your cell writes (1 − f)·g, coupling writing to forgetting as a GRU does; the LSTM has "
        "its own input gate: c' = f·c + i·g, i = σ(the first block of gate rows)",
    ),
    "no recurrence": (
        {"recurrent": False},
        "the gates ignore the previous hidden state: add h @ weight_hhᵀ to x @ weight_ihᵀ + bias",
    ),
}


def _lstm_inputs(seed: int = 0) -> list[tuple[str, tuple[Tensor, ...]]]:
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for description, batch, n_in, hidden, dtype in [
        ("batch 3, 5 inputs, hidden 4", 3, 5, 4, torch.float32),
        ("batch 1, 2 inputs, hidden 6", 1, 2, 6, torch.float32),
        ("batch 4, 3 inputs, hidden 3, float64", 4, 3, 3, torch.float64),
    ]:
        x = _randn(batch, n_in, gen=gen, dtype=dtype)
        h, c = (
            _randn(batch, hidden, gen=gen, dtype=dtype),
            2 * _randn(batch, hidden, gen=gen, dtype=dtype),
        )
        weight_ih = _randn(4 * hidden, n_in, gen=gen, dtype=dtype)
        weight_hh = _randn(4 * hidden, hidden, gen=gen, dtype=dtype)
        bias = _randn(4 * hidden, gen=gen, dtype=dtype)
        cases.append((description, (x, h, c, weight_ih, weight_hh, bias)))
    return cases


@checked
def check_lstm_cell(lstm_cell: Callable[..., tuple[Tensor, Tensor]]) -> None:
    """Exercise 11: `lstm_cell(x, h, c, weight_ih, weight_hh, bias)` -> (h', c').

    x (B, I), h and c (B, H), weight_ih (4H, I), weight_hh (4H, H), bias (4H,); the gates'
    rows are stacked as PyTorch's nn.LSTMCell stacks them: input, forget, cell, output.
    """
    hint = (
        "Shapes: x (B, I) @ weight_ihᵀ (I, 4H) and h (B, H) @ weight_hhᵀ (H, 4H) give the four "
        "gates side by side, (B, 4H)."
    )
    with _fixed_seed():
        for description, inputs in _lstm_inputs():
            x, h = inputs[:2]
            where = f"{description}: x {tuple(x.shape)}, h and c {tuple(h.shape)}"
            expected_h, expected_c = reference_lstm_cell(*inputs)
            result = _call(lstm_cell, *(t.clone() for t in inputs), hint=hint)
            got_h, got_c = _pair(result, "your lstm_cell", "h, c")
            got_h, got_c = _tensor(got_h, "the new h"), _tensor(got_c, "the new c")
            if _close_pair((got_h, got_c), (expected_c, expected_h)):
                _fail(f"you returned (c', h'); return (h', c') ({where})")
            _expect_dtype(got_h, x.dtype, "your h'")
            mistakes_c, mistakes_h = [], []
            for options, explanation in _LSTM_MISTAKES.values():
                wrong_h, wrong_c = _cell_variant(*inputs, **options)
                mistakes_c.append((wrong_c, explanation))
                mistakes_h.append((wrong_h, explanation))
            _expect_close(
                got_c, expected_c, "your new cell c'", where, mistakes=mistakes_c,
                advice="c' = f·c + i·g with i, f = σ(gate rows 1 and 2), g = tanh(rows 3).",
            )  # fmt: skip
            _expect_close(
                got_h, expected_h, "your new hidden state h'", where, mistakes=mistakes_h,
                advice="h' = o·tanh(c') with o = σ(the fourth block of gate rows).",
            )  # fmt: skip

        _description, inputs = _lstm_inputs()[0]
        inputs = tuple(t.clone().requires_grad_() for t in inputs)
        got = _pair(_call(lstm_cell, *inputs), "your lstm_cell", "h, c")
        _expect_graph(_tensor(got[0], "the new h"), "your h'")
        expected = reference_lstm_cell(*inputs)
        names = ["x", "h", "c", "weight_ih", "weight_hh", "bias"]
        for name, g, r in zip(
            names, _grads(list(got), inputs), _grads(list(expected), inputs), strict=True
        ):
            _expect_grad(g, r, name, "batch 3, 5 inputs, hidden 4")
    _passed(
        "check_lstm_cell",
        "h' and c' against nn.LSTMCell on 3 inputs (batch 1 to 4, float64), gradients for all "
        "six inputs.",
    )


def _close_pair(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> bool:
    return all(
        x.shape == y.shape and torch.allclose(x.double(), y.double(), atol=1e-5)
        for x, y in zip(a, b, strict=True)
    )


# ---------------------------------------------------------------------------------------------
# Exercise 12: how much gradient reaches each position
# ---------------------------------------------------------------------------------------------


def reference_embedding_gradient_norms(model: nn.Module, tokens: Tensor, targets: Tensor) -> Tensor:
    """(L,): the batch mean of ‖∂loss/∂x[b, i]‖ over each position i's embedding x[b, i]."""
    x = model.embed(tokens).detach().requires_grad_()  # (B, L, E)
    logits = model.from_embeddings(x)  # (B, L, classes)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    (grad,) = torch.autograd.grad(loss, x)  # (B, L, E)
    return grad.norm(dim=-1).mean(dim=0)  # (L,)


def _gradient_models(seed: int) -> list[tuple[str, nn.Module, Tensor, Tensor]]:
    """Small untrained models of each kind, with a batch whose only label is at the end."""
    torch.manual_seed(seed)
    vocab, classes, length, batch = 7, 3, 9, 4
    tokens = torch.randint(vocab, (batch, length))
    last_only = torch.full((batch, length), IGNORE)
    last_only[:, -1] = torch.randint(classes, (batch,))
    everywhere = torch.randint(classes, (batch, length))
    return [
        (
            "an LSTMClassifier, label at the last position",
            LSTMClassifier(vocab, classes, 8, 12),
            tokens,
            last_only,
        ),
        (
            "an AttentionClassifier, label at the last position",
            AttentionClassifier(vocab, classes, length, 8, 2),
            tokens,
            last_only,
        ),
        (
            "a TokenClassifier, a label at every position",
            TokenClassifier(vocab, classes, 8),
            tokens,
            everywhere,
        ),
    ]


def _gradient_mistakes(
    model: nn.Module, tokens: Tensor, targets: Tensor
) -> list[tuple[Tensor, str]]:
    x = model.embed(tokens).detach().requires_grad_()
    logits = model.from_embeddings(x)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    (grad,) = torch.autograd.grad(loss, x)  # (B, L, E)
    return [
        (grad.norm(dim=-1).sum(dim=0), "you summed the norms over the batch; take their mean"),
        (
            grad.mean(dim=0).norm(dim=-1),
            "you averaged the gradients over the batch before taking "
            "their norms, so gradients pointing different ways cancel; take each example's norm "
            "first, then the mean: grad.norm(dim=-1).mean(dim=0)",
        ),
        (
            grad.square().sum(dim=-1).mean(dim=0),
            "you averaged the squared lengths; take the length itself, grad.norm(dim=-1), "
            "then the mean over the batch",
        ),
        (
            grad.abs().sum(dim=-1).mean(dim=0),
            "you took the L1 norm (sum of absolute values); use "
            "the Euclidean length, grad.norm(dim=-1)",
        ),
    ]


def _norms_shape_advice(got: Tensor, tokens: Tensor, model: nn.Module) -> str:
    batch, length = tokens.shape
    if got.shape == (batch,):
        return ": one number per example; you want one per position, averaged over the batch"
    if got.shape == (batch, length):
        return ": average over the batch (dim=0) as well"
    if got.dim() in (1, 2) and got.shape[0] == model.token_embedding.num_embeddings:
        return (
            ": that is the gradient of the embedding table, one row per vocabulary entry; take "
            "it with respect to the embedded sequence x = model.embed(tokens)"
        )
    return ""


@checked
def check_embedding_gradient_norms(embedding_gradient_norms: Callable[..., Tensor]) -> None:
    """Exercise 12: `embedding_gradient_norms(model, tokens, targets)` -> (L,).

    Entry i: the mean over the batch of the length of ∂loss/∂x[b, i], where x = model.embed(tokens)
    and loss is the cross-entropy of model.from_embeddings(x) over the labelled positions.
    """
    hint = (
        "Positions without a label have target IGNORE = -100: pass ignore_index=IGNORE to "
        "F.cross_entropy. The gradient you want is with respect to the embeddings x = "
        "model.embed(tokens), shape (B, L, E), not the embedding table."
    )
    with _fixed_seed():
        for description, model, tokens, targets in _gradient_models(seed=0):
            where = f"{description}, tokens {tuple(tokens.shape)}"
            expected = reference_embedding_gradient_norms(model, tokens, targets)
            got = _tensor(
                _call(embedding_gradient_norms, model, tokens.clone(), targets.clone(), hint=hint),
                "your norms",
            )
            length = tokens.shape[1]
            if got.shape != expected.shape:
                _fail(
                    f"your norms have shape {tuple(got.shape)}, expected ({length},), one per "
                    f"position ({where}){_norms_shape_advice(got, tokens, model)}"
                )
            _expect_close(
                got, expected, "your gradient norms", where,
                mistakes=_gradient_mistakes(model, tokens, targets),
                advice="Entry i is the batch mean of ‖∂loss/∂x[b, i]‖, x = model.embed(tokens), "
                "loss = cross-entropy of model.from_embeddings(x) over the labelled positions.",
            )  # fmt: skip
    _passed(
        "check_embedding_gradient_norms",
        "per-position gradient norms of an LSTM, an attention and a token-only classifier "
        "against autograd.",
    )
