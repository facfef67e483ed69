"""Tests of labcore.transcoder: hooks reproduce the MLP, splicing, training properties, metrics."""

from __future__ import annotations

from itertools import pairwise

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from labcore.data.coref import evaluation_set
from labcore.models import load
from labcore.transcoder import (
    TINY_RECIPES,
    TINY_SWEEP,
    Transcoder,
    _write_tiny,
    attribution_graph,
    ce_loss_recovered,
    collect_mlp_io,
    dead_fraction,
    evaluate_transcoder,
    feature_activations,
    feature_connections,
    feature_logit_effects,
    fvu,
    l0,
    l0_at_fvu,
    load_tiny_sweep,
    load_tiny_transcoder,
    next_token_loss,
    plot_feature_dashboard,
    splice_hooks,
    spliced_loss,
    sweep_penalty,
    tiny_coref_data,
    top_activating_examples,
    train_tiny_transcoder,
    train_transcoder,
    zero_ablated_loss,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """One CPU thread (the machine is shared), restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = load("tiny-coref")
    return model, tokenizer


@pytest.fixture(scope="module")
def sentences(tiny):
    _, tokenizer = tiny
    return tiny_coref_data(64, seed=7, tokenizer=tokenizer)  # (tokens, lengths)


@pytest.fixture(scope="module")
def eval_set(tiny):
    return evaluation_set("held_out", 1000, seed=1, tokenizer=tiny[1])


class MLPCopy(nn.Module):
    """A 'transcoder' that is the MLP itself: features are the MLP's hidden activations."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp.act(self.mlp.c_fc(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return self.mlp.c_proj(f)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encode(x)
        return self.decode(f), f


def planted(n=8192, n_true=16, d_in=24, d_out=24, p=0.1, seed=0):
    """Sparse codes ``s`` (each of ``n_true`` features on with probability ``p``, size in [1, 2])
    read through unit directions ``A`` and written through unit directions ``D``:
    ``x = s A``, ``y = s D``. A ReLU transcoder can represent this map exactly."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n_true, d_in, generator=g)
    A = A / A.norm(dim=1, keepdim=True)
    D = torch.randn(n_true, d_out, generator=g)
    D = D / D.norm(dim=1, keepdim=True)
    s = (torch.rand(n, n_true, generator=g) < p) * (1 + torch.rand(n, n_true, generator=g))
    return s @ A, s @ D, s, D


# ---- hooks: the MLP's input and output -----------------------------------------------------------
@pytest.mark.parametrize("layer", [0, 1])
def test_mlp_of_hooked_input_reproduces_hook_mlp_out(tiny, sentences, layer) -> None:
    model, _ = tiny
    tokens, lengths = sentences
    inputs, targets = collect_mlp_io(model, tokens, layer, lengths=lengths, batch_size=10)
    assert inputs.shape == targets.shape == (int(lengths.sum()), model.config.d_model)
    with torch.no_grad():
        assert (model.blocks[layer].mlp(inputs) - targets).abs().max() < 1e-4
    # the kept rows are the real tokens, in (batch, pos) order
    _, cache = model.run_with_cache(tokens)
    first = cache[f"blocks.{layer}.hook_mlp_out"][0, : lengths[0]]
    torch.testing.assert_close(targets[: lengths[0]], first)


def test_collect_mask_equals_lengths_and_none_keeps_all(tiny, sentences) -> None:
    model, _ = tiny
    tokens, lengths = sentences
    mask = torch.arange(tokens.shape[1]) < lengths[:, None]
    a = collect_mlp_io(model, tokens, 1, mask=mask)
    b = collect_mlp_io(model, tokens, 1, lengths=lengths, batch_size=7)
    torch.testing.assert_close(a, b)
    every = collect_mlp_io(model, tokens, 1)[0]
    assert every.shape[0] == tokens.numel()


# ---- splicing and losses -------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [0, 1])
def test_splicing_an_exact_copy_of_the_mlp_leaves_the_loss_unchanged(tiny, eval_set, layer) -> None:
    model, _ = tiny
    copy = MLPCopy(model.blocks[layer].mlp)
    kw = dict(positions=eval_set.lengths - 1, targets=eval_set.answer)
    original = next_token_loss(model, eval_set.tokens, **kw)
    torch.testing.assert_close(spliced_loss(model, copy, layer, eval_set.tokens, **kw), original)
    # every token's next-token loss too, and through the edit/keep_error paths
    tokens = eval_set.tokens[:50]
    full = next_token_loss(model, tokens)
    torch.testing.assert_close(spliced_loss(model, copy, layer, tokens), full)
    hooks = splice_hooks(copy, layer, edit=lambda f: f)
    torch.testing.assert_close(next_token_loss(model, tokens, fwd_hooks=hooks), full)


def test_zero_ablating_an_mlp_clearly_hurts_the_answer_loss(tiny, eval_set) -> None:
    model, _ = tiny
    kw = dict(positions=eval_set.lengths - 1, targets=eval_set.answer)
    original = next_token_loss(model, eval_set.tokens, **kw).item()
    assert original < 0.1
    for layer in (0, 1):
        assert zero_ablated_loss(model, layer, eval_set.tokens, **kw).item() > original + 1.0


def test_next_token_loss_modes_match_a_manual_cross_entropy(tiny, eval_set) -> None:
    model, _ = tiny
    tokens, lengths, answer = eval_set.tokens[:40], eval_set.lengths[:40], eval_set.answer[:40]
    with torch.no_grad():
        logits = model(tokens)
    last = logits[torch.arange(40), lengths - 1]
    expected = nn.functional.cross_entropy(last, answer)
    got = next_token_loss(model, tokens, positions=lengths - 1, targets=answer, batch_size=7)
    torch.testing.assert_close(got, expected)
    targets = torch.full_like(tokens, -100)
    targets[torch.arange(40), lengths - 1] = answer
    torch.testing.assert_close(next_token_loss(model, tokens, targets=targets), expected)
    default = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    torch.testing.assert_close(next_token_loss(model, tokens, batch_size=9), default)


def test_keep_error_with_a_feature_edit_changes_only_that_feature(tiny, eval_set) -> None:
    model, _ = tiny
    transcoder, _ = load_tiny_transcoder(1)
    tokens = eval_set.tokens[:20]
    with torch.no_grad():
        logits = model(tokens)
        same = model.run_with_hooks(tokens, splice_hooks(transcoder, 1, keep_error=True))
        torch.testing.assert_close(same, logits)
        # zeroing every feature without the error term leaves b_dec as the MLP's output
        out = {}
        hooks = splice_hooks(transcoder, 1, edit=torch.zeros_like)
        hooks.append(("blocks.1.hook_mlp_out", lambda y, hook: out.setdefault("y", y)))
        model.run_with_hooks(tokens, hooks)
    torch.testing.assert_close(out["y"], transcoder.b_dec.expand_as(out["y"]))


def test_ce_loss_recovered_identities() -> None:
    assert ce_loss_recovered(0.5, 3.0, 0.5) == 1.0
    assert ce_loss_recovered(0.5, 3.0, 3.0) == 0.0
    assert ce_loss_recovered(0.5, 3.0, 1.75) == pytest.approx(0.5)
    assert ce_loss_recovered(0.5, 3.0, 4.0) < 0  # worse than ablating
    t = ce_loss_recovered(torch.tensor(1.0), torch.tensor(2.0), torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(t, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="ablated must differ"):
        ce_loss_recovered(1.0, 1.0, 1.0)


# ---- metrics -------------------------------------------------------------------------------------
def test_fvu_is_measured_against_the_target() -> None:
    y = torch.randn(500, 8) * torch.arange(1.0, 9.0) + 3.0
    assert fvu(y.mean(0).expand_as(y), y).item() == pytest.approx(1.0)
    assert fvu(y, y).item() == 0.0
    assert fvu(y + 0.1 * torch.randn(500, 8), y).item() == pytest.approx(
        (0.01 * 8) / y.var(0, unbiased=False).sum().item(), rel=0.15
    )
    # batch and position axes are flattened: (batch, pos, d) gives the same value as (n, d)
    y_hat = y + torch.randn_like(y)
    torch.testing.assert_close(fvu(y_hat.reshape(50, 10, 8), y.reshape(50, 10, 8)), fvu(y_hat, y))


def test_fvu_on_the_tiny_model_uses_the_mlp_output(tiny, sentences) -> None:
    model, _ = tiny
    tokens, lengths = sentences
    inputs, targets = collect_mlp_io(model, tokens, 1, lengths=lengths)
    copy = MLPCopy(model.blocks[1].mlp)
    with torch.no_grad():
        assert fvu(copy(inputs)[0], targets).item() < 1e-10
        assert fvu(inputs, targets).item() > 0.5  # the MLP's input is not its output


def test_l0_and_dead_fraction() -> None:
    f = torch.tensor([[0.0, 1.0, 2.0, 0.0], [0.0, 0.5, 0.0, 0.0], [0.0, 3.0, 1.0, 0.0]])
    assert l0(f).item() == pytest.approx(5 / 3)
    assert dead_fraction(f).item() == 0.5
    assert l0(f.reshape(1, 3, 4)).item() == pytest.approx(5 / 3)


def test_l0_at_fvu_interpolates_the_curve() -> None:
    curve = [{"fvu": 0.3, "l0": 2.0}, {"fvu": 0.1, "l0": 8.0}, {"fvu": 0.01, "l0": 32.0}]
    assert l0_at_fvu(curve, 0.1) == pytest.approx(8.0)
    assert l0_at_fvu(curve, 0.2) == pytest.approx(4.0)  # geometric mean of 2 and 8
    assert l0_at_fvu(curve, 0.5) != l0_at_fvu(curve, 0.5)  # nan outside the range


# ---- the transcoder ------------------------------------------------------------------------------
def test_transcoder_forward_shapes_and_definition() -> None:
    tc = Transcoder(8, 32, 6)
    x = torch.randn(3, 5, 8)
    y_hat, f = tc(x)
    assert y_hat.shape == (3, 5, 6) and f.shape == (3, 5, 32) and (f >= 0).all()
    torch.testing.assert_close(f, torch.relu(x @ tc.W_enc + tc.b_enc))
    torch.testing.assert_close(y_hat, f @ tc.W_dec + tc.b_dec)
    torch.testing.assert_close(tc.W_dec.norm(dim=1), torch.ones(32))


def test_topk_activation_keeps_exactly_k_features() -> None:
    tc = Transcoder(16, 64, 16, activation="topk", k=5)
    f = tc.encode(torch.randn(200, 16))  # about half the 64 pre-activations are positive
    assert ((f > 0).sum(-1) == 5).all()
    with torch.no_grad():
        tc.b_enc.fill_(-100.0)  # no pre-activation is positive: at most k, here none
    assert (tc.encode(torch.randn(20, 16)) == 0).all()
    x, y, _, _ = planted(n=1024)
    trained, history = train_transcoder(
        x, y, 32, l1_coeff=0.0, activation="topk", k=3, steps=50, seed=0, progress=False
    )
    assert max(history.l0) <= 3 and trained.k == 3


def test_decoder_rows_have_unit_norm_after_every_step(monkeypatch) -> None:
    seen = []
    forward = Transcoder.forward

    def spy(self, x):
        seen.append((self.W_dec.detach().norm(dim=1) - 1).abs().max().item())
        return forward(self, x)

    monkeypatch.setattr(Transcoder, "forward", spy)
    x, y, _, _ = planted(n=512)
    tc, history = train_transcoder(
        x, y, 32, l1_coeff=0.1, steps=30, lr=1e-2, batch_size=64, seed=0, progress=False
    )
    assert len(seen) == 30 and max(seen) < 1e-5  # at the start of every step
    assert (tc.W_dec.norm(dim=1) - 1).abs().max() < 1e-5  # and after the last
    for name in ("loss", "mse", "penalty", "l0", "fvu", "dead_fraction"):
        assert len(getattr(history, name)) == 30
    assert history.tokens_per_second > 0


def test_l1_recovers_a_planted_sparse_structure() -> None:
    x, y, s, D = planted()
    true_l0 = (s > 0).sum(-1).float().mean().item()  # about 1.6
    tc, history = train_transcoder(
        x, y, 16, l1_coeff=0.1, steps=1500, lr=3e-3, batch_size=256, seed=0, progress=False
    )
    with torch.no_grad():
        y_hat, f = tc(x)
    assert fvu(y_hat, y).item() < 0.01
    assert 0.8 * true_l0 <= l0(f).item() <= 1.3 * true_l0
    cos = D @ tc.W_dec.detach().T  # (n_true, d_hidden)
    assert cos.max(1).values.min() > 0.95  # every planted direction is found
    match = cos.argmax(1)  # and its feature fires where the planted one does
    agree = ((f[:, match] > 0) == (s > 0)).float().mean().item()
    assert agree > 0.97
    assert history.mse[-1] < history.mse[0]


def test_l1_is_sparse_and_l2_is_not_at_similar_fidelity() -> None:
    x, y, _, _ = planted()
    kw = dict(steps=1500, lr=3e-3, batch_size=256, seed=0, progress=False)
    rows = {}
    for penalty in ("l1", "l2"):
        tc, _ = train_transcoder(x, y, 64, l1_coeff=0.1, penalty=penalty, **kw)
        with torch.no_grad():
            y_hat, f = tc(x)
        rows[penalty] = (fvu(y_hat, y).item(), l0(f).item())
    (fvu1, l0_1), (fvu2, l0_2) = rows["l1"], rows["l2"]
    assert fvu1 < 0.01 and fvu2 < 0.01
    assert l0_1 < 0.1 * 64  # a small fraction of d_hidden
    assert l0_2 > 3 * l0_1  # the squared penalty leaves many small activations alive


def test_sweep_penalty_trades_fidelity_for_sparsity() -> None:
    x, y, _, _ = planted(n=2048)
    curve = sweep_penalty(
        x, y, 32, [0.01, 1.0], steps=300, lr=3e-3, batch_size=256, seed=0, progress=False
    )
    assert [row["l1_coeff"] for row in curve] == [0.01, 1.0]
    assert curve[1]["l0"] < curve[0]["l0"] and curve[1]["fvu"] > curve[0]["fvu"]


def test_training_is_reproducible_with_a_seed() -> None:
    x, y, _, _ = planted(n=512)
    a, ha = train_transcoder(x, y, 16, steps=20, seed=3, progress=False)
    b, hb = train_transcoder(x, y, 16, steps=20, seed=3, progress=False)
    torch.testing.assert_close(a.state_dict(), b.state_dict())
    assert ha == hb


def test_save_and_load_round_trip(tmp_path) -> None:
    tc = Transcoder(8, 16, 4, activation="topk", k=2)
    tc.save(tmp_path / "tc", metadata={"note": "x"})
    loaded, record = Transcoder.load(tmp_path / "tc.safetensors")
    assert record["note"] == "x" and loaded.k == 2
    torch.testing.assert_close(loaded.state_dict(), tc.state_dict())


# ---- the shipped transcoders of the tiny model ---------------------------------------------------
@pytest.mark.parametrize("layer", [1, 0])
def test_shipped_transcoder_meets_the_acceptance_numbers(tiny, eval_set, layer) -> None:
    model, _ = tiny
    transcoder, record = load_tiny_transcoder(layer)
    m = evaluate_transcoder(
        model,
        transcoder,
        layer,
        eval_set.tokens,
        positions=eval_set.lengths - 1,
        targets=eval_set.answer,
        lengths=eval_set.lengths,
    )
    assert m["fvu"] <= 0.1 and m["fvu_at_positions"] <= 0.1
    assert m["l0"] <= 32 and m["l0_at_positions"] <= 32
    assert m["loss_zero_ablated"] > m["loss_original"] + 1.0  # ablating clearly hurts
    assert m["ce_loss_recovered"] >= 0.95
    for key, value in record["metrics"].items():  # the model card's numbers are reproducible
        if key in m:
            assert m[key] == pytest.approx(value, abs=1e-3)


def test_train_tiny_transcoder_small_run_writes_loadable_files(tmp_path) -> None:
    recipe = {
        **TINY_RECIPES[1],
        "n_sentences": 200,
        "steps": 20,
        "n_eval": 50,
        "d_hidden": 32,
        "l1_warmup_steps": 10,
    }
    transcoder, record = train_tiny_transcoder(1, recipe=recipe, progress=False)
    assert record["n_train_tokens"] > 0 and set(record["metrics"]) >= {"fvu", "ce_loss_recovered"}
    paths = _write_tiny(transcoder, record, tmp_path)
    assert "CE loss recovered" in paths[2].read_text()
    loaded, _ = Transcoder.load(paths[0])
    torch.testing.assert_close(loaded.state_dict(), transcoder.state_dict())


# ---- reading features ----------------------------------------------------------------------------
def test_feature_activations_top_examples_and_dashboard(tiny, eval_set) -> None:
    model, tokenizer = tiny
    transcoder, _ = load_tiny_transcoder(1)
    tokens = eval_set.tokens[:100]
    features = feature_activations(model, transcoder, 1, tokens, batch_size=33)
    assert features.shape == (*tokens.shape, transcoder.d_hidden)
    feature = int(features.flatten(0, 1).gt(0).sum(0).argmax())  # the most frequent one
    examples = top_activating_examples(features, tokens, feature, 5, tokenizer=tokenizer)
    values = [e.activation for e in examples]
    assert len(examples) == 5 and values == sorted(values, reverse=True)
    top = examples[0]
    assert features[top.batch, top.position, feature].item() == pytest.approx(values[0])
    word = tokenizer.decode([int(tokens[top.batch, top.position])])
    assert top.context.endswith(f"[[{word}]]")

    effects = feature_logit_effects(model, transcoder, feature)
    assert effects.shape == (model.config.vocab_size,)
    d = transcoder.W_dec[feature].detach()
    manual = ((d - d.mean()) * model.ln_final.weight.detach()) @ model.W_U.detach()
    torch.testing.assert_close(effects, manual)

    fig = plot_feature_dashboard(
        feature, features[..., feature], effects, tokenizer=tokenizer, examples=examples, n_tokens=5
    )
    titles = [ax.get_title() for ax in fig.axes]
    assert any(f"feature {feature}" in t for t in titles)
    plt.close(fig)


def test_feature_connections_is_a_decoder_encoder_product() -> None:
    up, down = Transcoder(8, 10, 8), Transcoder(8, 12, 8)
    torch.testing.assert_close(feature_connections(up, down), up.W_dec @ down.W_enc)
    gamma = torch.rand(8) + 0.5
    w = up.W_dec - up.W_dec.mean(-1, keepdim=True)
    torch.testing.assert_close(feature_connections(up, down, gamma), (w * gamma) @ down.W_enc)
    # a feature writing a constant vector has no effect through the (centring) LayerNorm
    with torch.no_grad():
        up.W_dec[0] = 8**-0.5
    assert feature_connections(up, down, gamma)[0].abs().max() < 1e-6


# ---- validation and devices ----------------------------------------------------------------------
def test_bad_arguments_raise_value_errors(tiny, sentences) -> None:
    model, _ = tiny
    tokens, lengths = sentences
    tc = Transcoder(64, 32, 64)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 64\)"):
        tc.encode(torch.randn(3, 65))
    with pytest.raises(ValueError, match=r"features must have shape \(\.\.\., 32\)"):
        tc.decode(torch.randn(3, 31))
    with pytest.raises(ValueError, match="y_hat must have the shape of y"):
        fvu(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="same number of tokens"):
        train_transcoder(torch.randn(10, 4), torch.randn(9, 4), 8, steps=1, progress=False)
    with pytest.raises(ValueError, match="inputs must have 2 dimensions"):
        train_transcoder(torch.randn(10, 2, 4), torch.randn(10, 4), 8, steps=1, progress=False)
    with pytest.raises(ValueError, match="penalty must be one of"):
        train_transcoder(torch.randn(10, 4), torch.randn(10, 4), 8, penalty="l0", progress=False)
    with pytest.raises(ValueError, match="l1_coeff must be a non-negative"):
        train_transcoder(torch.randn(10, 4), torch.randn(10, 4), 8, l1_coeff=-1.0, progress=False)
    with pytest.raises(ValueError, match="k must be given"):
        Transcoder(4, 8, 4, activation="topk")
    with pytest.raises(ValueError, match="k must be <= d_hidden"):
        Transcoder(4, 8, 4, activation="topk", k=9)
    with pytest.raises(ValueError, match="k is only used"):
        Transcoder(4, 8, 4, k=2)
    with pytest.raises(ValueError, match="activation must be one of"):
        Transcoder(4, 8, 4, activation="gelu")
    with pytest.raises(ValueError, match=r"layer must be in \[0, 1\]"):
        collect_mlp_io(model, tokens, 2)
    with pytest.raises(ValueError, match="mask must have the shape of tokens"):
        collect_mlp_io(model, tokens, 0, mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at most one of mask and lengths"):
        collect_mlp_io(model, tokens, 0, mask=tokens > 0, lengths=lengths)
    with pytest.raises(ValueError, match=r"positions must have shape \(64,\)"):
        next_token_loss(model, tokens, positions=lengths[:3], targets=lengths)
    with pytest.raises(ValueError, match="targets must have the shape of tokens"):
        next_token_loss(model, tokens, targets=tokens[:, :3])
    with pytest.raises(ValueError, match="feature must be < d_hidden"):
        feature_logit_effects(model, tc, 32)
    with pytest.raises(ValueError, match="features must have shape"):
        top_activating_examples(torch.rand(2, 3, 4), torch.zeros(2, 4, dtype=torch.long), 0)


def test_public_functions_on_meta_tensors() -> None:
    tc = Transcoder(8, 32, 6).to("meta")
    x = torch.empty(4, 5, 8, device="meta")
    y_hat, f = tc(x)
    assert y_hat.device.type == f.device.type == "meta" and f.shape == (4, 5, 32)
    topk = Transcoder(8, 32, 6, activation="topk", k=4).to("meta")
    assert topk.encode(x).device.type == "meta"
    for value in (fvu(y_hat, torch.empty(4, 5, 6, device="meta")), l0(f), dead_fraction(f)):
        assert value.device.type == "meta" and value.ndim == 0
    tc.normalize_decoder_()
    assert tc.W_dec.device.type == "meta"
    up = Transcoder(6, 4, 8).to("meta")
    assert feature_connections(up, tc).device.type == "meta"


def test_losses_and_collection_on_a_meta_gpt() -> None:
    from labcore.transformer import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=50, n_ctx=16, d_model=32, n_layer=2, n_head=4)).to("meta")
    tokens = torch.zeros(3, 10, dtype=torch.long, device="meta")
    positions = torch.zeros(3, dtype=torch.long, device="meta")
    answer = torch.zeros(3, dtype=torch.long, device="meta")
    tc = Transcoder(32, 64, 32).to("meta")
    inputs, targets = collect_mlp_io(model, tokens, 1, batch_size=2)
    assert inputs.device.type == "meta" and inputs.shape == targets.shape == (30, 32)
    for loss in (
        next_token_loss(model, tokens, batch_size=2),
        zero_ablated_loss(model, 0, tokens, positions=positions, targets=answer),
        spliced_loss(model, tc, 1, tokens, positions=positions, targets=answer, batch_size=2),
    ):
        assert loss.device.type == "meta" and loss.ndim == 0
    assert feature_logit_effects(model, tc, 3).shape == (50,)


def test_same_functions_on_a_random_gpt2_style_model() -> None:
    """The Colab path (GPT-2 small) uses the same code; here a random untied GPT stands in."""
    from labcore.transformer import GPT, GPTConfig

    model = GPT(
        GPTConfig(vocab_size=60, n_ctx=16, d_model=32, n_layer=3, n_head=4, tie_embeddings=False)
    ).eval()
    tokens = torch.randint(0, 60, (40, 12), generator=torch.Generator().manual_seed(0))
    inputs, targets = collect_mlp_io(model, tokens, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.blocks[1].mlp(inputs), targets)
    tc, _ = train_transcoder(
        inputs,
        targets,
        64,
        l1_coeff=1e-4,
        steps=100,
        lr=3e-3,
        batch_size=128,
        seed=0,
        progress=False,
    )
    m = evaluate_transcoder(
        model, tc, 1, tokens, positions=torch.full((40,), 5), targets=tokens[:, 6]
    )
    assert set(m) >= {"fvu", "l0", "loss_spliced", "ce_loss_recovered", "fvu_at_positions"}
    effects = feature_logit_effects(model, tc, 0)
    d = tc.W_dec[0].detach()
    torch.testing.assert_close(
        effects, ((d - d.mean()) * model.ln_final.weight) @ model.unembed.weight.T
    )


def _double_tiny():
    model, _ = load("tiny-coref")
    transcoders = {layer: load_tiny_transcoder(layer)[0].double() for layer in (0, 1)}
    return model.double(), transcoders


def test_attribution_graph_replacement_model_is_exact_and_edges_are_derivatives(eval_set) -> None:
    model, transcoders = _double_tiny()
    n = int(eval_set.lengths[0])
    p = n - 1
    prompt = eval_set.tokens[:1, :n]
    answer, distractor = int(eval_set.answer[0]), int(eval_set.distractor[0])

    def metric(logits):
        return logits[0, p, answer] - logits[0, p, distractor]

    graph = attribution_graph(model, transcoders, prompt, metric, p, k=4)
    with torch.no_grad():
        assert graph.metric == pytest.approx(metric(model(prompt)).item(), abs=1e-9)
    eps = 1e-4

    def scaled(layer, feature):  # the metric with one feature at p scaled by (1 + eps)
        def edit(f):
            f = f.clone()
            f[0, p, feature] *= 1 + eps
            return f

        hooks = splice_hooks(transcoders[layer], layer, edit=edit, keep_error=True)
        with torch.no_grad():
            return metric(model.run_with_hooks(prompt, fwd_hooks=hooks)).item()

    # last layer: its features reach the metric only directly, so the attribution is the total effect
    for j in graph.activations[1][p].topk(3).indices.tolist():
        effect = (scaled(1, j) - graph.metric) / eps
        assert effect == pytest.approx(graph.to_metric[1][p, j].item(), rel=1e-3, abs=1e-6)
    # edges from layer 0 to the pre-activations of layer-1 targets, by finite differences
    i = int(graph.activations[0][p].argmax())
    store = {}

    def edit0(f):
        f = f.clone()
        f[0, p, i] *= 1 + eps
        return f

    def read_pre(x, hook):
        store["z"] = x @ transcoders[1].W_enc + transcoders[1].b_enc

    for hooks in ([], splice_hooks(transcoders[0], 0, edit=edit0, keep_error=True)):
        with torch.no_grad():
            model.run_with_hooks(
                prompt, fwd_hooks=hooks + [("blocks.1.ln2.hook_normalized", read_pre)]
            )
        store.setdefault("runs", []).append(store["z"][0, p, graph.targets[1]])
    finite = (store["runs"][1] - store["runs"][0]) / eps
    torch.testing.assert_close(finite, graph.edges[(0, 1)][p, i], rtol=1e-3, atol=1e-6)
    assert graph.edges[(0, 1)].shape == (n, transcoders[0].d_hidden, 4)


def test_attribution_graph_rejects_bad_input(tiny, eval_set) -> None:
    model, _ = tiny
    transcoders = {1: load_tiny_transcoder(1)[0]}

    def metric(logits):
        return logits[0, -1, 0]

    with pytest.raises(ValueError, match="one prompt"):
        attribution_graph(model, transcoders, eval_set.tokens[:2], metric, 3)
    with pytest.raises(ValueError, match="position"):
        attribution_graph(model, transcoders, eval_set.tokens[:1], metric, 99)
    with pytest.raises(ValueError, match="at least one layer"):
        attribution_graph(model, {}, eval_set.tokens[:1], metric, 3)
    with pytest.raises(ValueError, match="0-d"):
        attribution_graph(model, transcoders, eval_set.tokens[:1], lambda lg: lg[0, -1], 3)


def test_shipped_sweep_has_l1_sparser_than_l2_at_matched_fidelity() -> None:
    sweep = load_tiny_sweep()
    assert sweep["sweep"] == TINY_SWEEP
    curves = sweep["curves"]
    assert [row["l1_coeff"] for row in curves["l1"]] == TINY_SWEEP["grids"]["l1"]
    for name in ("l1", "l2"):  # more penalty: sparser and less faithful
        rows = curves[name]
        assert all(a["l0"] > b["l0"] for a, b in pairwise(rows))
        assert all(a["fvu"] < b["fvu"] for a, b in pairwise(rows))
    l1, l2 = l0_at_fvu(curves["l1"], 0.02), l0_at_fvu(curves["l2"], 0.02)
    assert l1 < l2 / 4


def test_top_activating_examples_drop_repeated_contexts() -> None:
    # prompt 1 repeats prompt 0's context, so its token ties with prompt 0's: shown once
    tokens = torch.tensor([[1, 5, 6, 7], [1, 5, 6, 7], [1, 8, 6, 9]])
    features = torch.zeros(3, 4, 2)
    features[0, 2, 1] = features[1, 2, 1] = 3.0
    features[2, 2, 1], features[2, 3, 1], features[0, 1, 1] = 2.0, 1.0, 0.5
    distinct = top_activating_examples(features, tokens, 1, k=3)
    assert [e.activation for e in distinct] == [3.0, 2.0, 1.0]
    assert len({e.context for e in distinct}) == 3
    assert [(e.batch, e.position) for e in distinct][1:] == [(2, 2), (2, 3)]
    repeated = top_activating_examples(features, tokens, 1, k=3, distinct=False)
    assert [e.activation for e in repeated] == [3.0, 3.0, 2.0]
    assert repeated[0].context == repeated[1].context
    assert len(top_activating_examples(features, tokens, 1, k=10)) == 4  # all active, distinct
    assert top_activating_examples(features, tokens, 0, k=3) == []  # never active
