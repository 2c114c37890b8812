"""The checks of exercises 11-17 (recurrence, attention in chunks, the GAN game, the ablation).

As in test_checks.py: a right answer passes with one line, other correct formulations pass too,
and each planted mistake fails with a message that names it. The references the right answers are
compared with are independent of the checks: nn.LSTMCell, torch.autograd, F.scaled_dot_product_
attention, closed-form formulas.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sagan_edu import checks
from sagan_edu.attention import SelfAttention2d
from sagan_edu.checks import CheckFailed
from sagan_edu.sequence import IGNORE, LSTMClassifier

# ---------------------------------------------------------------------------------------------
# Right answers, written the way the solutions write them
# ---------------------------------------------------------------------------------------------


def lstm_cell(x, h, c, weight_ih, weight_hh, bias):
    gates = x @ weight_ih.T + h @ weight_hh.T + bias  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_new), c_new


def embedding_gradient_norms(model, tokens, targets):
    x = model.embed(tokens).detach().requires_grad_()
    logits = model.from_embeddings(x)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    (grad,) = torch.autograd.grad(loss, x)
    return grad.norm(dim=-1).mean(dim=0)


def chunked_attention(q, k, v, chunk_size):
    outputs = []
    for start in range(0, q.shape[-2], chunk_size):
        q_chunk = q[..., start : start + chunk_size, :]
        weights = torch.softmax(q_chunk @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        outputs.append(weights @ v)
    return torch.cat(outputs, dim=-2)


def d_loss(real, fake):
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def g_loss(fake):
    return F.softplus(-fake).mean()


def optimal_discriminator(p_data, p_model):
    total = p_data + p_model
    return torch.where(total > 0, p_data / total.clamp_min(torch.finfo(total.dtype).tiny), 0.5)


def scaled_attention(block, x, scale):
    y = block(x)
    return x + scale * (y - x)


def uniform_attention(block, x):
    _B, _C, H, W = x.shape
    v = block.value(x)
    if block.pool > 1:
        v = F.max_pool2d(v, block.pool)
    o = v.mean(dim=(-2, -1), keepdim=True).expand(-1, -1, H, W)  # (B, C/2, H, W)
    return x + block.gamma * block.out(o)


RIGHT = {
    checks.check_lstm_cell: lstm_cell,
    checks.check_embedding_gradient_norms: embedding_gradient_norms,
    checks.check_chunked_attention: chunked_attention,
    checks.check_d_nonsaturating_loss: d_loss,
    checks.check_g_nonsaturating_loss: g_loss,
    checks.check_optimal_discriminator: optimal_discriminator,
    checks.check_scaled_attention: scaled_attention,
    checks.check_uniform_attention: uniform_attention,
}


def name(check) -> str:
    return check.__name__.removeprefix("check_")


@pytest.mark.parametrize("check", list(RIGHT), ids=name)
def test_a_right_answer_passes_with_one_line(check, capsys):
    check(RIGHT[check])
    out = capsys.readouterr().out
    assert out.startswith(f"✅ {check.__name__} passed:")
    assert out.count("\n") == 1


@pytest.mark.parametrize("check", list(RIGHT), ids=name)
def test_a_stubs_not_implemented_error_passes_through_unchanged(check):
    error = NotImplementedError("Exercise: write me")

    def stub(*args, **kwargs):
        raise error

    with pytest.raises(NotImplementedError) as raised:
        check(stub)
    assert raised.value is error


# ---------------------------------------------------------------------------------------------
# The right answers agree with independent references
# ---------------------------------------------------------------------------------------------


def test_the_lstm_cell_answer_matches_nn_lstm_cell_step_by_step():
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(3, 5).double()
    x, h, c = torch.randn(4, 3).double(), torch.randn(4, 5).double(), torch.randn(4, 5).double()
    bias = cell.bias_ih + cell.bias_hh
    ours = lstm_cell(x, h, c, cell.weight_ih, cell.weight_hh, bias)
    theirs = cell(x, (h, c))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


def test_gradient_norms_match_finite_differences_at_one_position():
    torch.manual_seed(0)
    model = LSTMClassifier(5, 3, embed_dim=4, hidden_size=6).double()
    tokens = torch.randint(5, (2, 6))
    targets = torch.full((2, 6), IGNORE)
    targets[:, -1] = torch.tensor([0, 2])
    norms = embedding_gradient_norms(model, tokens, targets)
    x = model.embed(tokens).detach()

    def loss(x):
        logits = model.from_embeddings(x)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)

    eps, position, per_example = 1e-6, 1, []
    for b in range(2):
        grad = torch.zeros(4, dtype=torch.float64)
        for e in range(4):
            step = torch.zeros_like(x)
            step[b, position, e] = eps
            grad[e] = (loss(x + step) - loss(x - step)) / (2 * eps)
        per_example.append(grad.norm())
    assert norms[position].item() == pytest.approx(torch.stack(per_example).mean().item(), 1e-6)


def test_chunked_attention_answer_matches_pytorchs_fused_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 50, 8), torch.randn(2, 30, 8), torch.randn(2, 30, 4)
    torch.testing.assert_close(
        chunked_attention(q, k, v, 7), F.scaled_dot_product_attention(q, k, v)
    )


def test_gan_losses_match_binary_cross_entropy_and_the_optimum_makes_the_value_js():
    real, fake = torch.tensor([0.3, -2.0, 5.0]), torch.tensor([1.0, -0.4])
    bce = F.binary_cross_entropy(torch.sigmoid(real), torch.ones(3)) + F.binary_cross_entropy(
        torch.sigmoid(fake), torch.zeros(2)
    )
    assert d_loss(real, fake).item() == pytest.approx(bce.item(), rel=1e-6)
    assert g_loss(fake).item() == pytest.approx(-torch.log(torch.sigmoid(fake)).mean().item())
    # Goodfellow et al. (2014), theorem 1: V(D*, G) = −log 4 + 2·JS(p_data ‖ p_model).
    p, m = torch.tensor([0.1, 0.4, 0.5, 0.0]), torch.tensor([0.3, 0.3, 0.2, 0.2])
    d = optimal_discriminator(p, m)
    value = torch.xlogy(p, d).sum() + torch.xlogy(m, 1 - d).sum()  # 0·log 0 = 0
    mix = (p + m) / 2
    kl = lambda a, b: (a[a > 0] * (a[a > 0] / b[a > 0]).log()).sum()  # noqa: E731
    js = 0.5 * kl(p, mix) + 0.5 * kl(m, mix)
    assert value.item() == pytest.approx(-math.log(4) + 2 * js.item(), rel=1e-6)


def test_scaled_attention_at_scale_1_is_the_block_and_at_0_the_identity():
    torch.manual_seed(0)
    block = SelfAttention2d(16).eval()
    with torch.no_grad():
        block.gamma.fill_(0.5)
    x = torch.randn(1, 16, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(scaled_attention(block, x, 1.0), block(x))
        torch.testing.assert_close(scaled_attention(block, x, 0.0), x)


# ---------------------------------------------------------------------------------------------
# Other right answers pass
# ---------------------------------------------------------------------------------------------


def lstm_cell_by_hand_with_split(x, h, c, weight_ih, weight_hh, bias):
    H = h.shape[-1]
    gates = torch.addmm(bias, x, weight_ih.t()) + torch.mm(h, weight_hh.t())
    i, f, g, o = gates.split(H, dim=1)
    c_new = f.sigmoid() * c + i.sigmoid() * g.tanh()
    return o.sigmoid() * c_new.tanh(), c_new


def gradient_norms_by_retain_grad(model, tokens, targets):
    x = model.embed(tokens)
    x.retain_grad()
    logits = model.from_embeddings(x)
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
    )
    loss.backward()
    model.zero_grad()
    return torch.linalg.vector_norm(x.grad, dim=2).mean(0)


def chunked_with_split_and_fused(q, k, v, chunk_size):
    return torch.cat(
        [F.scaled_dot_product_attention(c, k, v) for c in q.split(chunk_size, dim=-2)], dim=-2
    )


def uniform_by_weights(block, x):
    """Uniform weights written out as a (B, N, M) matrix of 1/M."""
    B, _C, H, W = x.shape
    pool = (lambda t: F.max_pool2d(t, block.pool)) if block.pool > 1 else (lambda t: t)
    v = pool(block.value(x)).flatten(2).transpose(1, 2)  # (B, M, C/2)
    weights = torch.full((B, H * W, v.shape[1]), 1 / v.shape[1], dtype=x.dtype)
    o = (weights @ v).transpose(1, 2).reshape(B, -1, H, W)
    return x + block.gamma * block.out(o)


def scaled_by_changing_gamma(block, x, scale):
    gamma = block.gamma.detach().clone()
    try:
        with torch.no_grad():
            block.gamma.mul_(scale)
        return block(x)
    finally:
        with torch.no_grad():
            block.gamma.copy_(gamma)


ALTERNATIVES = [
    (checks.check_lstm_cell, lstm_cell_by_hand_with_split),
    (checks.check_embedding_gradient_norms, gradient_norms_by_retain_grad),
    (checks.check_chunked_attention, chunked_with_split_and_fused),
    (
        checks.check_d_nonsaturating_loss,
        lambda r, f: (
            F.binary_cross_entropy_with_logits(r, torch.ones_like(r))
            + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f))
        ),
    ),
    (
        checks.check_d_nonsaturating_loss,
        lambda r, f: -F.logsigmoid(r).mean() - F.logsigmoid(-f).mean(),
    ),
    (
        checks.check_g_nonsaturating_loss,
        lambda f: F.binary_cross_entropy_with_logits(f, torch.ones_like(f)),
    ),
    (
        checks.check_optimal_discriminator,
        lambda p, m: torch.nan_to_num(p / (p + m), nan=0.5),
    ),
    (checks.check_scaled_attention, scaled_by_changing_gamma),
    (checks.check_uniform_attention, uniform_by_weights),
]


# ---------------------------------------------------------------------------------------------
# Planted mistakes
# ---------------------------------------------------------------------------------------------


def lstm_with(order="ifgo", g_act=torch.tanh, input_gate=True, tanh_c=True, new_c=True, rec=True,
              swap_out=False, in_place=False):  # fmt: skip
    def wrong(x, h, c, weight_ih, weight_hh, bias):
        gates = x @ weight_ih.T + bias + (h @ weight_hh.T if rec else 0)
        parts = dict(zip(order, gates.chunk(4, dim=-1), strict=True))
        i, f, o = (torch.sigmoid(parts[n]) for n in "ifo")
        g = g_act(parts["g"])
        if in_place:
            c_new = f * c
            c_new += i * g
            h_new = torch.tanh(c_new)
            h_new *= o
            c_new *= 1.0  # tanh's backward needs c_new: modifying it breaks backward
        else:
            c_new = f * c + (i * g if input_gate else g)
            h_new = o * (torch.tanh(c_new if new_c else c) if tanh_c else c_new)
        return (c_new, h_new) if swap_out else (h_new, c_new)

    return wrong


def norms_with(reduce):
    def wrong(model, tokens, targets):
        x = model.embed(tokens).detach().requires_grad_()
        logits = model.from_embeddings(x)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        (grad,) = torch.autograd.grad(loss, x)
        return reduce(grad)

    return wrong


def norms_of_the_table(model, tokens, targets):
    logits = model(tokens)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    (grad,) = torch.autograd.grad(loss, model.token_embedding.weight)
    return grad.norm(dim=-1)


def norms_of_a_second_embedding(model, tokens, targets):
    x = model.embed(tokens).detach().requires_grad_()
    logits = model(tokens)  # embeds the tokens again: the loss never sees x
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    (grad,) = torch.autograd.grad(loss, x)
    return grad.norm(dim=-1).mean(0)


def chunked_with(chunk_keys=False, drop_last=False, full_scores=False, scale=True, dim=-1):
    def wrong(q, k, v, chunk_size):
        d = q.shape[-1] if scale else 1
        if full_scores:
            weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
            return torch.cat([w @ v for w in weights.split(chunk_size, dim=-2)], dim=-2)
        if chunk_keys:
            out = 0
            for s in range(0, k.shape[-2], chunk_size):
                ks, vs = k[..., s : s + chunk_size, :], v[..., s : s + chunk_size, :]
                out = out + torch.softmax(q @ ks.transpose(-2, -1) / math.sqrt(d), -1) @ vs
            return out
        stop = q.shape[-2] // chunk_size * chunk_size if drop_last else q.shape[-2]
        outs = []
        for s in range(0, max(stop, 1 if not drop_last else 0), chunk_size):
            qs = q[..., s : s + chunk_size, :]
            outs.append(torch.softmax(qs @ k.transpose(-2, -1) / math.sqrt(d), dim=dim) @ v)
        return torch.cat(outs, dim=-2) if outs else q[..., :0, :]

    return wrong


def blocks_scale_gamma_forever(block, x, scale):
    with torch.no_grad():
        block.gamma.mul_(scale)
    return block(x)


def scaled_with_temperature(block, x, scale):
    B, _C, H, W = x.shape
    pool = (lambda t: F.max_pool2d(t, block.pool)) if block.pool > 1 else (lambda t: t)
    q = block.query(x).flatten(2).transpose(1, 2)
    k = pool(block.key(x)).flatten(2).transpose(1, 2)
    v = pool(block.value(x)).flatten(2).transpose(1, 2)
    o = torch.softmax(scale * q @ k.transpose(1, 2), dim=-1) @ v
    return x + block.gamma * block.out(o.transpose(1, 2).reshape(B, -1, H, W))


def uniform_unpooled(block, x):
    _B, _C, H, W = x.shape
    o = block.value(x).mean(dim=(-2, -1), keepdim=True).expand(-1, -1, H, W)
    return x + block.gamma * block.out(o)


WRONG = [
    (checks.check_lstm_cell, lstm_with(order="ifog"), "i, f, o, g"),
    (checks.check_lstm_cell, lstm_with(g_act=torch.sigmoid), "through tanh"),
    (checks.check_lstm_cell, lstm_with(input_gate=False), "without the input gate"),
    (checks.check_lstm_cell, lstm_with(tanh_c=False), "missing the tanh"),
    (checks.check_lstm_cell, lstm_with(new_c=False), "uses the old cell"),
    (checks.check_lstm_cell, lstm_with(rec=False), "ignore the previous hidden state"),
    (
        checks.check_lstm_cell,
        lambda x, h, c, wi, wh, b: lstm_cell(x, h, c, wi, wh, b + b / 2 + b / 2),
        "bias twice",
    ),
    (checks.check_lstm_cell, lstm_with(swap_out=True), r"return \(h', c'\)"),
    (checks.check_lstm_cell, lstm_with(in_place=True), r"w = w \* …"),
    (checks.check_lstm_cell, lambda x, h, c, wi, wh, b: lstm_cell(x, h, c, wi.T, wh, b), "Shapes"),
    (checks.check_embedding_gradient_norms, norms_with(lambda g: g.norm(dim=-1).sum(0)), "summed"),
    (
        checks.check_embedding_gradient_norms,
        norms_with(lambda g: g.mean(0).norm(dim=-1)),
        "before taking their norms",
    ),
    (
        checks.check_embedding_gradient_norms,
        norms_with(lambda g: g.norm(dim=-1)),
        r"average over the batch \(dim=0\)",
    ),
    (
        checks.check_embedding_gradient_norms,
        norms_with(lambda g: g.norm(dim=1).mean(0)),
        "one per position",
    ),
    (
        checks.check_embedding_gradient_norms,
        norms_with(lambda g: g.abs().sum(-1).mean(0)),
        "L1 norm",
    ),
    (checks.check_embedding_gradient_norms, norms_of_the_table, "embedding table"),
    (
        checks.check_embedding_gradient_norms,
        norms_with(lambda g: g.square().sum(-1).mean(0)),
        "squared lengths",
    ),
    (checks.check_embedding_gradient_norms, norms_of_a_second_embedding, "not computed from"),
    (checks.check_chunked_attention, chunked_with(chunk_keys=True), "split the keys"),
    (checks.check_chunked_attention, chunked_with(drop_last=True), "last chunk is shorter"),
    (checks.check_chunked_attention, chunked_with(full_scores=True), "at most chunk_size"),
    (checks.check_chunked_attention, chunked_with(scale=False), "not scaled"),
    (checks.check_chunked_attention, chunked_with(dim=-2), r"dim=-2"),
    (checks.check_d_nonsaturating_loss, lambda r, f: d_loss(f, r), "swapped real and fake"),
    (checks.check_d_nonsaturating_loss, lambda r, f: -d_loss(r, f), "wrong sign"),
    (
        checks.check_d_nonsaturating_loss,
        lambda r, f: -torch.log(torch.sigmoid(r)).mean() - torch.log(1 - torch.sigmoid(f)).mean(),
        "not finite for confident logits",
    ),
    (
        checks.check_d_nonsaturating_loss,
        lambda r, f: F.softplus(-torch.cat([r, f])).mean(),
        "as if they were real",
    ),
    (
        checks.check_d_nonsaturating_loss,
        lambda r, f: torch.cat([F.softplus(-r), F.softplus(f)]).mean(),
        "one mean over real and fake",
    ),
    (
        checks.check_d_nonsaturating_loss,
        lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(),
        "hinge",
    ),
    (
        checks.check_d_nonsaturating_loss,
        lambda r, f: F.softplus(-r).sum() + F.softplus(f).sum(),
        "summed",
    ),
    (checks.check_g_nonsaturating_loss, lambda f: -F.softplus(f).mean(), "minimax"),
    (checks.check_g_nonsaturating_loss, lambda f: F.softplus(f).mean(), "D's term for fakes"),
    (checks.check_g_nonsaturating_loss, lambda f: -f.mean(), "hinge"),
    (
        checks.check_g_nonsaturating_loss,
        lambda f: -torch.log(torch.sigmoid(f)).mean(),
        "not finite",
    ),
    (checks.check_g_nonsaturating_loss, lambda f: F.softplus(-f).sum(), "summed"),
    (
        checks.check_g_nonsaturating_loss,
        lambda f: F.binary_cross_entropy(torch.sigmoid(f), torch.ones_like(f)),
        "clamps log",
    ),
    (
        checks.check_d_nonsaturating_loss,
        lambda r, f: (
            F.binary_cross_entropy(torch.sigmoid(r), torch.ones_like(r))
            + F.binary_cross_entropy(torch.sigmoid(f), torch.zeros_like(f))
        ),
        "clamps log",
    ),
    (checks.check_optimal_discriminator, lambda p, m: p / (p + m), "both 0"),
    (checks.check_optimal_discriminator, lambda p, m: p / (p + m + 1e-12), "return ½"),
    (
        checks.check_optimal_discriminator,
        lambda p, m: torch.nan_to_num(m / (p + m), nan=0.5),
        "probability that x is fake",
    ),
    (checks.check_optimal_discriminator, lambda p, m: torch.sigmoid(p - m), "share of real"),
    (
        checks.check_optimal_discriminator,
        lambda p, m: torch.where(m > 0, p / m.clamp_min(1e-30), 0.5),
        "ratio p_data / p_model",
    ),
    (checks.check_scaled_attention, blocks_scale_gamma_forever, "left it changed"),
    (checks.check_scaled_attention, lambda b, x, s: s * b(x), "scaled the whole output"),
    (checks.check_scaled_attention, scaled_with_temperature, "temperature"),
    (
        checks.check_scaled_attention,
        lambda b, x, s: (x + s * (b(x) - x), None),
        "only the block's output",
    ),
    (checks.check_uniform_attention, lambda b, x: x, "you returned x"),
    (checks.check_uniform_attention, uniform_unpooled, "before pooling"),
    (checks.check_uniform_attention, lambda b, x: b(x), "the block's own output"),
]


def test_every_check_of_these_modules_is_tested_here():
    modules = {"recurrence_and_long_range", "attention_in_chunks", "the_gan_game"}
    modules.add("ablating_attention")
    here = {
        check
        for n in checks.__all__
        if n.startswith("check_")
        and (check := getattr(checks, n)).__module__.rsplit(".", 1)[-1] in modules
    }
    assert here == set(RIGHT)


def test_every_new_check_has_several_planted_mistakes_and_an_alternative():
    for check in RIGHT:
        assert sum(c is check for c, _, _ in WRONG) >= 3, check.__name__
    assert {c for c, _ in ALTERNATIVES} == set(RIGHT)


def test_there_are_at_least_20_checked_functions():
    assert len([n for n in checks.__all__ if n.startswith("check_")]) >= 20


def test_the_checks_accept_the_librarys_ablation_and_the_answers_agree_with_it(capsys):
    ablation = pytest.importorskip("sagan_edu.attention_ablation")

    def library_scaled(block, x, scale):
        with ablation.scaled_attention(block, scale):
            return block(x)

    def library_uniform(block, x):
        with ablation.uniform_attention(block):
            return block(x)

    checks.check_scaled_attention(library_scaled)
    checks.check_uniform_attention(library_uniform)
    assert capsys.readouterr().out.count("✅") == 2
    torch.manual_seed(0)
    block = SelfAttention2d(16, pool=2).eval()
    with torch.no_grad():
        block.gamma.fill_(0.7)
        x = torch.randn(2, 16, 8, 6)
        for scale in (0.0, 0.5, 2.0):
            torch.testing.assert_close(
                scaled_attention(block, x, scale), library_scaled(block, x, scale)
            )
        torch.testing.assert_close(uniform_attention(block, x), library_uniform(block, x))


# ---------------------------------------------------------------------------------------------
# An outside-style audit: more plausible mistakes, each named by the check, and more correct
# but unusual answers, each accepted.
# ---------------------------------------------------------------------------------------------


def lstm_cell_with_forget(keep):
    """keep(f, i): the (old-cell share, candidate share) pair, written the way a slip does."""

    def wrong(x, h, c, weight_ih, weight_hh, bias):
        i, f, g, o = (x @ weight_ih.T + h @ weight_hh.T + bias).chunk(4, dim=-1)
        kept, written = keep(torch.sigmoid(f), torch.sigmoid(i))
        c_new = kept * c + written * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new

    return wrong


def lstm_cell_squashing_all_gates(x, h, c, weight_ih, weight_hh, bias):
    i, f, g, o = torch.sigmoid(x @ weight_ih.T + h @ weight_hh.T + bias).chunk(4, dim=-1)
    c_new = f * c + i * torch.tanh(g)  # g went through the sigmoid too
    return o * torch.tanh(c_new), c_new


def lstm_cell_updating_c_in_place(x, h, c, weight_ih, weight_hh, bias):
    i, f, g, o = (x @ weight_ih.T + h @ weight_hh.T + bias).chunk(4, dim=-1)
    c.mul_(torch.sigmoid(f)).add_(torch.sigmoid(i) * torch.tanh(g))  # rewrites the caller's c
    return torch.sigmoid(o) * torch.tanh(c), c


def chunked_by(softmax=torch.softmax, first_dim_slices=False, as_list=False, cat_dim=-2):
    def wrong(q, k, v, chunk_size):
        outputs = []
        for start in range(0, q.shape[-2], chunk_size):
            end = start + chunk_size
            q_chunk = q[start:end] if first_dim_slices else q[..., start:end, :]
            scores = q_chunk @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            outputs.append(softmax(scores, -1) @ v)
        return outputs if as_list else torch.cat(outputs, dim=cat_dim)

    return wrong


def exp_then_normalise(scores, dim):
    e = scores.exp()  # overflows to inf for scores in the hundreds
    return e / e.sum(dim, keepdim=True)


def chunked_with_online_softmax(q, k, v, chunk_size, rescale=True):
    """FlashAttention's order: chunks of keys too, with a running maximum and running sums."""
    outputs = []
    for q_chunk in q.split(chunk_size, dim=-2):
        top = torch.full_like(q_chunk[..., :1], float("-inf"))  # (..., c, 1)
        total = torch.zeros_like(top)
        out = torch.zeros(*q_chunk.shape[:-1], v.shape[-1], dtype=q.dtype)
        for k_chunk, v_chunk in zip(k.split(chunk_size, -2), v.split(chunk_size, -2), strict=True):
            scores = q_chunk @ k_chunk.transpose(-2, -1) / math.sqrt(q.shape[-1])
            new_top = torch.maximum(top, scores.amax(dim=-1, keepdim=True))
            weights = (scores - new_top).exp()
            shrink = (top - new_top).exp() if rescale else 1.0
            total = total * shrink + weights.sum(dim=-1, keepdim=True)
            out = out * shrink + weights @ v_chunk
            top = new_top
        outputs.append(out / total)
    return torch.cat(outputs, dim=-2)


def chunked_into_preallocated_output(q, k, v, chunk_size):
    out = q.new_empty(*q.shape[:-1], v.shape[-1])  # (..., Lq, dv), filled chunk by chunk
    for start in range(0, q.shape[-2], chunk_size):
        q_chunk = q[..., start : start + chunk_size, :]
        weights = torch.softmax(q_chunk @ k.mT / math.sqrt(q.shape[-1]), dim=-1)
        out[..., start : start + chunk_size, :] = weights @ v
    return out


def scaled_by_dividing_gamma_back(block, x, scale):
    with torch.no_grad():
        block.gamma.mul_(scale)
    y = block(x)
    with torch.no_grad():
        block.gamma.div_(scale)  # 0 / 0 at scale 0
    return y


def scaled_in_train_mode(block, x, scale):
    block.train()  # spectral norm's power iteration runs, and u changes
    y = block(x)
    block.eval()
    return x + scale * (y - x)


def scaled_by_restoring_gamma_data(block, x, scale):
    old = block.gamma.data.clone()
    block.gamma.data *= scale
    y = block(x)
    block.gamma.data = old
    return y


def pooled_values(block, x):
    v = block.value(x)  # (B, C/2, H, W)
    return F.max_pool2d(v, block.pool) if block.pool > 1 else v


def uniform_by_softmax_of_zeros(block, x):
    B, _C, H, W = x.shape
    v = pooled_values(block, x).flatten(2).transpose(1, 2)  # (B, M, C/2)
    weights = torch.softmax(torch.zeros(B, H * W, v.shape[1], dtype=x.dtype), dim=-1)
    return x + block.gamma * block.out((weights @ v).transpose(1, 2).reshape(B, -1, H, W))


AUDIT_WRONG = [
    (checks.check_lstm_cell, lstm_cell_with_forget(lambda f, i: (1 - f, i)), r"\(1 − f\)·c"),
    (checks.check_lstm_cell, lstm_cell_with_forget(lambda f, i: (f, 1 - f)), "as a GRU does"),
    (checks.check_lstm_cell, lstm_cell_updating_c_in_place, "changed argument 3"),
    (checks.check_lstm_cell, lstm_cell_squashing_all_gates, "through the sigmoid and then tanh"),
    (
        checks.check_chunked_attention,
        lambda q, k, v, c: torch.cat(
            [torch.softmax(p @ k.mT / math.sqrt(q.shape[-1]), -1) @ v for p in q.split(c)], -2
        ),  # .split without dim cuts the first dim, the batch
        "without dim it splits the first dim",
    ),
    (checks.check_chunked_attention, chunked_by(softmax=exp_then_normalise), "NaN or inf"),
    (checks.check_chunked_attention, chunked_by(first_dim_slices=True), r"q\[\.\.\., start"),
    (checks.check_chunked_attention, chunked_by(as_list=True), r"torch\.cat\(outputs, dim=-2\)"),
    (checks.check_chunked_attention, chunked_by(cat_dim=0), r"torch\.cat\(outputs, dim=-2\)"),
    (
        checks.check_chunked_attention,
        lambda q, k, v, c: chunked_with_online_softmax(q, k, v, c, rescale=False),
        r"exp\(old_max − new_max\)",
    ),
    (
        checks.check_d_nonsaturating_loss,
        lambda r, f: F.softplus(-r).mean() + F.softplus(-f).mean(),
        r"−log σ\(fake\) = softplus\(−fake\)",
    ),
    (checks.check_d_nonsaturating_loss, lambda r, f: d_loss(r, f) / 2, "half the expected"),
    (
        checks.check_d_nonsaturating_loss,
        lambda r, f: (F.softplus(-r) + F.softplus(f)).mean(),
        "different sizes",
    ),
    (
        checks.check_optimal_discriminator,
        lambda p, m: p.div_(p + m).nan_to_num_(0.5),
        "changed argument 1",
    ),
    (checks.check_scaled_attention, lambda b, x, s: x + s * b(x), "already contains x"),
    (checks.check_scaled_attention, scaled_in_train_mode, "In training mode every forward pass"),
    (checks.check_scaled_attention, scaled_by_dividing_gamma_back, "does not undo a scale of 0"),
    (
        checks.check_uniform_attention,
        lambda b, x: x + b.gamma * pooled_values(b, x).mean(dim=(-2, -1), keepdim=True),
        r"block\.out maps it back",
    ),
]


def gradient_norms_by_boolean_labels(model, tokens, targets):
    x = model.embed(tokens).detach().requires_grad_()
    labelled = targets != IGNORE
    loss = F.cross_entropy(model.from_embeddings(x)[labelled], targets[labelled])
    (grad,) = torch.autograd.grad(loss, x)
    return grad.norm(dim=-1).mean(dim=0)


def gradient_norms_by_torch_func(model, tokens, targets):
    def loss(x):
        return F.cross_entropy(model.from_embeddings(x).transpose(1, 2), targets)  # (B, C, L)

    return torch.func.grad(loss)(model.embed(tokens).detach()).norm(dim=-1).mean(dim=0)


AUDIT_ALTERNATIVES = [
    (checks.check_lstm_cell, lambda x, h, c, wi, wh, b: torch.lstm_cell(x, (h, c), wi, wh, b)),
    (checks.check_embedding_gradient_norms, gradient_norms_by_boolean_labels),
    (checks.check_embedding_gradient_norms, gradient_norms_by_torch_func),
    (checks.check_chunked_attention, chunked_with_online_softmax),
    (checks.check_chunked_attention, chunked_into_preallocated_output),
    (
        checks.check_d_nonsaturating_loss,
        lambda r, f: -(F.logsigmoid(r).mean() + F.logsigmoid(-f).mean()),
    ),
    (checks.check_g_nonsaturating_loss, lambda f: -F.logsigmoid(f).mean()),
    (checks.check_optimal_discriminator, lambda p, m: torch.where(p + m == 0, 0.5, p / (p + m))),
    (checks.check_scaled_attention, scaled_by_restoring_gamma_data),
    (
        checks.check_scaled_attention,
        lambda b, x, s: x + s * (b(x, return_attention=True)[0] - x),
    ),
    (checks.check_uniform_attention, uniform_by_softmax_of_zeros),
    (
        checks.check_uniform_attention,
        lambda b, x: x + b.gamma * b.out(F.adaptive_avg_pool2d(pooled_values(b, x), 1)),
    ),
]


# ---------------------------------------------------------------------------------------------
# One test runs every planted mistake above, one every other right answer
# ---------------------------------------------------------------------------------------------

ALL_WRONG = WRONG + AUDIT_WRONG
ALL_ALTERNATIVES = ALTERNATIVES + AUDIT_ALTERNATIVES


@pytest.mark.parametrize(
    "check, answer, message",
    ALL_WRONG,
    ids=[f"{name(c)}-{i}" for i, (c, _, _) in enumerate(ALL_WRONG)],
)
def test_a_wrong_answer_fails_and_says_why(check, answer, message):
    with pytest.raises(CheckFailed, match=message):
        check(answer)


@pytest.mark.parametrize(
    "check, answer",
    ALL_ALTERNATIVES,
    ids=[f"{name(c)}-{i}" for i, (c, _) in enumerate(ALL_ALTERNATIVES)],
)
def test_other_right_answers_pass(check, answer, capsys):
    check(answer)
    assert f"✅ {check.__name__} passed" in capsys.readouterr().out
