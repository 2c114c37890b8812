"""sagan_edu.checks: each check passes a right answer and fails wrong ones, saying why in words.

Every exercise gets planted wrong answers, the mistakes students make (wrong axis, missing scale,
forgotten mask, transposed heads, ...), and the test asserts the check's message names the mistake.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sagan_edu import checks
from sagan_edu.attention import MultiHeadAttention, SelfAttention2d, scaled_dot_product_attention
from sagan_edu.checks import CheckFailed
from sagan_edu.losses import d_hinge_loss, g_hinge_loss
from sagan_edu.spectral_norm import SpectralNorm
from sagan_edu.training import update_ema
from sagan_edu.viz import query_attention_map

# ---------------------------------------------------------------------------------------------
# Right answers, written the way the solutions write them
# ---------------------------------------------------------------------------------------------


def attention_weights(q, k):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1)


def sdpa(q, k, v):
    weights = attention_weights(q, k)
    return weights @ v, weights


def masked_attention(q, k, v, mask):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    mask = mask.expand(scores.shape)
    attends = mask.any(dim=-1, keepdim=True)
    safe = mask | ~attends
    weights = torch.softmax(scores.masked_fill(~safe, float("-inf")), dim=-1) * attends
    return weights @ v, weights


def split_heads(x, num_heads):
    B, L, E = x.shape
    return x.view(B, L, num_heads, E // num_heads).transpose(1, 2)


def merge_heads(x):
    B, heads, L, d = x.shape
    return x.transpose(1, 2).reshape(B, L, heads * d)


class Block(nn.Module):
    """The SAGAN block; class attributes switch on one mistake at a time for the wrong answers."""

    scale = False
    softmax_dim = -1
    pool_fn = staticmethod(F.max_pool2d)
    use_gamma = True
    residual = True
    gamma_init = 0.0
    bias = False
    value_reduction = 2
    transpose_before_reshape = True
    keys_first = False

    def __init__(self, channels, pool=2):
        super().__init__()
        self.pool = pool
        self.query = nn.Conv2d(channels, channels // 8, 1, bias=self.bias)
        self.key = nn.Conv2d(channels, channels // 8, 1, bias=self.bias)
        self.value = nn.Conv2d(channels, channels // self.value_reduction, 1, bias=self.bias)
        self.out = nn.Conv2d(channels // self.value_reduction, channels, 1, bias=self.bias)
        self.gamma = nn.Parameter(torch.full((), self.gamma_init))

    def _pool(self, t):
        return self.pool_fn(t, self.pool) if self.pool > 1 else t

    def forward(self, x):
        B, _C, H, W = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, N, C/8)
        k = self._pool(self.key(x)).flatten(2).transpose(1, 2)  # (B, M, C/8)
        v = self._pool(self.value(x)).flatten(2).transpose(1, 2)  # (B, M, C/2)
        scores = k @ q.transpose(1, 2) if self.keys_first else q @ k.transpose(1, 2)
        if self.scale:
            scores = scores / math.sqrt(q.size(-1))
        attention = torch.softmax(scores, dim=self.softmax_dim)
        o = attention @ v  # (B, N, C/2)
        if self.transpose_before_reshape:
            o = o.transpose(1, 2)
        o = self.out(o.reshape(B, -1, H, W))
        if self.use_gamma:
            o = self.gamma * o
        return (x + o if self.residual else o), attention


def spectral_normalise(weight, u, n_iterations=1):
    w = weight.flatten(1)
    with torch.no_grad():
        for _ in range(n_iterations):
            v = F.normalize(w.t() @ u, dim=0)
            u = F.normalize(w @ v, dim=0)
    return weight / torch.dot(u, w @ v), u


def d_loss(real, fake):
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def g_loss(fake):
    return -fake.mean()


def discriminator_step(G, D, opt_d, real, z):
    with torch.no_grad():
        fake = G(z)
    loss = d_hinge_loss(D(real), D(fake))
    opt_d.zero_grad()
    loss.backward()
    opt_d.step()
    return loss.item()


def generator_step(G, D, opt_g, z):
    loss = g_hinge_loss(D(G(z)))
    opt_g.zero_grad()
    loss.backward()
    opt_g.step()
    return loss.item()


@torch.no_grad()
def ema(ema_model, model, decay):
    for e, p in zip(ema_model.parameters(), model.parameters(), strict=True):
        e.mul_(decay).add_(p, alpha=1 - decay)
    for e, b in zip(ema_model.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def fd(a, b):
    a, b = a.double(), b.double()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    trace_sqrt = torch.linalg.eigvals(cov_a @ cov_b).sqrt().real.sum()
    return ((a.mean(0) - b.mean(0)) ** 2).sum().item() + (
        cov_a.trace() + cov_b.trace() - 2 * trace_sqrt
    ).item()


def query_map(attention, feature_size, query, image_size=None):
    H, W = feature_size
    B, N, M = attention.shape
    p = round(math.sqrt(N / M))
    rows, cols = image_size or (H, W)
    n = (query[0] * H // rows) * W + query[1] * W // cols
    grid = attention[:, n].reshape(B, 1, H // p, W // p)
    up = F.interpolate(grid, size=(rows, cols), mode="bilinear", align_corners=False)[:, 0]
    return up / up.sum(dim=(1, 2), keepdim=True)


RIGHT = {
    checks.check_attention_weights: attention_weights,
    checks.check_scaled_dot_product_attention: sdpa,
    checks.check_masked_attention: masked_attention,
    checks.check_split_heads: split_heads,
    checks.check_merge_heads: merge_heads,
    checks.check_self_attention_2d: Block,
    checks.check_spectral_normalise: spectral_normalise,
    checks.check_d_hinge_loss: d_loss,
    checks.check_g_hinge_loss: g_loss,
    checks.check_discriminator_step: discriminator_step,
    checks.check_generator_step: generator_step,
    checks.check_update_ema: ema,
    checks.check_frechet_distance: fd,
    checks.check_query_attention_map: query_map,
}

# The library's own code, wrapped to the exercises' signatures, must pass too.
LIBRARY = {
    checks.check_attention_weights: lambda q, k: scaled_dot_product_attention(q, k, k)[1],
    checks.check_scaled_dot_product_attention: scaled_dot_product_attention,
    checks.check_masked_attention: lambda q, k, v, mask: scaled_dot_product_attention(
        q, k, v, mask=mask
    ),
    checks.check_split_heads: lambda x, h: MultiHeadAttention(x.size(-1), h)._split_heads(x),
    checks.check_merge_heads: lambda x: MultiHeadAttention(
        x.size(1) * x.size(3), x.size(1)
    )._merge_heads(x),
    checks.check_d_hinge_loss: d_hinge_loss,
    checks.check_g_hinge_loss: g_hinge_loss,
    checks.check_update_ema: update_ema,
    checks.check_query_attention_map: query_attention_map,
    checks.check_frechet_distance: checks.reference_frechet_distance,
}


def library_block(channels, pool=2):
    """SelfAttention2d without spectral norm, returning (y, attention) as the exercise asks."""

    class Wrapped(SelfAttention2d):
        def forward(self, x):
            return super().forward(x, return_attention=True)

    return Wrapped(channels, pool=pool, spectral_norm=False)


def library_spectral_normalise(weight, u, n_iterations=1):
    sn = SpectralNorm(weight.detach(), n_power_iterations=n_iterations)
    with torch.no_grad():
        sn.u.copy_(u)
    return sn(weight), sn.u.clone()


LIBRARY[checks.check_self_attention_2d] = library_block
LIBRARY[checks.check_spectral_normalise] = library_spectral_normalise


def name(check) -> str:
    return check.__name__.removeprefix("check_")


# ---------------------------------------------------------------------------------------------
# Right answers pass, with one success line
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("check", list(RIGHT), ids=name)
def test_a_right_answer_passes_with_one_line(check, capsys):
    check(RIGHT[check])
    out = capsys.readouterr().out
    assert out.startswith(f"✅ {check.__name__} passed:")
    assert out.count("\n") == 1


@pytest.mark.parametrize("check", list(LIBRARY), ids=name)
def test_the_library_passes(check, capsys):
    check(LIBRARY[check])
    assert f"✅ {check.__name__} passed" in capsys.readouterr().out


def test_the_library_frechet_distance_passes_and_agrees_with_scipy(capsys):
    metrics = pytest.importorskip("sagan_edu.metrics")
    scipy_linalg = pytest.importorskip("scipy.linalg")
    checks.check_frechet_distance(metrics.frechet_distance)
    assert "✅ check_frechet_distance passed" in capsys.readouterr().out
    gen = torch.Generator().manual_seed(0)
    mixing = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    a = torch.randn(50, 5, generator=gen, dtype=torch.float64) @ mixing
    b = torch.randn(40, 5, generator=gen, dtype=torch.float64) + 0.3
    cov_a, cov_b = (torch.cov(t.T).numpy() for t in (a, b))
    by_scipy = (
        ((a.mean(0) - b.mean(0)) ** 2).sum().item()
        + (cov_a.trace() + cov_b.trace())
        - 2 * scipy_linalg.sqrtm(cov_a @ cov_b).real.trace()
    )
    assert checks.reference_frechet_distance(a, b) == pytest.approx(by_scipy, rel=1e-9)
    assert metrics.frechet_distance(a, b) == pytest.approx(by_scipy, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Planted wrong answers: each must fail with a message that names the mistake
# ---------------------------------------------------------------------------------------------


def scores(q, k, scale=None):
    return q @ k.transpose(-2, -1) * (1 / math.sqrt(q.size(-1)) if scale is None else scale)


def naive_softmax(s):
    e = s.exp()
    return e / e.sum(-1, keepdim=True)


def masked_with(fill, zero_empty_rows=False, after=False):
    def wrong(q, k, v, mask):
        s = scores(q, k)
        if after:  # zero the forbidden weights after the softmax
            w = torch.softmax(s, dim=-1) * mask
        elif zero_empty_rows:  # an additive mask: gradients reach the scores of empty rows
            w = torch.softmax(s + torch.zeros_like(s).masked_fill(~mask, fill), dim=-1)
        else:
            w = torch.softmax(s.masked_fill(~mask, fill), dim=-1)
        if zero_empty_rows:  # right forward pass, but NaN flows backwards through the softmax
            w = torch.where(mask.any(-1, keepdim=True), w, 0.0)
        return w @ v, w

    return wrong


def block_with(**mistake):
    return type("WrongBlock", (Block,), mistake)


def sn_without_no_grad(weight, u, n_iterations=1):
    w = weight.flatten(1)
    for _ in range(n_iterations):
        v = F.normalize(w.t() @ u, dim=0)
        u = F.normalize(w @ v, dim=0)
    return weight / torch.dot(u, w @ v), u


def sn_unnormalised(weight, u, n_iterations=1):
    w = weight.flatten(1)
    with torch.no_grad():
        for _ in range(n_iterations):
            v = w.t() @ u
            u = w @ v
    return weight / torch.dot(u, w @ v), u


def sn_without_flatten(weight, u, n_iterations=1):
    with torch.no_grad():
        for _ in range(n_iterations):
            v = F.normalize(weight.t() @ u, dim=0)
            u = F.normalize(weight @ v, dim=0)
    return weight / torch.dot(u, weight @ v), u


def d_step(detach=True, swap=False, zero_grad=True, own_noise=False, step=True, give_back=True):
    def wrong(G, D, opt_d, real, z):
        fake = G(torch.randn_like(z) if own_noise else z)
        if detach:
            fake = fake.detach()
        r, f = D(real), D(fake)
        loss = d_hinge_loss(f, r) if swap else d_hinge_loss(r, f)
        if zero_grad:
            opt_d.zero_grad()
        loss.backward()
        if step:
            opt_d.step()
        return loss if give_back else None

    return wrong


def g_step(detach=False, sign=-1.0, zero_grad=True, freeze=False, unfreeze=True):
    def wrong(G, D, opt_g, z):
        if freeze:
            D.requires_grad_(False)
        fake = G(z)
        if detach:
            fake = fake.detach()
        loss = sign * D(fake).mean()
        if zero_grad:
            opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        if freeze and unfreeze:
            D.requires_grad_(True)
        return loss

    return wrong


def ema_with(mix=None, buffers="copy", no_grad=True, in_place=True):
    """An EMA update; mix(ema, model, decay) gives the new parameter value."""
    mix = mix or (lambda e, p, d: d * e + (1 - d) * p)

    def wrong(ema_model, model, decay):
        with torch.no_grad() if no_grad else torch.enable_grad():
            for e, p in zip(ema_model.parameters(), model.parameters(), strict=True):
                if in_place:
                    e.copy_(mix(e, p, decay))
                else:
                    e = mix(e, p, decay)  # the mistake: rebinding the loop variable
        with torch.no_grad():
            for e, b in zip(ema_model.buffers(), model.buffers(), strict=True):
                if buffers == "copy":
                    e.copy_(b)
                elif buffers == "lerp":
                    e.lerp_(b, 1 - decay)
                elif buffers == "average floats":
                    e.copy_(decay * e + (1 - decay) * b if e.is_floating_point() else b)

    return wrong


def fd_with(cov=lambda t: torch.cov(t.T), trace_sqrt=None, mean_term=None):
    def wrong(a, b):
        a, b = a.double(), b.double()
        cov_a, cov_b = cov(a), cov(b)
        ts = (trace_sqrt or (lambda x, y: torch.linalg.eigvals(x @ y).sqrt().real.sum()))(
            cov_a, cov_b
        )
        diff = a.mean(0) - b.mean(0)
        mean = (mean_term or (lambda d: (d**2).sum()))(diff)
        return (mean + cov_a.trace() + cov_b.trace() - 2 * ts).item()

    return wrong


def sqrtm(m):
    values, vectors = torch.linalg.eigh(m)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def query_map_with(column_major=False, column=False, mode="bilinear", normalise=True, scale=True):
    def wrong(attention, feature_size, query, image_size=None):
        H, W = feature_size
        B, N, M = attention.shape
        p = round(math.sqrt(N / M))
        rows, cols = image_size or (H, W)
        r, c = query
        if scale:
            r, c = r * H // rows, c * W // cols
        n = c * H + r if column_major else r * W + c
        row = attention[:, :, n] if column else attention[:, n]
        grid = row.reshape(B, 1, H // p, W // p)
        extra = {"align_corners": False} if mode == "bilinear" else {}
        up = F.interpolate(grid, size=(rows, cols), mode=mode, **extra)[:, 0]
        return up / up.sum(dim=(1, 2), keepdim=True) if normalise else up

    return wrong


W = checks  # shorter rows below
WRONG = [
    # 1a attention weights
    (W.check_attention_weights, lambda q, k: torch.softmax(scores(q, k), dim=-2), "wrong axis"),
    (
        W.check_attention_weights,
        lambda q, k: torch.softmax(scores(q, k, 1.0), -1),
        "without the scaling",
    ),
    (
        W.check_attention_weights,
        lambda q, k: torch.softmax(scores(q, k, 1 / q.size(-1)), -1),
        r"divided the scores by d",
    ),
    (W.check_attention_weights, lambda q, k: naive_softmax(scores(q, k)), "NaN or inf"),
    (W.check_attention_weights, lambda q, k: torch.softmax(scores(k, q), -1), r"not k @ qᵀ"),
    (
        W.check_attention_weights,
        lambda q, k: torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.size(-1)), -1),
        r"k\.transpose\(-2, -1\)",
    ),
    (
        W.check_attention_weights,
        lambda q, k: attention_weights(q, k).float(),
        "keep the inputs' dtype",
    ),
    (
        W.check_attention_weights,
        lambda q, k: attention_weights(q, k).detach(),
        "cut off from autograd",
    ),
    (W.check_attention_weights, lambda q, k: None, "forget the `return`"),
    # 1b scaled dot-product attention
    (
        W.check_scaled_dot_product_attention,
        lambda q, k, v: attention_weights(q, k) @ v,
        "should return two things",
    ),
    (
        W.check_scaled_dot_product_attention,
        lambda q, k, v: (
            v.mean(-2, keepdim=True).expand(*q.shape[:-1], v.size(-1)),
            attention_weights(q, k),
        ),
        "plain average",
    ),
    (
        W.check_scaled_dot_product_attention,
        lambda q, k, v: (
            torch.softmax(scores(q, k, 1.0), -1) @ v,
            torch.softmax(scores(q, k, 1.0), -1),
        ),
        "without the scaling",
    ),
    (
        W.check_scaled_dot_product_attention,
        lambda q, k, v: (torch.softmax(scores(q, k), -2) @ v, torch.softmax(scores(q, k), -2)),
        "wrong axis",
    ),
    # 2 masks
    (
        W.check_masked_attention,
        lambda q, k, v, m: masked_attention(q, k, v, ~m),
        "True means 'may attend'",
    ),
    (W.check_masked_attention, masked_with(0.0), r"exp\(0\) = 1"),
    (
        W.check_masked_attention,
        masked_with(float("-inf")),
        "weights are NaN for queries whose mask row is all False",
    ),
    (W.check_masked_attention, masked_with(-1e9), "spreads them evenly"),
    (W.check_masked_attention, masked_with(0.0, after=True), "after the softmax"),
    (
        W.check_masked_attention,
        masked_with(float("-inf"), zero_empty_rows=True),
        "gradient with respect to q contains NaN",
    ),
    (
        W.check_masked_attention,
        lambda q, k, v, m: scaled_dot_product_attention(q, k, v, m, scale=1.0),
        "without the scaling",
    ),
    # 3 heads
    (W.check_split_heads, lambda x, h: x.view(x.size(0), x.size(1), h, -1), r"transpose\(1, 2\)"),
    (
        W.check_split_heads,
        lambda x, h: x.reshape(x.size(0), h, x.size(1), -1),
        "cuts the sequence into chunks",
    ),
    (
        W.check_split_heads,
        lambda x, h: x.reshape(*x.shape[:2], -1, h).permute(0, 3, 1, 2),
        "interleaved",
    ),
    (W.check_split_heads, lambda x, h: split_heads(x, h).detach(), "cut off from autograd"),
    (
        W.check_merge_heads,
        lambda x: x.transpose(1, 2).view(x.size(0), x.size(2), -1),
        r"\.view\(\) needs",
    ),
    (
        W.check_merge_heads,
        lambda x: x.reshape(x.size(0), x.size(2), -1),
        "without moving the head axis back",
    ),
    (
        W.check_merge_heads,
        lambda x: x.permute(0, 2, 3, 1).reshape(x.size(0), x.size(2), -1),
        "interleaves",
    ),
    # 4 the SAGAN block
    (W.check_self_attention_2d, block_with(softmax_dim=1), "wrong axis"),
    (
        W.check_self_attention_2d,
        block_with(pool_fn=staticmethod(lambda t, p: t)),
        "one per position",
    ),
    (W.check_self_attention_2d, block_with(scale=True), "divided the scores by √d"),
    (W.check_self_attention_2d, block_with(use_gamma=False), "multiply attention's output by γ"),
    (W.check_self_attention_2d, block_with(residual=False), "add x back"),
    (W.check_self_attention_2d, block_with(gamma_init=1.0), "γ starts at 1"),
    (
        W.check_self_attention_2d,
        block_with(transpose_before_reshape=False),
        r"transpose it to \(B, C/2, N\)",
    ),
    (W.check_self_attention_2d, block_with(pool_fn=staticmethod(F.avg_pool2d)), "average-pooled"),
    (W.check_self_attention_2d, block_with(keys_first=True), r"softmax\(q @ kᵀ\) is \(B, N, M\)"),
    (W.check_self_attention_2d, block_with(bias=True), "bias=False"),
    (W.check_self_attention_2d, block_with(value_reduction=8), r"value C → C/2"),
    # 5 spectral norm
    (W.check_spectral_normalise, lambda w, u, n=1: (w / w.flatten(1).norm(), u), "Frobenius"),
    (W.check_spectral_normalise, sn_without_no_grad, "through u and v"),
    (
        W.check_spectral_normalise,
        lambda w, u, n=1: (spectral_normalise(w, u, n)[0], u),
        "the u you were given",
    ),
    (W.check_spectral_normalise, sn_unnormalised, "your u has length"),
    (W.check_spectral_normalise, sn_without_flatten, r"weight\.flatten\(1\)"),
    (
        W.check_spectral_normalise,
        lambda w, u, n=1: (
            w * (w / spectral_normalise(w, u, n)[0]).flatten()[0],
            spectral_normalise(w, u, n)[1],
        ),
        "multiplied the weight by σ",
    ),
    # 6 hinge losses
    (W.check_d_hinge_loss, lambda r, f: d_loss(f, r), "swapped real and fake"),
    (W.check_d_hinge_loss, lambda r, f: (1 - r).mean() + (1 + f).mean(), "no relu"),
    (
        W.check_d_hinge_loss,
        lambda r, f: F.relu(1 - r).sum() + F.relu(1 + f).sum(),
        "summed over the batch",
    ),
    (W.check_d_hinge_loss, lambda r, f: F.relu(-r).mean() + F.relu(f).mean(), "margin is 0"),
    (
        W.check_d_hinge_loss,
        lambda r, f: F.relu(1 - r).mean() + F.relu(1 - f).mean(),
        r"relu\(1 \+ fake\)",
    ),
    (W.check_d_hinge_loss, lambda r, f: F.relu(1 - r) + F.relu(1 + f), "a single number"),
    (W.check_g_hinge_loss, lambda f: f.mean(), "wrong sign"),
    (W.check_g_hinge_loss, lambda f: F.relu(1 - f).mean(), "margin"),
    (W.check_g_hinge_loss, lambda f: F.softplus(-f).mean(), "non-saturating"),
    (W.check_g_hinge_loss, lambda f: -f.sum(), "summed over the batch"),
    # 7 training steps
    (W.check_discriminator_step, d_step(detach=False), "flowed back into G"),
    (W.check_discriminator_step, d_step(swap=True), "swapped"),
    (W.check_discriminator_step, d_step(zero_grad=False), r"zero_grad\(\)"),
    (W.check_discriminator_step, d_step(own_noise=True), "not called with the z"),
    (W.check_discriminator_step, d_step(step=False), "did not change"),
    (W.check_discriminator_step, d_step(give_back=False), "forget the `return`"),
    (W.check_generator_step, g_step(detach=True), "did not learn"),
    (W.check_generator_step, g_step(detach=True, freeze=True), "do not detach the fakes"),
    (W.check_generator_step, g_step(sign=1.0), "wrong sign"),
    (W.check_generator_step, g_step(freeze=True, unfreeze=False), r"requires_grad_\(True\)"),
    (W.check_generator_step, g_step(zero_grad=False), r"zero_grad\(\)"),
    # 8 EMA
    (W.check_update_ema, ema_with(mix=lambda e, p, d: (1 - d) * e + d * p), "swapped decay"),
    (W.check_update_ema, ema_with(buffers="none"), "was not copied"),
    (W.check_update_ema, ema_with(buffers="lerp"), "copy buffers, don't average"),
    (W.check_update_ema, ema_with(buffers="average floats"), "averaged the buffer"),
    (W.check_update_ema, ema_with(in_place=False), "did not change"),
    (W.check_update_ema, ema_with(mix=lambda e, p, d: p), "average, don't copy"),
    (
        W.check_update_ema,
        ema_with(mix=lambda e, p, d: e.lerp(p, 1 - d), no_grad=False),
        r"torch\.no_grad",
    ),
    # 9 Fréchet distance
    (W.check_frechet_distance, fd_with(trace_sqrt=lambda x, y: (x @ y).trace()), r"Tr\(Σ_a Σ_b\)"),
    (W.check_frechet_distance, fd_with(cov=lambda t: torch.cov(t.T, correction=0)), "N − 1"),
    (W.check_frechet_distance, fd_with(mean_term=lambda d: 0 * d.sum()), "mean term is missing"),
    (W.check_frechet_distance, fd_with(mean_term=lambda d: d.norm()), "should be squared"),
    (
        W.check_frechet_distance,
        fd_with(trace_sqrt=lambda x, y: (sqrtm(x) @ sqrtm(y)).trace()),
        "commute",
    ),
    (W.check_frechet_distance, fd_with(cov=lambda t: torch.diag(t.var(0))), "only the variances"),
    (
        W.check_frechet_distance,
        fd_with(trace_sqrt=lambda x, y: (x @ y).sqrt().trace()),
        "entry by entry",
    ),
    # 10 where one query looks
    (W.check_query_attention_map, query_map_with(column_major=True), "row by row"),
    (W.check_query_attention_map, query_map_with(column=True), "column n of the attention"),
    (W.check_query_attention_map, query_map_with(mode="nearest"), "nearest"),
    (W.check_query_attention_map, query_map_with(normalise=False), "divide by the sum"),
    (W.check_query_attention_map, query_map_with(scale=False), "image coordinates"),
]


# Exercises 1-10; tests/test_checks_new_exercises.py tests the checks of the other modules.
MODULES = {
    "attention_weights_and_masks",
    "heads_and_the_sagan_block",
    "spectral_norm_and_hinge_loss",
    "training_steps_and_ema",
    "frechet_distance_and_attention_maps",
}


def test_every_check_is_tested_on_right_and_wrong_answers():
    all_checks = {
        check
        for n in checks.__all__
        if n.startswith("check_")
        and (check := getattr(checks, n)).__module__.rsplit(".", 1)[-1] in MODULES
    }
    assert set(RIGHT) == all_checks
    for check in all_checks:
        planted = sum(c is check for c, _, _ in WRONG + MORE_WRONG)
        assert planted >= 2, f"{check.__name__} has only {planted} planted wrong answers"


# ---------------------------------------------------------------------------------------------
# Stubs, exceptions, random state
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("check", list(RIGHT), ids=name)
def test_a_stubs_not_implemented_error_passes_through_unchanged(check):
    error = NotImplementedError("Exercise: write me (hint: ...)")

    def stub(*args, **kwargs):
        raise error

    with pytest.raises(NotImplementedError) as raised:
        check(stub)
    assert raised.value is error


def test_other_errors_become_check_failures_that_say_where():
    def broken(q, k):
        raise KeyError("oops")

    with pytest.raises(CheckFailed, match=r"raised KeyError.*\n.*called with: float32 tensor"):
        checks.check_attention_weights(broken)


def test_check_failed_is_an_assertion_error():
    assert issubclass(CheckFailed, AssertionError)


def test_checks_leave_the_callers_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.check_self_attention_2d(Block)
    checks.check_generator_step(generator_step)
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------------------------------------
# More planted mistakes: the ones students make that an outside review found, and others like
# them. Each message must name the mistake, not only say that something differs.
# ---------------------------------------------------------------------------------------------


def sdpa_in_place(q, k, v):
    w = torch.softmax(scores(q, k), dim=-1)
    w *= 1.0  # softmax's backward needs its output: autograd refuses this in-place change
    return w @ v, w


def masked_in_place_weights(q, k, v, mask):
    s = scores(q, k)
    mask = mask.expand(s.shape)
    attends = mask.any(dim=-1, keepdim=True)
    w = torch.softmax(s.masked_fill(~(mask | ~attends), float("-inf")), dim=-1)
    w *= attends  # the in-place version of w = w * attends
    return w @ v, w


def masked_empty_rows_along(dim, keepdim=True):
    def wrong(q, k, v, mask):
        s = scores(q, k)
        mask = mask.expand(s.shape)
        attends = mask.any(dim=dim, keepdim=keepdim)
        w = torch.softmax(s.masked_fill(~(mask | ~attends), float("-inf")), dim=-1) * attends
        return w @ v, w

    return wrong


def masked_rewrites_mask(expand):
    def wrong(q, k, v, mask):
        s = scores(q, k)
        if expand:
            mask = mask.expand(s.shape)
        attends = mask.any(dim=-1, keepdim=True)
        mask |= ~attends  # writes into the caller's mask
        w = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1) * attends
        return w @ v, w

    return wrong


def sn_with(normalise_v=True, sigma_from_old_u=False, extra=0, detach_sigma=False, exact=False):
    def wrong(weight, u, n_iterations=1):
        w = weight.flatten(1)
        u0 = u
        with torch.no_grad():
            v = F.normalize(w.t() @ u, dim=0)
            for _ in range(n_iterations + extra):
                v = w.t() @ u
                v = F.normalize(v, dim=0) if normalise_v else v
                u = F.normalize(w @ v, dim=0)
        if exact:
            return weight / torch.linalg.matrix_norm(w, ord=2), u
        sigma = torch.dot(u0 if sigma_from_old_u else u, w @ v)
        return weight / (sigma.detach() if detach_sigma else sigma), u

    return wrong


def sn_default_normalize_dim(weight, u, n_iterations=1):
    w = weight.flatten(1)
    with torch.no_grad():
        for _ in range(n_iterations):
            v = F.normalize(w.t() @ u)  # dim=1 by default: out of range for a vector
            u = F.normalize(w @ v)
    return weight / torch.dot(u, w @ v), u


def d_step_with(g_eval=False, loss="hinge"):
    def wrong(G, D, opt_d, real, z):
        if g_eval:
            G.eval()  # and never G.train() again
        with torch.no_grad():
            fake = G(z)
        r, f = D(real), D(fake)
        if loss == "bce":
            value = F.softplus(-r).mean() + F.softplus(f).mean()
        elif loss == "no relu":
            value = (1 - r).mean() + (1 + f).mean()
        else:
            value = d_hinge_loss(r, f)
        opt_d.zero_grad()
        value.backward()
        opt_d.step()
        return value

    return wrong


def g_step_with(d_eval=False, fresh_noise=False, loss="hinge", zero_grad_after=False):
    def wrong(G, D, opt_g, z):
        if d_eval:
            D.eval()  # "freezing" D, and never D.train() again
        logits = D(G(torch.randn_like(z) if fresh_noise else z))
        value = {
            "hinge": lambda: -logits.mean(),
            "non-saturating": lambda: F.softplus(-logits).mean(),
            "saturating": lambda: -F.softplus(logits).mean(),
        }[loss]()
        if not zero_grad_after:
            opt_g.zero_grad()
        value.backward()
        if zero_grad_after:
            opt_g.zero_grad()
        opt_g.step()
        return value

    return wrong


def d_step_stepping_first(G, D, opt_d, real, z):
    with torch.no_grad():
        fake = G(z)
    loss = d_hinge_loss(D(real), D(fake))
    opt_d.step()  # too early: the .grad still holds the last step's gradients
    opt_d.zero_grad()
    loss.backward()
    return loss


def fd_real_part_then_sqrt(a, b):
    a, b = a.double(), b.double()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    trace_sqrt = torch.linalg.eigvals(cov_a @ cov_b).real.sqrt().sum()  # NaN for tiny λ < 0
    mean = ((a.mean(0) - b.mean(0)) ** 2).sum()
    return (mean + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt).item()


def sn_v_from_new_u(weight, u, n_iterations=1):
    w = weight.flatten(1)
    with torch.no_grad():
        for _ in range(n_iterations):
            u = F.normalize(w @ F.normalize(w.t() @ u, dim=0), dim=0)
        v = F.normalize(w.t() @ u, dim=0)  # half an iteration more
    return weight / torch.dot(u, w @ v), u


def query_map_bicubic(attention, feature_size, query, image_size=None):
    H, W = feature_size
    B, N, M = attention.shape
    p = round(math.sqrt(N / M))
    rows, cols = image_size or (H, W)
    n = (query[0] * H // rows) * W + query[1] * W // cols
    grid = attention[:, n].reshape(B, 1, H // p, W // p)
    up = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)[:, 0]
    return up / up.sum(dim=(1, 2), keepdim=True)


def query_map_rule(rule):
    def wrong(attention, feature_size, query, image_size=None):
        H, W = feature_size
        B, N, M = attention.shape
        p = round(math.sqrt(N / M))
        rows, cols = image_size or (H, W)
        r, c = query
        r, c = {
            "round": (round(r * H / rows), round(c * W / cols)),
            "inverted": (r * rows // H, c * cols // W),
            "swapped": (c * H // rows, r * W // cols),
        }[rule]
        grid = attention[:, r * W + c].reshape(B, 1, H // p, W // p)
        up = F.interpolate(grid, size=(rows, cols), mode="bilinear", align_corners=False)[:, 0]
        return up / up.sum(dim=(1, 2), keepdim=True)

    return wrong


MORE_WRONG = [
    (W.check_attention_weights, lambda q, k: attention_weights(q, k).squeeze(), r"\.squeeze\(\)"),
    (
        W.check_attention_weights,
        lambda q, k: torch.softmax(q @ k.mT / math.sqrt(k.shape[-2]), dim=-1),
        "the number of keys Lk",
    ),
    (W.check_scaled_dot_product_attention, sdpa_in_place, r"w = w \* …"),
    (W.check_masked_attention, masked_in_place_weights, r"w = w \* …"),
    (W.check_masked_attention, masked_empty_rows_along(-2), r"mask\.any\(dim=-2\)"),
    (W.check_masked_attention, masked_empty_rows_along(-1, keepdim=False), "keepdim=True"),
    (W.check_masked_attention, masked_rewrites_mask(expand=False), "changed argument 4"),
    (W.check_masked_attention, masked_rewrites_mask(expand=True), r"mask = mask \| …"),
    (
        W.check_self_attention_2d,
        block_with(pool_fn=staticmethod(lambda t, p: F.max_pool2d(t, p, stride=1))),
        "stride 1",
    ),
    (W.check_spectral_normalise, sn_with(normalise_v=False), "v is not normalised"),
    (W.check_spectral_normalise, sn_with(sigma_from_old_u=True), "the u you were given, not"),
    (W.check_spectral_normalise, sn_with(extra=1), "2 power iterations for n_iterations=1"),
    (W.check_spectral_normalise, sn_with(extra=-1), "u not updated before σ"),
    (W.check_spectral_normalise, sn_with(detach_sigma=True), "σ is detached"),
    (W.check_spectral_normalise, sn_with(exact=True), "exact largest singular value"),
    (W.check_spectral_normalise, sn_default_normalize_dim, "dim=0"),
    (W.check_spectral_normalise, sn_v_from_new_u, "half an iteration more"),
    (
        W.check_spectral_normalise,
        lambda w, u, n=1: (w.div_(torch.linalg.matrix_norm(w.flatten(1), ord=2)), u),
        "changed argument 1",
    ),
    (
        W.check_d_hinge_loss,
        lambda r, f: F.relu(1 - r.mean()) + F.relu(1 + f.mean()),
        "relu to the batch means",
    ),
    (
        W.check_d_hinge_loss,
        lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
        "binary cross-entropy",
    ),
    (
        W.check_d_hinge_loss,
        lambda r, f: F.relu(torch.cat([1 - r, 1 + f])).mean(),
        "one mean",
    ),
    (W.check_g_hinge_loss, lambda f: F.relu(1 + f).mean(), "discriminator's fake term"),
    (W.check_g_hinge_loss, lambda f: -f.mean().item(), r"no \.item\(\)"),
    (W.check_discriminator_step, d_step_with(g_eval=True), "left G in eval mode"),
    (W.check_discriminator_step, d_step_with(loss="bce"), "non-saturating"),
    (W.check_discriminator_step, d_step_with(loss="no relu"), "has no relu"),
    (W.check_discriminator_step, d_step_stepping_first, r"must come after loss\.backward"),
    (W.check_generator_step, g_step_with(d_eval=True), "left D in eval mode"),
    (W.check_generator_step, g_step_with(fresh_noise=True), "fresh noise"),
    (W.check_generator_step, g_step_with(loss="non-saturating"), "non-saturating"),
    (W.check_generator_step, g_step_with(loss="saturating"), "minimax"),
    (W.check_generator_step, g_step_with(zero_grad_after=True), "in this order"),
    (W.check_frechet_distance, fd_real_part_then_sqrt, "tiny negative"),
    (W.check_frechet_distance, fd_with(cov=lambda t: torch.cov(t)), "each ROW"),
    (W.check_frechet_distance, fd_with(mean_term=lambda d: (d**2).mean()), "mean of the squared"),
    (
        W.check_frechet_distance,
        fd_with(trace_sqrt=lambda x, y: torch.linalg.eigvalsh(x @ y).clamp(min=0).sqrt().sum()),
        "eigvalsh assumes",
    ),
    (W.check_query_attention_map, query_map_rule("round"), "rounded"),
    (W.check_query_attention_map, query_map_bicubic, "bicubic"),
    (W.check_query_attention_map, query_map_rule("inverted"), "rows / H"),
    (W.check_query_attention_map, query_map_rule("swapped"), r"as \(x, y\)"),
]


# ---------------------------------------------------------------------------------------------
# Other right answers: a check must accept every correct formulation, not only the library's
# ---------------------------------------------------------------------------------------------


def stable_softmax_weights(q, k):
    s = torch.einsum("...id,...jd->...ij", q, k) * q.shape[-1] ** -0.5
    e = (s - s.amax(dim=-1, keepdim=True)).exp()
    return e / e.sum(dim=-1, keepdim=True)


def masked_with_finfo_min(q, k, v, mask):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    attends = mask.expand(s.shape).any(dim=-1, keepdim=True)
    w = torch.softmax(s.masked_fill(~mask, torch.finfo(s.dtype).min), dim=-1)
    w = torch.where(attends, w, torch.zeros_like(w))
    return w @ v, w


def sn_sigma_as_norm(weight, u, n_iterations=1):
    w = weight.reshape(weight.shape[0], -1)
    with torch.no_grad():
        for _ in range(n_iterations):
            v = w.T @ u
            v = v / v.norm()
            u = w @ v
            u = u / u.norm()
    return weight / (u @ w @ v), u


def sn_updating_u_in_place(weight, u, n_iterations=1):
    """Like SpectralNorm's buffer: the u passed in is updated in place, and returned."""
    w = weight.flatten(1)
    with torch.no_grad():
        for _ in range(n_iterations):
            v = F.normalize(w.t() @ u, dim=0)
            u.copy_(F.normalize(w @ v, dim=0))
    return weight / torch.dot(u, w @ v), u


def d_step_separate_calls(G, D, opt_d, real, z):
    G.eval()
    fake = G(z).detach()
    G.train()
    loss = F.relu(1 - D(real)).mean() + F.relu(1 + D(fake)).mean()
    opt_d.zero_grad(set_to_none=False)
    loss.backward()
    opt_d.step()
    return float(loss.detach())


def g_step_freezing_d(G, D, opt_g, z):
    D.requires_grad_(False)
    loss = -D(G(z)).mean()
    opt_g.zero_grad()
    loss.backward()
    opt_g.step()
    D.requires_grad_(True)
    return loss.detach()


@torch.no_grad()
def ema_by_state_dict(ema_model, model, decay):
    params = dict(model.named_parameters())
    for name, value in ema_model.state_dict().items():
        if name in params:
            value.lerp_(params[name], 1 - decay)
        else:
            value.copy_(model.state_dict()[name])


def fd_by(trace_sqrt):
    return fd_with(trace_sqrt=trace_sqrt)


def fd_scipy(a, b):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    a, b = a.double(), b.double()
    cov_a, cov_b = torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    trace_sqrt = scipy_linalg.sqrtm(cov_a @ cov_b).real.trace()
    mean = ((a.mean(0) - b.mean(0)) ** 2).sum().item()
    return mean + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt


def query_map_truncating(attention, feature_size, query, image_size=None):
    H, W = feature_size
    B, N, M = attention.shape
    p = int(math.sqrt(N // M))
    rows, cols = image_size or (H, W)
    r, c = int(query[0] * H / rows), int(query[1] * W / cols)
    grid = attention[:, r * W + c].view(B, 1, H // p, W // p)
    up = F.interpolate(grid, size=(rows, cols), mode="bilinear")[:, 0]
    return up / up.sum(dim=(-2, -1), keepdim=True)


ALTERNATIVES = [
    (W.check_attention_weights, stable_softmax_weights),
    (W.check_attention_weights, lambda q, k: F.softmax(q @ k.mT * q.shape[-1] ** -0.5, -1)),
    (
        W.check_scaled_dot_product_attention,
        lambda q, k, v: (F.scaled_dot_product_attention(q, k, v), attention_weights(q, k)),
    ),
    (W.check_masked_attention, masked_with_finfo_min),
    (
        W.check_split_heads,
        lambda x, h: x.reshape(x.shape[0], x.shape[1], h, -1).permute(0, 2, 1, 3),
    ),
    (W.check_split_heads, lambda x, h: torch.stack(x.chunk(h, dim=-1), dim=1)),
    (W.check_merge_heads, lambda x: torch.cat(x.unbind(1), dim=-1)),
    (W.check_spectral_normalise, sn_sigma_as_norm),
    (W.check_spectral_normalise, sn_updating_u_in_place),
    (W.check_d_hinge_loss, lambda r, f: (1 - r).clamp(min=0).mean() + (1 + f).clamp(min=0).mean()),
    (W.check_g_hinge_loss, lambda f: -(f.sum() / f.numel())),
    (W.check_discriminator_step, d_step_separate_calls),
    (W.check_generator_step, g_step_freezing_d),
    (W.check_update_ema, ema_by_state_dict),
    (W.check_frechet_distance, fd_scipy),
    (
        W.check_frechet_distance,
        fd_by(lambda x, y: torch.linalg.eigvals(x @ y).real.clamp(min=0).sqrt().sum()),
    ),
    (
        W.check_frechet_distance,
        fd_by(lambda x, y: torch.linalg.svdvals(sqrtm(x) @ sqrtm(y)).sum()),
    ),
    (W.check_query_attention_map, query_map_truncating),
]


def test_no_raw_exception_escapes_a_check():
    def returns_a_string(*args):
        return "not a tensor"

    for check in RIGHT:
        with pytest.raises(CheckFailed):
            check(returns_a_string)


@pytest.mark.parametrize("passed", [torch.zeros(3), None, 5, "attention_weights"])
def test_a_value_instead_of_a_function_says_to_pass_the_function(passed):
    """The usual slip: check(f(q, k)) instead of check(f)."""
    for check in RIGHT:
        with pytest.raises(CheckFailed, match=rf"{check.__name__} takes your function itself.*"
                           rf"{check.__name__}\(my_function\), not"):  # fmt: skip
            check(passed)


def test_the_sagan_block_check_wants_the_class_not_a_block_built_from_it():
    """check_self_attention_2d(MyBlock(16)) read as the block raising 'unexpected keyword
    argument pool'; a builder returning None printed '<function build at 0x...>'."""
    from sagan_edu.attention import SelfAttention2d

    built = r"takes your block's class, but got a SelfAttention2d already built from it"
    with pytest.raises(CheckFailed, match=built + r".*check_self_attention_2d\(SelfAttention2d\)"):
        checks.check_self_attention_2d(SelfAttention2d(16))

    def build(channels, pool=2):
        pass  # forgot the return

    with pytest.raises(CheckFailed, match=r"your build\(16, pool=2\) returned None, not an nn.Mod"):
        checks.check_self_attention_2d(build)


def test_a_function_with_the_wrong_parameters_is_told_to_keep_the_stubs():
    def no_parameters():
        return torch.zeros(3)

    with pytest.raises(CheckFailed, match=r"(?s)takes 0 positional.*keep the parameters of the"):
        checks.check_attention_weights(no_parameters)

    def calls_softmax_wrongly(q, k):  # a TypeError inside the function is not about parameters
        return torch.softmax(q @ k.transpose(-2, -1), dim=-1, extra=1)

    with pytest.raises(CheckFailed) as failed:
        checks.check_attention_weights(calls_softmax_wrongly)
    assert "extra" in str(failed.value) and "keep the parameters" not in str(failed.value)


# ---------------------------------------------------------------------------------------------
# An outside-style audit: more plausible mistakes, each named by the check, and more correct
# but unusual answers, each accepted.
# ---------------------------------------------------------------------------------------------


def sdpa_transposed_weights(q, k, v):
    w = attention_weights(q, k)
    return w.transpose(-2, -1) @ v, w  # (Lk, Lq) @ (Lk, dv): the shapes do not fit


def masked_out_before_zeroing(q, k, v, mask):
    s = scores(q, k)
    mask = mask.expand(s.shape)
    attends = mask.any(dim=-1, keepdim=True)
    w = torch.softmax(s.masked_fill(~(mask | ~attends), float("-inf")), dim=-1)
    return w @ v, w * attends  # out uses the weights before the empty rows are zeroed


def sn_sigma_of(flatten, n_fixed=None):
    """Power iteration on flatten(weight), run n_fixed times if given (ignoring n_iterations)."""

    def wrong(weight, u, n_iterations=1):
        w = flatten(weight)
        with torch.no_grad():
            for _ in range(n_fixed or n_iterations):
                v = F.normalize(w.t() @ u, dim=0)
                u = F.normalize(w @ v, dim=0)
        return weight / torch.dot(u, w @ v), u

    return wrong


def d_step_without_graph_for(term):
    def wrong(G, D, opt_d, real, z):
        with torch.no_grad():
            fake = G(z)
            frozen = D(real) if term == "real" else D(fake)
        r, f = (frozen, D(fake)) if term == "real" else (D(real), frozen)
        loss = d_hinge_loss(r, f)
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
        return loss

    return wrong


def d_step_with_loss(after_step=False, halve=False):
    def wrong(G, D, opt_d, real, z):
        with torch.no_grad():
            fake = G(z)
        loss = d_hinge_loss(D(real), D(fake)) / (2 if halve else 1)
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
        if after_step:
            with torch.no_grad():
                return d_hinge_loss(D(real), D(fake))
        return loss

    return wrong


def d_step_leaving_g_frozen(G, D, opt_d, real, z):
    G.requires_grad_(False)  # keeps gradients out of G, but is never undone
    loss = d_hinge_loss(D(real), D(G(z)))
    opt_d.zero_grad()
    loss.backward()
    opt_d.step()
    return loss


def g_step_with_loss(after_step=False, detach_logits=False):
    def wrong(G, D, opt_g, z):
        logits = D(G(z))
        loss = -(logits.detach().requires_grad_() if detach_logits else logits).mean()
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        if after_step:
            with torch.no_grad():
                return -D(G(z)).mean()
        return loss

    return wrong


def g_step_stepping_twice(G, D, opt_g, z):
    loss = -D(G(z)).mean()
    opt_g.zero_grad()
    loss.backward()
    opt_g.step()
    opt_g.step()
    return loss


@torch.no_grad()
def ema_tied_buffers(ema_model, model, decay):
    for e, p in zip(ema_model.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema_model.buffers(), model.buffers(), strict=True):
        e.data = b.data  # the EMA now uses the model's own tensor


@torch.no_grad()
def ema_as_new_model(ema_model, model, decay):
    new = copy.deepcopy(ema_model)
    ema(new, model, decay)
    return new


def query_map_with_variant(**variant):
    """query_map with one step changed: the sum, the grid or where the query is looked up."""

    def wrong(attention, feature_size, query, image_size=None):
        H, W = feature_size
        B, N, M = attention.shape
        p = round(math.sqrt(N / M))
        rows, cols = image_size or (H, W)
        r, c = query[0] * H // rows, query[1] * W // cols
        n = (r // p) * (W // p) + c // p if variant.get("pooled_query") else r * W + c
        if variant.get("columns_first"):
            grid = attention[:, n].reshape(B, 1, W // p, H // p).transpose(-2, -1)
        else:
            grid = attention[:, n].reshape(B, 1, H // p, W // p)
        up = F.interpolate(grid, size=(rows, cols), mode="bilinear", align_corners=False)[:, 0]
        if variant.get("softmax"):
            return up.flatten(1).softmax(-1).view_as(up)
        if variant.get("batch_sum"):
            return up / up.sum()
        if variant.get("squeeze"):
            return (up / up.sum(dim=(1, 2), keepdim=True)).squeeze()
        return up / up.sum(dim=(1, 2), keepdim=True)

    return wrong


class ColumnMajorBlock(Block):
    """Positions numbered column by column: the block run on the transposed map."""

    def forward(self, x):
        y, attention = super().forward(x.mT)
        return y.mT, attention


AUDIT_WRONG = [
    (W.check_attention_weights, lambda q, k: attention_weights(q, k).numpy(), r"no \.numpy\(\)"),
    (
        W.check_attention_weights,
        lambda q, k: torch.softmax(scores(q, k), dim=1),  # the last axis only for 2-D scores
        "dim=1 is the last axis only without batch dims",
    ),
    (W.check_scaled_dot_product_attention, sdpa_transposed_weights, "second-to-last"),
    (
        W.check_scaled_dot_product_attention,
        lambda q, k, v: (sdpa(q, k, v)[0] / math.sqrt(q.shape[-1]), attention_weights(q, k)),
        "divided by √d once more",
    ),
    (W.check_masked_attention, masked_out_before_zeroing, "output rows for queries whose mask"),
    (
        W.check_self_attention_2d,
        ColumnMajorBlock,
        "column by column",
    ),
    (
        W.check_merge_heads,
        lambda x: x.transpose(2, 3).reshape(x.size(0), x.size(2), -1),
        r"transpose\(2, 3\)",
    ),
    (W.check_spectral_normalise, sn_sigma_of(lambda w: w.flatten(1), n_fixed=1), "1 power iter"),
    (
        W.check_spectral_normalise,
        sn_sigma_of(lambda w: w.reshape(-1, w.shape[0]).t()),
        "scrambles",
    ),
    (
        W.check_d_hinge_loss,
        lambda r, f: F.relu(1 - r).mean() - F.relu(1 + f).mean(),
        "subtracted the fake term",
    ),
    (W.check_d_hinge_loss, lambda r, f: F.relu(1 - r).mean() + F.relu(f - 1).mean(), "fake − 1"),
    (W.check_d_hinge_loss, lambda r, f: (F.relu(1 - r) + F.relu(1 + f)).mean(), "different size"),
    (W.check_g_hinge_loss, lambda f: -F.relu(f).mean(), "has a relu"),
    (W.check_discriminator_step, d_step_without_graph_for("real"), "only the fake term"),
    (W.check_discriminator_step, d_step_without_graph_for("fake"), "only the real term"),
    (W.check_discriminator_step, d_step_with_loss(halve=True), "half the hinge loss"),
    (W.check_discriminator_step, d_step_with_loss(after_step=True), r"after opt_d\.step\(\)"),
    (W.check_discriminator_step, d_step_leaving_g_frozen, r"G\.requires_grad_\(True\)"),
    (W.check_generator_step, g_step_stepping_twice, "step opt_g once"),
    (W.check_generator_step, g_step_with_loss(after_step=True), r"after opt_g\.step\(\)"),
    (W.check_generator_step, g_step_with_loss(detach_logits=True), "or D's logits"),
    (W.check_update_ema, ema_with(mix=lambda e, p, d: d * e + p), "weighted by 1 − decay"),
    (W.check_update_ema, ema_tied_buffers, "shares memory with the model's"),
    (W.check_update_ema, ema_as_new_model, "returned a new model"),
    (W.check_frechet_distance, lambda a, b: math.sqrt(max(fd(a, b), 0)), "square root of the"),
    (W.check_query_attention_map, query_map_with_variant(batch_sum=True), "all together"),
    (W.check_query_attention_map, query_map_with_variant(squeeze=True), r"\.squeeze\(\)"),
    (W.check_query_attention_map, query_map_with_variant(softmax=True), "with a softmax"),
    (W.check_query_attention_map, query_map_with_variant(pooled_query=True), "pooled grid"),
    (W.check_query_attention_map, query_map_with_variant(columns_first=True), r"\(W/p, H/p\)"),
]


def test_the_g_hinge_message_shows_only_the_fake_logits_it_was_given():
    with pytest.raises(CheckFailed, match="fake logits") as failed:
        checks.check_g_hinge_loss(lambda f: -1.5 * f.mean())
    assert "real logits" not in str(failed.value)


def weights_in_float64_by_einsum(q, k):
    s = torch.einsum("...qd,...kd->...qk", q.double(), k.double()) / math.sqrt(q.shape[-1])
    return s.softmax(dim=-1).to(q.dtype)


def weights_scaling_scores_in_place(q, k):
    s = q @ k.mT
    s /= math.sqrt(q.shape[-1])  # in place on an intermediate, not on an argument: fine
    return s.softmax(dim=-1)


def masked_by_renormalising(q, k, v, mask):
    w = torch.softmax(scores(q, k), dim=-1) * mask
    w = w / w.sum(dim=-1, keepdim=True).clamp_min(1e-30)  # rows with no key stay 0
    return w @ v, w


def masked_with_nan_to_num(q, k, v, mask):
    w = torch.softmax(scores(q, k).masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0)
    return w @ v, w


def masked_by_torchs_fused_attention(q, k, v, mask):
    w = masked_attention(q, k, v, mask)[1]
    mask = mask.expand(w.shape)
    attends = mask.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | ~attends) * attends
    return out, w


class ChannelsLastBlock(Block):
    """The block written with permutes, torch.matmul and torch.addcmul; γ of shape (1,)."""

    def __init__(self, channels, pool=2):
        super().__init__(channels, pool)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.max_pool = nn.MaxPool2d(pool)

    def forward(self, x):
        B, C, H, W = x.shape
        q = self.query(x).permute(0, 2, 3, 1).reshape(B, H * W, -1)  # (B, N, C/8)
        k = self.max_pool(self.key(x)).permute(0, 2, 3, 1).reshape(B, -1, C // 8)
        v = self.max_pool(self.value(x)).permute(0, 2, 3, 1).reshape(B, -1, C // 2)
        attention = F.softmax(torch.matmul(q, k.permute(0, 2, 1)), dim=2)  # (B, N, M)
        o = torch.bmm(attention, v).reshape(B, H, W, C // 2).permute(0, 3, 1, 2)
        return torch.addcmul(x, self.gamma, self.out(o)), attention


def sn_eps_and_einsum(weight, u, n_iterations=1):
    w = weight.flatten(1)
    with torch.no_grad():
        for _ in range(n_iterations):
            v = w.T @ u
            v = v / (v.norm() + 1e-12)
            u = w @ v
            u = u / (u.norm() + 1e-12)
    return weight / torch.einsum("i,ij,j->", u, w, v), u


def d_step_one_forward(G, D, opt_d, real, z):
    with torch.no_grad():
        fake = G(z)
    logits = D(torch.cat([real, fake]))
    loss = d_hinge_loss(logits[: len(real)], logits[len(real) :])
    D.zero_grad()
    loss.backward()
    opt_d.step()
    return loss.detach().numpy()  # a NumPy number is still a number


def g_step_without_freezing(G, D, opt_g, z):
    G.zero_grad()
    D.zero_grad()
    loss = -D(G(z)).mean()
    loss.backward()
    opt_g.step()
    return loss.item()


@torch.no_grad()
def ema_by_data(ema_model, model, decay):
    for e, p in zip(ema_model.parameters(), model.parameters(), strict=True):
        e.data = decay * e.data + (1 - decay) * p.data
    for e, b in zip(ema_model.buffers(), model.buffers(), strict=True):
        e.data = b.data.clone()


@torch.no_grad()
def ema_by_load_state_dict(ema_model, model, decay):
    state, params = model.state_dict(), dict(model.named_parameters())
    ema_model.load_state_dict(
        {n: decay * t + (1 - decay) * state[n] if n in params else state[n]
         for n, t in ema_model.state_dict().items()}
    )  # fmt: skip


@torch.no_grad()
def ema_by_foreach(ema_model, model, decay):
    torch._foreach_lerp_(list(ema_model.parameters()), list(model.parameters()), 1 - decay)
    for e, b in zip(ema_model.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def fd_with_numpy(a, b):
    np = pytest.importorskip("numpy")
    a, b = a.double().numpy(), b.double().numpy()
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    roots = np.sqrt(np.linalg.eigvals(cov_a @ cov_b).astype(complex)).real.sum()
    return ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * roots


def fd_with_centred_covariances(a, b):
    def cov(t):
        centred = t - t.mean(0, keepdim=True)
        return centred.T @ centred / (t.shape[0] - 1)

    return torch.as_tensor(fd_with(cov=cov)(a, b))  # a 0-d tensor instead of a float


def query_map_by_scale_factor(attention, feature_size, query, image_size=None):
    H, W = feature_size
    B, N, M = attention.shape
    p = round(math.sqrt(N / M))
    rows, cols = image_size or (H, W)
    n = (query[0] * H // rows) * W + query[1] * W // cols
    grid = attention[:, n].reshape(B, 1, H // p, W // p)
    factor = (rows // (H // p), cols // (W // p))
    up = F.interpolate(grid, scale_factor=factor, mode="bilinear", align_corners=False)[:, 0]
    return up / up.sum(dim=(1, 2), keepdim=True)


def d_step_freezing_g_and_back(G, D, opt_d, real, z):
    G.requires_grad_(False)
    fake = G(z)  # no graph: neither G's weights nor z require grad
    G.requires_grad_(True)
    loss = d_hinge_loss(D(real), D(fake))
    for p in D.parameters():
        p.grad = None  # what zero_grad(set_to_none=True) does
    loss.backward()
    opt_d.step()
    return loss


AUDIT_ALTERNATIVES = [
    (W.check_attention_weights, weights_in_float64_by_einsum),
    (W.check_attention_weights, weights_scaling_scores_in_place),
    (W.check_scaled_dot_product_attention, lambda q, k, v: list(sdpa(q, k, v))),
    (W.check_masked_attention, masked_by_renormalising),
    (W.check_masked_attention, masked_with_nan_to_num),
    (W.check_masked_attention, masked_by_torchs_fused_attention),
    (W.check_self_attention_2d, ChannelsLastBlock),
    (W.check_split_heads, lambda x, h: x.unflatten(-1, (h, -1)).transpose(-3, -2)),
    (W.check_merge_heads, lambda x: x.transpose(1, 2).flatten(2)),
    (W.check_spectral_normalise, sn_eps_and_einsum),
    (W.check_spectral_normalise, lambda w, u, n=1: sn_sigma_as_norm(w, u, n)),
    (
        W.check_d_hinge_loss,
        lambda r, f: torch.where(r < 1, 1 - r, 0).mean() + (1 + f).relu().mean(),
    ),
    (W.check_discriminator_step, d_step_one_forward),
    (W.check_discriminator_step, d_step_freezing_g_and_back),
    (W.check_generator_step, g_step_without_freezing),
    (W.check_update_ema, ema_by_data),
    (W.check_update_ema, ema_by_load_state_dict),
    (W.check_update_ema, ema_by_foreach),
    (W.check_frechet_distance, fd_with_numpy),
    (W.check_frechet_distance, fd_with_centred_covariances),
    (W.check_query_attention_map, query_map_by_scale_factor),
]


# ---------------------------------------------------------------------------------------------
# One test runs every planted mistake above, one every other right answer
# ---------------------------------------------------------------------------------------------

ALL_WRONG = WRONG + MORE_WRONG + AUDIT_WRONG
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
