"""Toy sequence tasks and the small sequence models the course trains on them.

Two tasks, each drawn from a seed as plain tensors:

- `context_task`: the word "bank" means *river* or *money*, and only another word somewhere else in
  the sentence ("fish", "loan", …) says which. A model that looks at "bank" alone can only guess.
- `long_range_task`: the class is the first token; then come many distractors, and the answer is
  asked for at the very last position. The information has to travel the whole sequence.

Labels live in a (N, L) tensor next to the tokens, with `IGNORE` (-100) at the positions that have
no label, so every model here is a tagger: tokens (B, L) -> logits (B, L, classes), and the loss and
accuracy only count the labelled positions.

Three models share one interface, `embed(tokens)` then `from_embeddings(x)`, so a notebook can ask
for the gradient of the loss with respect to one token's embedding:

- `TokenClassifier`: an MLP on each token alone (no context at all, the baseline).
- `AttentionClassifier`: transformer blocks built on `MultiHeadAttention`; returns its attention
  weights, (B, heads, L, L) per layer, when asked.
- `LSTMClassifier`: a left-to-right LSTM, the recurrent baseline.

`train_classifier` is a plain Adam loop on such a model; `accuracy` scores it.
"""

from __future__ import annotations

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
    "SequenceTask",
    "TokenClassifier",
    "accuracy",
    "context_task",
    "long_range_task",
    "loss_on",
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
        head = SequenceTask(self.tokens[:n_train], self.targets[:n_train], self.vocab, self.classes)
        tail = SequenceTask(self.tokens[n_train:], self.targets[n_train:], self.vocab, self.classes)
        return head, tail


FILLER = ["the", "a", "we", "they", "sat", "went", "to", "by", "near", "old", "new", "that"]
TOPIC_WORDS = {
    "river": ["river", "fish", "boat", "water", "shore"],
    "money": ["money", "loan", "cash", "account", "deposit"],
}
AMBIGUOUS = "bank"


def context_task(n: int, length: int = 12, seed: int = 0) -> SequenceTask:
    """Sentences with one "bank" and one topic word; label "bank" with the topic.

    Each sequence holds `length` words: filler, one "bank", and one word of a topic (river or
    money) at another random position, before or after "bank". Only the "bank" position is
    labelled, with the topic's class. Looking at "bank" alone gives 50%; a model must find the
    topic word elsewhere in the sentence to do better.

    Returns a SequenceTask with tokens (n, length) and targets (n, length), one label per row.
    """
    if length < 2:
        raise ValueError(
            f"length must be at least 2 (room for 'bank' and a topic word), got {length}"
        )
    topics = list(TOPIC_WORDS)
    vocab = [*FILLER, AMBIGUOUS, *(w for t in topics for w in TOPIC_WORDS[t])]
    index = {word: i for i, word in enumerate(vocab)}
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


def long_range_task(n: int, length: int, num_classes: int = 4, seed: int = 0) -> SequenceTask:
    """The class is the first token; `length - 2` distractors follow; a "?" at the end asks for it.

    Tokens: position 0 is one of the class tokens "A", "B", … ; positions 1 … L-2 are random
    distractors "d0" … "d15"; position L-1 is "?". Only "?" is labelled, with the first token's
    class, so the answer has to travel from the start of the sequence to its end. Chance is
    1/num_classes.

    Returns a SequenceTask with tokens (n, length) and targets (n, length), one label per row.
    """
    if length < 2:
        raise ValueError(f"length must be at least 2 (the class token and '?'), got {length}")
    if not 2 <= num_classes <= 26:
        raise ValueError(f"num_classes must be between 2 and 26, got {num_classes}")
    classes = [chr(ord("A") + i) for i in range(num_classes)]
    distractors = [f"d{i}" for i in range(16)]
    vocab = [*classes, *distractors, "?"]
    g = torch.Generator().manual_seed(seed)

    label = torch.randint(num_classes, (n,), generator=g)  # (n,)
    tokens = num_classes + torch.randint(len(distractors), (n, length), generator=g)  # (n, L)
    tokens[:, 0] = label
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
    """Token embeddings read left to right by an LSTM; each position's state makes its logits.

    The last position has read the whole sequence, but everything it knows about the first token
    has been passed along through every step in between.
    """

    def __init__(
        self, vocab_size: int, num_classes: int, embed_dim: int = 32, hidden_size: int = 64
    ):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(tokens)  # (B, L) -> (B, L, E)

    def from_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(x)  # (B, L, hidden)
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


def train_classifier(
    model: nn.Module,
    task: SequenceTask,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    callback: Callable[[int], None] | None = None,
) -> list[float]:
    """Train `model` on random batches of `task` with Adam; return the loss of every step.

    `callback(step)`, if given, is called after every step (1, 2, …, steps), e.g. to measure the
    held-out accuracy now and then. Gradients are clipped to norm 1, which keeps the LSTM's
    occasional gradient spikes harmless and changes nothing for well-behaved steps.
    """
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
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if callback is not None:
            callback(step)
    return losses
