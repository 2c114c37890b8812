"""Toy sequence tasks and the small sequence models the course trains on them.

Three tasks, each drawn from a seed as plain tensors:

- `context_task`: the word "bank" means *river* or *money*, and only another word somewhere else in
  the sentence ("fish", "loan", …) says which. A model that looks at "bank" alone can only guess.
- `nearest_topic_task`: the same, with one river word *and* one money word in every sentence; the
  one nearer to "bank" decides. Knowing which words occur is no longer enough: a model must also
  know where they are.
- `long_range_task`: the class token comes first (or anywhere, with `random_position=True`); then
  many distractors, and the answer is asked for at the very last position. The information has to
  travel the whole sequence.

Labels live in a (N, L) tensor next to the tokens, with `IGNORE` (-100) at the positions that have
no label, so every model here is a tagger: tokens (B, L) -> logits (B, L, classes), and the loss and
accuracy only count the labelled positions.

Four models share one interface, `embed(tokens)` then `from_embeddings(x)`, so a notebook can ask
for the gradient of the loss with respect to one token's embedding:

- `TokenClassifier`: an MLP on each token alone (no context at all, the baseline).
- `MeanPoolClassifier`: an MLP on each token and the mean of all the sentence's tokens (a bag of
  words: every word is seen, but not where it is).
- `AttentionClassifier`: transformer blocks built on `MultiHeadAttention`; returns its attention
  weights, (B, heads, L, L) per layer, when asked.
- `LSTMClassifier`: an LSTM read left to right (or both ways, `bidirectional=True`), the recurrent
  baseline; `forget_bias` sets the forget gate's initial bias.

`train_classifier` is a plain Adam loop on such a model, with optional gradient clipping;
`accuracy` scores it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sagan_edu.attention import MultiHeadAttention

__all__ = [
    "IGNORE",
    "AttentionClassifier",
    "LSTMClassifier",
    "MeanPoolClassifier",
    "SequenceTask",
    "TokenClassifier",
    "accuracy",
    "context_task",
    "gradient_norm",
    "long_range_task",
    "loss_on",
    "nearest_topic_task",
    "train_classifier",
]

IGNORE = -100  # label of positions that are not scored (F.cross_entropy's ignore_index)


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------


@dataclass
class SequenceTask:
    """A toy dataset: token ids, their labels, and the words they stand for.

    Attributes:
        tokens: int64 (N, L) token ids into `vocab`.
        targets: int64 (N, L) class ids into `classes`, IGNORE where a position has no label.
        vocab: the word of each token id.
        classes: the name of each class id.
    """

    tokens: torch.Tensor
    targets: torch.Tensor
    vocab: list[str]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.tokens)

    def words(self, index: int) -> list[str]:
        """The words of sequence `index`, e.g. ['we', 'fish', 'by', 'the', 'bank', …]."""
        return [self.vocab[t] for t in self.tokens[index].tolist()]

    def split(self, n_train: int) -> tuple[SequenceTask, SequenceTask]:
        """The first n_train sequences, and the rest (held out)."""
        _check_count("n_train", n_train, 1)
        if n_train >= len(self):
            raise ValueError(
                f"n_train={n_train} leaves nothing to hold out of {len(self)} sequences; use "
                f"n_train < {len(self)}"
            )
        head = SequenceTask(self.tokens[:n_train], self.targets[:n_train], self.vocab, self.classes)
        tail = SequenceTask(self.tokens[n_train:], self.targets[n_train:], self.vocab, self.classes)
        return head, tail


def _check_count(name: str, value: object, minimum: int, why: str = "") -> None:
    """A whole number ≥ minimum (steps=2.5 or n=-1 would fail deep inside torch); `why` says
    what the minimum makes room for."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name} must be a whole number ≥ {minimum}{reason}, got {value!r}")


FILLER = ["the", "a", "we", "they", "sat", "went", "to", "by", "near", "old", "new", "that"]
TOPIC_WORDS = {
    "river": ["river", "fish", "boat", "water", "shore"],
    "money": ["money", "loan", "cash", "account", "deposit"],
}
AMBIGUOUS = "bank"


def _context_vocab() -> tuple[list[str], dict[str, int]]:
    """The words of the "bank" tasks: filler, "bank", then the river words and the money words."""
    vocab = [*FILLER, AMBIGUOUS, *(w for t in TOPIC_WORDS for w in TOPIC_WORDS[t])]
    return vocab, {word: i for i, word in enumerate(vocab)}


def context_task(n: int, length: int = 12, seed: int = 0) -> SequenceTask:
    """Sentences with one "bank" and one topic word; label "bank" with the topic.

    Each sequence holds `length` words: filler, one "bank", and one word of a topic (river or
    money) at another random position, before or after "bank". Only the "bank" position is
    labelled, with the topic's class. Looking at "bank" alone gives 50%; a model must find the
    topic word elsewhere in the sentence to do better.

    Returns a SequenceTask with tokens (n, length) and targets (n, length), one label per row.
    """
    _check_count("n", n, 1)
    _check_count("length", length, 2, why="room for 'bank' and a topic word")
    topics = list(TOPIC_WORDS)
    vocab, index = _context_vocab()
    g = torch.Generator().manual_seed(seed)

    tokens = torch.randint(len(FILLER), (n, length), generator=g)  # (n, L) filler everywhere
    topic = torch.randint(len(topics), (n,), generator=g)  # (n,) the class of each sentence
    word = torch.randint(len(TOPIC_WORDS[topics[0]]), (n,), generator=g)  # which topic word
    # Two distinct random positions per row: the first for "bank", the second for the topic word.
    positions = torch.rand(n, length, generator=g).argsort(dim=1)[:, :2]  # (n, 2)
    rows = torch.arange(n)
    topic_ids = torch.tensor([[index[w] for w in TOPIC_WORDS[t]] for t in topics])  # (2, words)
    tokens[rows, positions[:, 0]] = index[AMBIGUOUS]
    tokens[rows, positions[:, 1]] = topic_ids[topic, word]

    targets = torch.full((n, length), IGNORE)
    targets[rows, positions[:, 0]] = topic
    return SequenceTask(tokens, targets, vocab, topics)


def nearest_topic_task(n: int, length: int = 12, seed: int = 0) -> SequenceTask:
    """Sentences with one "bank", one river word and one money word; the nearer one decides.

    The three words sit at distinct random positions, drawn so that the two topic words are never
    equally far from "bank". "bank" is labelled with the topic of the nearer topic word. Every
    sentence contains both topics, so a bag of words (which words occur, not where) is at chance;
    a model has to compare the two distances to "bank".

    Returns a SequenceTask with tokens (n, length) and targets (n, length), one label per row.
    """
    _check_count("n", n, 1)
    room = "room for 'bank' and two topic words at different distances from it"
    _check_count("length", length, 4, why=room)
    topics = list(TOPIC_WORDS)
    vocab, index = _context_vocab()
    g = torch.Generator().manual_seed(seed)

    tokens = torch.randint(len(FILLER), (n, length), generator=g)  # (n, L) filler everywhere
    # Positions of "bank", the river word and the money word: three distinct positions per row.
    # Rows where both topic words are equally far from "bank" are drawn again until none is left.
    positions = torch.rand(n, length, generator=g).argsort(dim=1)[:, :3]  # (n, 3)
    while True:
        distance = (positions[:, 1:] - positions[:, :1]).abs()  # (n, 2): river, money
        tied = distance[:, 0] == distance[:, 1]  # (n,)
        if not tied.any():
            break
        redraw = torch.rand(int(tied.sum()), length, generator=g).argsort(dim=1)[:, :3]
        positions[tied] = redraw
    topic = (distance[:, 1] < distance[:, 0]).long()  # (n,) 0 = river nearer, 1 = money nearer

    words = torch.randint(len(TOPIC_WORDS[topics[0]]), (n, 2), generator=g)  # (n, 2)
    topic_ids = torch.tensor([[index[w] for w in TOPIC_WORDS[t]] for t in topics])  # (2, words)
    rows = torch.arange(n)
    tokens[rows, positions[:, 0]] = index[AMBIGUOUS]
    tokens[rows, positions[:, 1]] = topic_ids[0, words[:, 0]]  # a river word
    tokens[rows, positions[:, 2]] = topic_ids[1, words[:, 1]]  # a money word

    targets = torch.full((n, length), IGNORE)
    targets[rows, positions[:, 0]] = topic
    return SequenceTask(tokens, targets, vocab, topics)


def long_range_task(
    n: int, length: int, num_classes: int = 4, seed: int = 0, random_position: bool = False
) -> SequenceTask:
    """One class token among `length - 2` distractors; a "?" at the end asks for its class.

    Tokens: position 0 is one of the class tokens "A", "B", … ; positions 1 … L-2 are random
    distractors "d0" … "d15"; position L-1 is "?". Only "?" is labelled, with the class token's
    class, so the answer has to travel from the start of the sequence to its end. Chance is
    1/num_classes.

    With `random_position=True` the class token sits at a random position in 0 … L-2 instead of
    at 0 (a distractor takes position 0), so a model cannot simply learn *where* to look; it has
    to recognise *what* to look for.

    Returns a SequenceTask with tokens (n, length) and targets (n, length), one label per row.
    """
    _check_count("n", n, 1)
    _check_count("length", length, 2, why="the class token and '?'")
    if not 2 <= num_classes <= 26:
        raise ValueError(f"num_classes must be between 2 and 26, got {num_classes}")
    classes = [chr(ord("A") + i) for i in range(num_classes)]
    distractors = [f"d{i}" for i in range(16)]
    vocab = [*classes, *distractors, "?"]
    g = torch.Generator().manual_seed(seed)

    label = torch.randint(num_classes, (n,), generator=g)  # (n,)
    tokens = num_classes + torch.randint(len(distractors), (n, length), generator=g)  # (n, L)
    if random_position:
        where = torch.randint(length - 1, (n,), generator=g)  # (n,) in 0 … L-2
    else:
        where = torch.zeros(n, dtype=torch.long)
    tokens[torch.arange(n), where] = label
    tokens[:, -1] = len(vocab) - 1  # "?"
    targets = torch.full((n, length), IGNORE)
    targets[:, -1] = label
    return SequenceTask(tokens, targets, vocab, classes)


# ---------------------------------------------------------------------------------------------
# Models: tokens (B, L) -> logits (B, L, classes)
# ---------------------------------------------------------------------------------------------


class TokenClassifier(nn.Module):
    """The context-free baseline: each token's label from that token alone (an MLP per token)."""

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 32):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, 2 * embed_dim), nn.GELU(), nn.Linear(2 * embed_dim, num_classes)
        )

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(tokens)  # (B, L) -> (B, L, E)

    def from_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)  # (B, L, E) -> (B, L, classes): no position sees another

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.from_embeddings(self.embed(tokens))


class MeanPoolClassifier(nn.Module):
    """A bag-of-words baseline: each token's label from itself and the mean of all tokens.

    Every position sees every word of its sentence, but only through their average, so it knows
    *which* words occur and not *where*. Enough when one topic word decides; not when the
    nearer of two does.
    """

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 32):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(2 * embed_dim, 2 * embed_dim),
            nn.GELU(),
            nn.Linear(2 * embed_dim, num_classes),
        )

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(tokens)  # (B, L) -> (B, L, E)

    def from_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True).expand_as(x)  # (B, L, E): the same for every position
        return self.mlp(torch.cat([x, mean], dim=-1))  # (B, L, 2E) -> (B, L, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.from_embeddings(self.embed(tokens))


class Block(nn.Module):
    """One transformer block: x + attention(norm(x)), then x + MLP(norm(x)) (pre-norm)."""

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attention = MultiHeadAttention(embed_dim, num_heads)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, 4 * embed_dim), nn.GELU(), nn.Linear(4 * embed_dim, embed_dim)
        )

    def forward(
        self, x: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, L, E) -> (B, L, E), and the weights (B, heads, L, L) if need_weights."""
        attended, weights = self.attention(self.norm1(x), need_weights=need_weights)
        x = x + attended  # every position mixes in what it looked up
        x = x + self.mlp(self.norm2(x))  # then thinks about it, position by position
        return x, weights


class AttentionClassifier(nn.Module):
    """Token + learned position embeddings, `num_layers` transformer blocks, a linear head.

    No causal mask: every position may look at every other, before or after it.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        embed_dim: int = 32,
        num_heads: int = 2,
        num_layers: int = 1,
    ):
        super().__init__()
        self.max_len = max_len
        self.token_embedding = nn.Embedding(vocab_size, embed_dim)
        self.position_embedding = nn.Embedding(max_len, embed_dim)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads) for _ in range(num_layers))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, L, E), without positions (those are added in from_embeddings)."""
        if tokens.size(1) > self.max_len:
            raise ValueError(
                f"sequences of length {tokens.size(1)} are longer than max_len={self.max_len}; "
                "build the model with a larger max_len"
            )
        return self.token_embedding(tokens)

    def from_embeddings(
        self, x: torch.Tensor, need_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, L, E) -> logits (B, L, classes) [, list of weights (B, heads, L, L), one per layer].

        Attention itself cannot tell positions apart, so each position adds its own embedding.
        """
        positions = torch.arange(x.size(1), device=x.device)
        h = x + self.position_embedding(positions)  # (B, L, E)
        all_weights = []
        for block in self.blocks:
            h, weights = block(h, need_weights=need_weights)
            all_weights.append(weights)
        logits = self.head(self.norm(h))  # (B, L, classes)
        return (logits, all_weights) if need_weights else logits

    def forward(
        self, tokens: torch.Tensor, need_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        return self.from_embeddings(self.embed(tokens), need_weights=need_weights)


class LSTMClassifier(nn.Module):
    """Token embeddings read by an LSTM; each position's state makes its logits.

    Left to right (the default), the last position has read the whole sequence, but everything it
    knows about the first token has been passed along through every step in between. With
    `bidirectional=True` a second LSTM reads right to left and each position sees both states
    side by side (2 × hidden_size), so it has context from both sides.

    `forget_bias`, if given, is the initial bias of the forget gate (PyTorch's default draws it
    at random around 0, like every other bias). A large positive value such as +3 starts the
    gate near sigmoid(3) ≈ 0.95, so the cell keeps its memory from the start and gradients pass
    through many steps (Gers et al., 2000; Jozefowicz et al., 2015).
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embed_dim: int = 32,
        hidden_size: int = 64,
        bidirectional: bool = False,
        forget_bias: float | None = None,
    ):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_size, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)
        if forget_bias is not None:
            self._set_forget_bias(forget_bias)

    @torch.no_grad()
    def _set_forget_bias(self, value: float) -> None:
        # PyTorch stacks the four gates' biases as (input, forget, cell, output), hidden_size
        # each, and adds bias_ih and bias_hh: put `value` in one and 0 in the other.
        H = self.lstm.hidden_size
        for name, bias in self.lstm.named_parameters():
            if name.startswith("bias_ih"):
                bias[H : 2 * H] = value
            elif name.startswith("bias_hh"):
                bias[H : 2 * H] = 0.0

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(tokens)  # (B, L) -> (B, L, E)

    def from_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(x)  # (B, L, hidden) or (B, L, 2·hidden) when bidirectional
        return self.head(states)  # (B, L, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.from_embeddings(self.embed(tokens))


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def loss_on(model: nn.Module, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled positions of a batch, tokens and targets (B, L)."""
    logits = model(tokens)  # (B, L, classes)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


@torch.no_grad()
def accuracy(model: nn.Module, task: SequenceTask, batch_size: int = 1024) -> float:
    """Fraction of labelled positions where the model's top class is the target."""
    _check_task(task)
    _check_count("batch_size", batch_size, 1)
    _check_model_fits(model, task)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for start in range(0, len(task), batch_size):
        tokens = task.tokens[start : start + batch_size].to(device)
        targets = task.targets[start : start + batch_size].to(device)
        predicted = model(tokens).argmax(dim=-1)  # (B, L)
        labelled = targets != IGNORE
        correct += (predicted[labelled] == targets[labelled]).sum().item()
        total += labelled.sum().item()
    model.train(was_training)
    return correct / total


def gradient_norm(model: nn.Module) -> float:
    """The L2 norm of all of `model`'s gradients taken together (0 before any backward)."""
    norms = [p.grad.norm() for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)).item() if norms else 0.0


def _check_task(task: object) -> None:
    if not isinstance(task, SequenceTask):
        raise ValueError(
            f"task must be a SequenceTask (from context_task, nearest_topic_task or "
            f"long_range_task), got {type(task).__name__}"
        )
    if not (task.targets != IGNORE).any():
        raise ValueError(f"task has no labelled positions ({len(task)} sequences); pass a larger n")


@torch.no_grad()
def _check_model_fits(model: nn.Module, task: SequenceTask) -> None:
    """One sequence through the model: its vocabulary and classes must cover the task's."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout: the check must not draw random numbers
    try:
        logits = model(task.tokens[:1].to(device))  # (1, L, classes)
    except IndexError:  # an embedding lookup past the model's vocabulary
        logits = None
    finally:
        model.train(was_training)
    if logits is None or logits.size(-1) < len(task.classes):
        raise ValueError(
            f"the model does not fit the task ({len(task.vocab)} words, {len(task.classes)} "
            f"classes); build it with vocab_size=len(task.vocab), num_classes=len(task.classes)"
        )


def train_classifier(
    model: nn.Module,
    task: SequenceTask,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    clip_grad_norm: float | None = 1.0,
    callback: Callable[[int], None] | None = None,
) -> list[float]:
    """Train `model` on random batches of `task` with Adam; return the loss of every step.

    `clip_grad_norm`: before each step, gradients whose overall norm exceeds this are scaled
    down to it (`torch.nn.utils.clip_grad_norm_`); None trains without clipping. The default, 1,
    keeps a recurrent network's occasional gradient spikes (Pascanu et al., 2013) from throwing
    its weights far off, and changes nothing in steps whose norm is already below 1.

    `callback(step)`, if given, is called after every step (1, 2, …, steps), e.g. to measure the
    held-out accuracy now and then. The step's gradients are still in the parameters' `.grad`
    then (after clipping), so `gradient_norm(model)` reads their size.
    """
    _check_task(task)
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        _check_count(name, value, 1)
    if not isinstance(lr, numbers.Real) or not 0 < lr < math.inf:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be a function of the step, got {callback!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(
            f"clip_grad_norm must be a positive number, or None for no clipping; "
            f"got {clip_grad_norm}"
        )
    _check_model_fits(model, task)
    g = torch.Generator().manual_seed(seed)  # the order of batches, independent of the model
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for step in range(1, steps + 1):
        batch = torch.randint(len(task), (batch_size,), generator=g)
        loss = loss_on(model, task.tokens[batch].to(device), task.targets[batch].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()
        losses.append(loss.item())
        if callback is not None:
            callback(step)
    return losses
