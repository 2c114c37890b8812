"""Tests of sagan_edu.sequence: the toy tasks, the three sequence models, and the training loop."""

from __future__ import annotations

import pytest
import torch

from sagan_edu.sequence import (
    IGNORE,
    AttentionClassifier,
    LSTMClassifier,
    TokenClassifier,
    accuracy,
    context_task,
    long_range_task,
    loss_on,
    train_classifier,
)


def test_context_task_is_deterministic_and_labels_only_bank():
    a, b = context_task(50, length=10, seed=3), context_task(50, length=10, seed=3)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.tokens, context_task(50, length=10, seed=4).tokens)
    assert a.tokens.shape == a.targets.shape == (50, 10)
    assert a.tokens.dtype == a.targets.dtype == torch.long

    bank = a.vocab.index("bank")
    labelled = a.targets != IGNORE
    assert (labelled.sum(dim=1) == 1).all(), "exactly one label per sentence"
    assert (a.tokens[labelled] == bank).all(), "the label sits on 'bank'"
    assert ((a.tokens == bank).sum(dim=1) == 1).all()


def test_context_task_label_is_the_topic_word_elsewhere_in_the_sentence():
    task = context_task(200, length=8, seed=0)
    for i in range(len(task)):
        words = task.words(i)
        label = task.classes[task.targets[i].max()]
        topic_words = [w for w in words if w in {"river", "fish", "boat", "water", "shore"}]
        money_words = [w for w in words if w in {"money", "loan", "cash", "account", "deposit"}]
        assert len(topic_words) + len(money_words) == 1
        assert label == ("river" if topic_words else "money")
    # Both classes occur, and "bank" appears both before and after the topic word.
    assert set(task.targets[task.targets != IGNORE].tolist()) == {0, 1}
    bank_pos = (task.tokens == task.vocab.index("bank")).float().argmax(dim=1)
    topic_pos = (task.tokens > task.vocab.index("bank")).float().argmax(dim=1)
    assert (bank_pos < topic_pos).any() and (bank_pos > topic_pos).any()


def test_long_range_task_answer_is_the_first_token():
    task = long_range_task(100, length=20, num_classes=3, seed=1)
    assert task.tokens.shape == task.targets.shape == (100, 20)
    assert task.classes == ["A", "B", "C"]
    assert torch.equal(task.targets[:, -1], task.tokens[:, 0])  # class ids == class token ids
    assert (task.targets[:, :-1] == IGNORE).all()
    assert (task.tokens[:, -1] == task.vocab.index("?")).all()
    assert (task.tokens[:, 1:-1] >= 3).all(), "no class token among the distractors"
    assert torch.equal(task.tokens, long_range_task(100, length=20, num_classes=3, seed=1).tokens)


def test_task_arguments_are_checked():
    with pytest.raises(ValueError, match="length"):
        context_task(10, length=1)
    with pytest.raises(ValueError, match="num_classes"):
        long_range_task(10, length=5, num_classes=1)


def test_split_keeps_vocab_and_sizes():
    train, test = context_task(30, seed=0).split(20)
    assert len(train) == 20 and len(test) == 10 and train.vocab == test.vocab


@pytest.mark.parametrize("layers", [1, 2])
def test_attention_classifier_returns_weights_per_layer(layers):
    torch.manual_seed(0)
    model = AttentionClassifier(
        vocab_size=11, num_classes=3, max_len=9, num_heads=4, num_layers=layers
    )
    tokens = torch.randint(11, (5, 9))
    logits, weights = model(tokens, need_weights=True)
    assert logits.shape == (5, 9, 3)
    assert len(weights) == layers
    for w in weights:
        assert w.shape == (5, 4, 9, 9)  # (B, heads, L, L)
        torch.testing.assert_close(w.sum(dim=-1), torch.ones(5, 4, 9))
    # The fused path (no weights) gives the same logits.
    torch.testing.assert_close(model(tokens), logits, atol=1e-5, rtol=1e-5)


def test_attention_classifier_rejects_too_long_sequences():
    model = AttentionClassifier(vocab_size=5, num_classes=2, max_len=4)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 6, dtype=torch.long))


@pytest.mark.parametrize("kind", ["token", "lstm", "attention"])
def test_models_share_the_embed_interface(kind):
    torch.manual_seed(0)
    model = {
        "token": TokenClassifier(7, 2),
        "lstm": LSTMClassifier(7, 2),
        "attention": AttentionClassifier(7, 2, max_len=6),
    }[kind]
    tokens = torch.randint(7, (3, 6))
    x = model.embed(tokens).detach().requires_grad_()  # (B, L, E)
    logits = model.from_embeddings(x)
    torch.testing.assert_close(logits, model(tokens))
    logits[:, -1].sum().backward()
    first = x.grad[:, 0].norm()
    if kind == "token":
        assert first == 0, "a context-free model's last position ignores the first token"
    else:
        assert first > 0


def test_lstm_reads_left_to_right():
    torch.manual_seed(0)
    model = LSTMClassifier(7, 2)
    x = model.embed(torch.randint(7, (1, 5))).detach().requires_grad_()
    model.from_embeddings(x)[0, 2].sum().backward()
    assert (x.grad[0, 3:] == 0).all() and (x.grad[0, :3] != 0).any()


def test_training_beats_chance_on_the_context_task():
    train, test = context_task(1200, length=8, seed=0).split(1000)
    torch.manual_seed(0)
    model = AttentionClassifier(len(train.vocab), 2, max_len=8)
    before = accuracy(model, test)
    steps = []
    losses = train_classifier(model, train, steps=60, seed=0, callback=steps.append)
    assert len(losses) == 60 and steps == list(range(1, 61))
    assert sum(losses[-10:]) < sum(losses[:10])
    assert accuracy(model, test) > max(0.8, before)


def test_loss_ignores_unlabelled_positions():
    torch.manual_seed(0)
    model = TokenClassifier(5, 2)
    tokens = torch.randint(5, (2, 4))
    targets = torch.full((2, 4), IGNORE)
    targets[:, 1] = torch.tensor([0, 1])
    expected = torch.nn.functional.cross_entropy(model(tokens)[:, 1], targets[:, 1])
    torch.testing.assert_close(loss_on(model, tokens, targets), expected)
