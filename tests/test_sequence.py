"""Tests of sagan_edu.sequence: the toy tasks, the four sequence models, and the training loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sagan_edu.sequence import (
    IGNORE,
    AttentionClassifier,
    LSTMClassifier,
    MeanPoolClassifier,
    TokenClassifier,
    accuracy,
    context_task,
    gradient_norm,
    long_range_task,
    loss_on,
    nearest_topic_task,
    train_classifier,
)

RIVER = {"river", "fish", "boat", "water", "shore"}
MONEY = {"money", "loan", "cash", "account", "deposit"}


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


def test_nearest_topic_task_label_is_the_nearer_topic_word():
    task = nearest_topic_task(300, length=10, seed=2)
    assert task.tokens.shape == task.targets.shape == (300, 10)
    assert task.classes == ["river", "money"]
    for i in range(len(task)):  # a plain Python reading of each sentence
        words = task.words(i)
        assert words.count("bank") == 1
        river = [j for j, w in enumerate(words) if w in RIVER]
        money = [j for j, w in enumerate(words) if w in MONEY]
        assert len(river) == len(money) == 1, "exactly one word of each topic"
        bank = words.index("bank")
        d_river, d_money = abs(river[0] - bank), abs(money[0] - bank)
        assert d_river != d_money, "never a tie"
        labelled = [j for j in range(10) if task.targets[i, j] != IGNORE]
        assert labelled == [bank]
        assert task.classes[task.targets[i, bank]] == ("river" if d_river < d_money else "money")
    labels = task.targets[task.targets != IGNORE]
    assert 0.35 < labels.float().mean() < 0.65, "both classes about equally often"
    assert torch.equal(task.tokens, nearest_topic_task(300, length=10, seed=2).tokens)


def test_long_range_task_with_random_position():
    task = long_range_task(400, length=12, num_classes=4, seed=0, random_position=True)
    is_class = task.tokens < 4  # (N, L): class tokens are ids 0 … 3
    assert (is_class.sum(dim=1) == 1).all(), "one class token per sequence"
    where = is_class.float().argmax(dim=1)
    assert torch.equal(task.tokens[torch.arange(400), where], task.targets[:, -1])
    assert (task.tokens[:, -1] == task.vocab.index("?")).all()
    counts = np.bincount(where.numpy(), minlength=12)
    assert counts[11] == 0 and (counts[:11] > 0).all(), "every position but the last is used"
    first = long_range_task(400, length=12, num_classes=4, seed=0)
    assert (first.tokens[:, 0] < 4).all() and not (task.tokens[:, 0] < 4).all()


def test_task_arguments_are_checked():
    with pytest.raises(ValueError, match="length"):
        context_task(10, length=1)
    with pytest.raises(ValueError, match="num_classes"):
        long_range_task(10, length=5, num_classes=1)
    with pytest.raises(
        ValueError, match=r"length must be a whole number ≥ 4 \(room for 'bank' and two topic"
    ):
        nearest_topic_task(10, length=3)


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


@pytest.mark.parametrize("kind", ["token", "mean", "lstm", "bilstm", "attention"])
def test_models_share_the_embed_interface(kind):
    torch.manual_seed(0)
    model = {
        "token": TokenClassifier(7, 2),
        "mean": MeanPoolClassifier(7, 2),
        "lstm": LSTMClassifier(7, 2),
        "bilstm": LSTMClassifier(7, 2, bidirectional=True),
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


def test_bidirectional_lstm_reads_both_ways():
    torch.manual_seed(0)
    model = LSTMClassifier(7, 2, bidirectional=True)
    x = model.embed(torch.randint(7, (1, 5))).detach().requires_grad_()
    model.from_embeddings(x)[0, 2].sum().backward()
    assert (x.grad[0].norm(dim=-1) > 0).all(), "position 2 depends on every position"


def test_mean_pool_classifier_sees_which_words_but_not_where():
    torch.manual_seed(0)
    model = MeanPoolClassifier(9, 3, embed_dim=4)
    tokens = torch.tensor([[1, 2, 3, 4, 5]])
    # Reference: the MLP applied by hand to [e_i, mean of all e_j], in float64.
    e = model.token_embedding.weight.detach().double()[tokens[0]]  # (5, 4)
    features = torch.cat([e, e.mean(dim=0, keepdim=True).expand(5, 4)], dim=1)  # (5, 8)
    first, last = model.mlp[0], model.mlp[2]
    hidden = features @ first.weight.double().T + first.bias.double()
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))  # exact GELU
    expected = hidden @ last.weight.double().T + last.bias.double()  # (5, 3)
    torch.testing.assert_close(model(tokens)[0].double(), expected, atol=1e-5, rtol=1e-5)
    # Swapping two other words leaves position 0's logits unchanged: no sense of order.
    swapped = torch.tensor([[1, 5, 3, 4, 2]])
    torch.testing.assert_close(model(swapped)[0, 0], model(tokens)[0, 0])


def _lstm_reference(model: LSTMClassifier, x: torch.Tensor) -> torch.Tensor:
    """Hidden states (L, H) of a left-to-right LSTM over x (L, E), step by step in float64.

    The equations of the LSTM as PyTorch documents them, gates stacked (input, forget, cell,
    output): c_t = f_t c_{t-1} + i_t g_t, h_t = o_t tanh(c_t).
    """
    lstm = model.lstm
    w_ih, w_hh = lstm.weight_ih_l0.double(), lstm.weight_hh_l0.double()
    bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).double()
    H = lstm.hidden_size
    h, c, states = torch.zeros(H, dtype=torch.float64), torch.zeros(H, dtype=torch.float64), []
    for x_t in x.double():
        z = w_ih @ x_t + w_hh @ h + bias  # (4H,)
        i, f = torch.sigmoid(z[:H]), torch.sigmoid(z[H : 2 * H])
        g, o = torch.tanh(z[2 * H : 3 * H]), torch.sigmoid(z[3 * H :])
        c = f * c + i * g
        h = o * torch.tanh(c)
        states.append(h)
    return torch.stack(states)


def test_forget_bias_sets_the_forget_gate_of_the_documented_lstm():
    torch.manual_seed(0)
    model = LSTMClassifier(7, 2, embed_dim=3, hidden_size=4, forget_bias=3.0)
    H = 4
    bias = (model.lstm.bias_ih_l0 + model.lstm.bias_hh_l0).detach()
    torch.testing.assert_close(bias[H : 2 * H], torch.full((H,), 3.0))
    default = LSTMClassifier(7, 2, embed_dim=3, hidden_size=4)
    assert default.lstm.bias_ih_l0[H : 2 * H].abs().max() <= 1 / math.sqrt(H), "PyTorch's init"
    # The model's states agree with the float64 step-by-step LSTM built on the same slices.
    x = torch.randn(6, 3)
    states, _ = model.lstm(x[None])
    torch.testing.assert_close(states[0].double(), _lstm_reference(model, x), atol=1e-5, rtol=0)
    # With zero input weights and zero state the forget gate reads sigmoid(3) ≈ 0.953.
    with torch.no_grad():
        model.lstm.weight_ih_l0.zero_()
        model.lstm.weight_hh_l0.zero_()
    z = (model.lstm.bias_ih_l0 + model.lstm.bias_hh_l0)[H : 2 * H]
    assert torch.allclose(torch.sigmoid(z), torch.full((H,), 1 / (1 + math.exp(-3.0))))


def test_forget_bias_applies_to_both_directions():
    model = LSTMClassifier(7, 2, hidden_size=5, bidirectional=True, forget_bias=2.0)
    for suffix in ("_l0", "_l0_reverse"):
        total = getattr(model.lstm, "bias_ih" + suffix) + getattr(model.lstm, "bias_hh" + suffix)
        torch.testing.assert_close(total[5:10].detach(), torch.full((5,), 2.0))


def test_gradient_norm_is_the_norm_of_all_gradients():
    torch.manual_seed(0)
    model = TokenClassifier(5, 2)
    assert gradient_norm(model) == 0.0
    loss_on(model, torch.randint(5, (4, 3)), torch.randint(2, (4, 3))).backward()
    flat = np.concatenate([p.grad.numpy().ravel() for p in model.parameters()])
    assert gradient_norm(model) == pytest.approx(float(np.linalg.norm(flat)), rel=1e-5)


@pytest.mark.parametrize("clip", [None, 0.5])
def test_train_classifier_clips_only_when_asked(clip):
    train = context_task(200, length=6, seed=0)
    torch.manual_seed(0)
    model = TokenClassifier(len(train.vocab), 2)
    with torch.no_grad():
        model.mlp[2].weight.mul_(100)  # large logits: large gradients, far above 1
    norms = []

    def record(step: int) -> None:
        norms.append(gradient_norm(model))

    train_classifier(model, train, steps=5, lr=1e-4, clip_grad_norm=clip, callback=record)
    if clip is None:
        assert min(norms) > 1, "unclipped gradients stay large (nothing clips them to 1)"
    else:
        assert norms == pytest.approx([0.5] * 5, rel=1e-4), "clipped to exactly 0.5"


def test_train_classifier_rejects_a_bad_clip_value():
    model = TokenClassifier(5, 2)
    with pytest.raises(ValueError, match="clip_grad_norm"):
        train_classifier(model, context_task(10, length=4), steps=1, clip_grad_norm=0.0)


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


# ---------------------------------------------------------------------------------------------
# Bad arguments: one ValueError naming the argument, not an error from inside torch
# ---------------------------------------------------------------------------------------------


def bad_sequence_calls() -> dict:
    from sagan_edu import sequence

    task = sequence.context_task(32)
    model = sequence.TokenClassifier(len(task.vocab), len(task.classes))
    train = sequence.train_classifier
    return {
        "context_task(2.5)": (lambda: sequence.context_task(2.5), r"n must be a whole number ≥ 1"),
        "context_task(-1)": (lambda: sequence.context_task(-1), r"n must be .* got -1"),
        "steps=0": (lambda: train(model, task, steps=0), r"steps must be a whole number ≥ 1"),
        "steps=2.5": (lambda: train(model, task, steps=2.5), r"steps must be .* got 2.5"),
        "batch_size=0": (lambda: train(model, task, batch_size=0), r"batch_size must be"),
        "lr=-1": (lambda: train(model, task, lr=-1), r"lr must be a positive number, got -1"),
        "task=list": (lambda: train(model, [1, 2]), r"task must be a SequenceTask .*got list"),
        "model too small": (
            lambda: train(sequence.TokenClassifier(3, 1), task, steps=1),
            r"does not fit the task \(23 words, 2 classes\).*vocab_size=len\(task.vocab\)",
        ),
        "accuracy(batch_size=0)": (
            lambda: sequence.accuracy(model, task, batch_size=0),
            r"batch_size must be a whole number ≥ 1, got 0",
        ),
        "split(all)": (lambda: task.split(32), r"n_train=32 leaves nothing to hold out of 32"),
    }


@pytest.mark.parametrize("name", list(bad_sequence_calls()))
def test_sequence_functions_reject_bad_arguments_clearly(name):
    call, message = bad_sequence_calls()[name]
    with pytest.raises(ValueError, match=message):
        call()


def test_the_fit_check_leaves_the_random_state_and_training_mode_alone():
    from sagan_edu import sequence

    task = sequence.context_task(16)
    model = sequence.TokenClassifier(len(task.vocab), len(task.classes)).train()
    state = torch.get_rng_state()
    sequence.accuracy(model, task)
    assert torch.equal(torch.get_rng_state(), state) and model.training
