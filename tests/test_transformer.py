"""Tests of labcore.transformer: parity with Hugging Face's GPT-2, hooks, caching, generation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import transformers  # the reference implementation (requirements.txt); never downloads here

from labcore.transformer import GPT, ActivationCache, GPTConfig

VOCAB, N_CTX, D_MODEL, N_LAYER, N_HEAD = 100, 32, 64, 2, 4


def hf_config(**overrides):
    kwargs = dict(
        n_layer=N_LAYER,
        n_head=N_HEAD,
        n_embd=D_MODEL,
        vocab_size=VOCAB,
        n_positions=N_CTX,
        attn_pdrop=0.0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    kwargs.update(overrides)
    return transformers.GPT2Config(**kwargs)


def make_hf(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(hf_config(**overrides)).eval()


@pytest.fixture(scope="module")
def pair():
    hf = make_hf()
    return hf, GPT.from_hf(hf)


@pytest.fixture()
def tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (3, 20), generator=torch.Generator().manual_seed(0))


def small_config(**overrides) -> GPTConfig:
    kwargs = dict(vocab_size=VOCAB, n_ctx=N_CTX, d_model=D_MODEL, n_layer=N_LAYER, n_head=N_HEAD)
    kwargs.update(overrides)
    return GPTConfig(**kwargs)


# ---- configuration -------------------------------------------------------------------------------
def test_config_derives_and_round_trips() -> None:
    cfg = small_config()
    assert cfg.d_mlp == 4 * D_MODEL and cfg.d_head == D_MODEL // N_HEAD and cfg.d_vocab == VOCAB
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    assert dataclasses.replace(cfg, n_layer=3).n_layer == 3
    with pytest.raises(ValueError, match="unknown keys"):
        GPTConfig.from_dict({**cfg.to_dict(), "dropout": 0.1})


@pytest.mark.parametrize(
    "field, value, exc",
    [
        ("vocab_size", 0, ValueError),
        ("n_ctx", -1, ValueError),
        ("d_model", 2.5, TypeError),
        ("n_layer", 0, ValueError),
        ("n_head", 5, ValueError),  # 64 is not divisible by 5
        ("d_mlp", 0, ValueError),
        ("layer_norm_eps", 0.0, ValueError),
        ("activation", "tanh", ValueError),
        ("tie_embeddings", 1, TypeError),
    ],
)
def test_config_validation_names_the_field(field: str, value, exc) -> None:
    with pytest.raises(exc, match=field):
        small_config(**{field: value})


# ---- parity with Hugging Face --------------------------------------------------------------------
def test_logits_match_hugging_face(pair, tokens) -> None:
    hf, model = pair
    with torch.no_grad():
        expected = hf(tokens).logits
        got = model(tokens)
    assert got.shape == (3, 20, VOCAB)
    assert (got - expected).abs().max().item() <= 1e-4


def test_residual_stream_matches_hugging_face(pair, tokens) -> None:
    hf, model = pair
    block_outputs = []
    handles = [
        block.register_forward_hook(
            lambda m, i, o: block_outputs.append(o[0] if isinstance(o, tuple) else o)
        )
        for block in hf.transformer.h
    ]
    try:
        with torch.no_grad():
            out = hf(tokens, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    _, cache = model.run_with_cache(tokens)
    # hidden_states[0] is the embedding, hidden_states[l] (0 < l < n_layer) the output of block l-1;
    # Hugging Face's last entry is taken after ln_f.
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], out.hidden_states[0])
    for layer in range(N_LAYER):
        resid = cache[f"blocks.{layer}.hook_resid_post"]
        assert (resid - block_outputs[layer]).abs().max().item() <= 1e-5
        if layer + 1 < N_LAYER:
            torch.testing.assert_close(resid, out.hidden_states[layer + 1])
            assert torch.equal(resid, cache[f"blocks.{layer + 1}.hook_resid_pre"])
    torch.testing.assert_close(cache["ln_final.hook_normalized"], out.hidden_states[-1])


def test_from_hf_variants() -> None:
    """Untied head, explicit n_inner and another activation are converted too."""
    hf = make_hf(seed=1, tie_word_embeddings=False, n_inner=96, activation_function="gelu")
    model = GPT.from_hf(hf)
    assert model.unembed is not None and model.config.d_mlp == 96
    assert model.config.activation == "gelu" and not model.config.tie_embeddings
    tokens = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(tokens) - hf(tokens).logits).abs().max().item() <= 1e-4


def test_from_hf_keeps_dtype_float64() -> None:
    hf = make_hf(seed=3).double()
    model = GPT.from_hf(hf)
    assert model.embed.weight.dtype == torch.float64
    tokens = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(tokens) - hf(tokens).logits).abs().max().item() <= 1e-10


def test_from_hf_copies_key_by_key(pair) -> None:
    hf, model = pair
    assert GPT.HF_TRANSPOSED == (
        "attn.c_attn.weight",
        "attn.c_proj.weight",
        "mlp.c_fc.weight",
        "mlp.c_proj.weight",
    )
    w_hf = hf.transformer.h[1].attn.c_attn.weight  # Conv1D: (in, out)
    assert torch.equal(model.blocks[1].attn.c_attn.weight, w_hf.T)
    assert model.blocks[1].attn.c_attn.weight.data_ptr() != w_hf.data_ptr()  # a copy
    assert torch.equal(model.W_U, hf.lm_head.weight.T)
    assert model.num_parameters() == sum(p.numel() for p in hf.parameters())


def test_from_hf_rejects_what_it_cannot_convert() -> None:
    with pytest.raises(TypeError, match="hf_model must be a GPT2LMHeadModel"):
        GPT.from_hf(torch.nn.Linear(2, 2))
    hf = make_hf(scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        GPT.from_hf(hf)
    hf = make_hf(activation_function="tanh")
    with pytest.raises(ValueError, match="activation_function"):
        GPT.from_hf(hf)


def test_from_pretrained_loads_through_transformers(tmp_path, monkeypatch, tokens) -> None:
    """Offline: a directory written by save_pretrained stands in for the hub name "gpt2"."""
    hf = make_hf(seed=2)
    hf.save_pretrained(tmp_path)
    sentinel = object()
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda name: sentinel)
    model, tokenizer = GPT.from_pretrained(str(tmp_path))
    assert tokenizer is sentinel and not model.training
    with torch.no_grad():
        assert (model(tokens) - hf(tokens).logits).abs().max().item() <= 1e-4


# ---- forward, batching, validation ---------------------------------------------------------------
def test_batched_equals_unbatched(pair, tokens) -> None:
    _, model = pair
    with torch.no_grad():
        batched = model(tokens)
        for b in range(tokens.shape[0]):
            single = model(tokens[b])  # (pos,) is a batch of one
            assert single.shape == (1, 20, VOCAB)
            torch.testing.assert_close(single[0], batched[b], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model(tokens[b : b + 1]), batched[b : b + 1])


def test_causality(pair, tokens) -> None:
    """Changing a later token never changes earlier logits."""
    _, model = pair
    changed = tokens.clone()
    changed[:, 10] = (changed[:, 10] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.equal(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (torch.zeros(2, 5), TypeError, "tokens must have an integer dtype"),
        ([1, 2, 3], TypeError, "tokens must be a torch.Tensor"),
        (torch.zeros(2, 3, 4, dtype=torch.long), ValueError, r"must have shape \(batch, pos\)"),
        (torch.zeros(1, N_CTX + 1, dtype=torch.long), ValueError, "n_ctx=32"),
        (torch.zeros(1, 0, dtype=torch.long), ValueError, "between 1 and n_ctx"),
        (torch.full((1, 3), VOCAB), ValueError, r"\[0, vocab_size=100\)"),
        (torch.tensor([[-1, 2]]), ValueError, "vocab_size"),
    ],
)
def test_bad_tokens(pair, bad, exc, match) -> None:
    _, model = pair
    with pytest.raises(exc, match=match):
        model(bad)


def test_meta_device(tokens) -> None:
    with torch.device("meta"):
        model = GPT(small_config())
    meta_tokens = tokens.to("meta")
    assert model(meta_tokens).shape == (3, 20, VOCAB)
    logits, cache = model.run_with_cache(meta_tokens)
    assert logits.device.type == "meta"
    assert cache["blocks.1.attn.hook_pattern"].shape == (3, N_HEAD, 20, 20)


def test_gradients_flow(tokens) -> None:
    torch.manual_seed(0)
    model = GPT(small_config())
    loss = torch.nn.functional.cross_entropy(
        model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten()
    )
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert abs(loss.item() - torch.log(torch.tensor(float(VOCAB))).item()) < 0.5  # near uniform


# ---- hooks and cache -----------------------------------------------------------------------------
def test_hook_names_and_cache_shapes(pair, tokens) -> None:
    _, model = pair
    names = model.hook_names()
    assert names[:3] == ["hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre"]
    assert names[-1] == "ln_final.hook_normalized" and len(names) == 3 + 15 * N_LAYER
    logits, cache = model.run_with_cache(tokens)
    assert isinstance(cache, ActivationCache) and list(cache) == names
    torch.testing.assert_close(logits, model(tokens))
    d_head = D_MODEL // N_HEAD
    shapes = {
        "hook_embed": (3, 20, D_MODEL),
        "hook_pos_embed": (3, 20, D_MODEL),
        "blocks.1.attn.hook_q": (3, 20, N_HEAD, d_head),
        "blocks.1.attn.hook_z": (3, 20, N_HEAD, d_head),
        "blocks.1.attn.hook_attn_scores": (3, N_HEAD, 20, 20),
        "blocks.1.attn.hook_pattern": (3, N_HEAD, 20, 20),
        "blocks.1.mlp.hook_pre": (3, 20, 4 * D_MODEL),
        "blocks.1.mlp.hook_post": (3, 20, 4 * D_MODEL),
        "blocks.1.ln2.hook_normalized": (3, 20, D_MODEL),
        "blocks.1.hook_mlp_out": (3, 20, D_MODEL),
    }
    for name, shape in shapes.items():
        assert cache[name].shape == shape, name
    pattern = cache["pattern", 0]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(3, N_HEAD, 20))
    assert (pattern.triu(1) == 0).all()  # causal
    assert torch.equal(cache["normalized", 1, "ln2"], cache["blocks.1.ln2.hook_normalized"])
    assert torch.equal(cache["embed"], cache["hook_embed"])
    assert torch.equal(cache["normalized"], cache["ln_final.hook_normalized"])
    torch.testing.assert_close(
        cache["blocks.0.hook_resid_mid"],
        cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"],
    )
    assert not any(point.has_hooks for point in model._hook_points.values())


def test_names_filter(pair, tokens) -> None:
    _, model = pair
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_post")
    assert list(cache) == ["blocks.0.hook_resid_post"]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    assert list(cache) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    with pytest.raises(ValueError, match="did you mean"):
        model.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_psot"])
    with pytest.raises(KeyError, match="not in the cache"):
        cache["blocks.0.hook_resid_pre"]


def test_zeroing_one_head_changes_logits(pair, tokens) -> None:
    _, model = pair

    def zero_head(z: torch.Tensor, hook) -> torch.Tensor:  # z: (batch, pos, n_heads, d_head)
        z = z.clone()
        z[:, :, 2] = 0.0
        return z

    with torch.no_grad():
        clean = model(tokens)
        ablated = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_z", zero_head)])
        again = model(tokens)
    assert (ablated - clean).abs().max().item() > 1e-3
    assert torch.equal(again, clean)  # the hook is gone


@pytest.mark.parametrize(
    "name", ["blocks.0.attn.hook_z", "blocks.1.hook_resid_mid", "blocks.0.attn.hook_pattern"]
)
def test_identity_hooks_change_nothing(pair, tokens, name: str) -> None:
    _, model = pair
    with torch.no_grad():
        clean = model(tokens)
        same = model.run_with_hooks(tokens, fwd_hooks=[(name, lambda a, hook: a)])
        none = model.run_with_hooks(tokens, fwd_hooks=[(name, lambda a, hook: None)])
    # the pattern hook switches attention from the fused kernel to the written-out formula
    torch.testing.assert_close(same, clean, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(none, clean, atol=1e-6, rtol=1e-6)


def test_hook_sees_its_name_and_filters_select_many(pair, tokens) -> None:
    _, model = pair
    seen = []
    model.run_with_hooks(
        tokens,
        fwd_hooks=[(lambda n: n.endswith("hook_resid_post"), lambda a, h: seen.append(h.name))],
    )
    assert seen == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def test_hooks_removed_after_exception(pair, tokens) -> None:
    _, model = pair

    def boom(activation: torch.Tensor, hook) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.mlp.hook_post", boom)])
    assert not any(point.has_hooks for point in model._hook_points.values())
    with pytest.raises(ValueError, match="fwd_hooks must name hook points"):
        model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", boom), ("nope", boom)])
    assert not any(point.has_hooks for point in model._hook_points.values())
    model(tokens)  # runs cleanly


def test_reset_hooks(pair, tokens) -> None:
    _, model = pair
    model._hook_points["hook_embed"].add_hook(lambda a, h: torch.zeros_like(a))
    assert model._hook_points["hook_embed"].has_hooks
    model.reset_hooks()
    assert not any(point.has_hooks for point in model._hook_points.values())
    for _ in range(3):
        model.run_with_cache(tokens)
    assert len(model._hook_points["hook_embed"]._handles) <= 1  # removed handles are dropped


# ---- generation, saving --------------------------------------------------------------------------
def test_generate(pair, tokens) -> None:
    _, model = pair
    prompt = tokens[:, :5]
    greedy = model.generate(prompt, 4, temperature=0)
    assert greedy.shape == (3, 9) and torch.equal(greedy[:, :5], prompt)
    with torch.no_grad():
        assert torch.equal(greedy[:, 5], model(prompt)[:, -1].argmax(-1))
    assert torch.equal(model.generate(prompt, 4, top_k=1), greedy)
    a = model.generate(prompt, 6, generator=torch.Generator().manual_seed(3))
    b = model.generate(prompt, 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    long = model.generate(tokens[0], N_CTX, temperature=0)  # past n_ctx: the context is cropped
    assert long.shape == (1, 20 + N_CTX)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(prompt, 2, top_k=0)


def test_save_and_load(pair, tokens, tmp_path) -> None:
    _, model = pair
    weights, config = model.save(tmp_path / "small", metadata={"note": "test"})
    assert weights.name == "small.safetensors" and config.name == "small.json"
    loaded = GPT.load(tmp_path / "small.safetensors")
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model(tokens))
    with pytest.raises(ValueError, match="does not exist"):
        GPT.load(tmp_path / "missing")


def test_sinusoidal_positions_formula_and_rotation() -> None:
    from labcore.transformer import sinusoidal_positions

    pe = sinusoidal_positions(50, 16, dtype=torch.float64)
    assert pe.shape == (50, 16)
    t, i = 7, 3
    w = 10000.0 ** (-2 * i / 16)
    assert math.isclose(pe[t, 2 * i].item(), math.sin(t * w), abs_tol=1e-12)
    assert math.isclose(pe[t, 2 * i + 1].item(), math.cos(t * w), abs_tol=1e-12)
    k = 5  # PE[t + k] = PE[t] R_k^T for one block-diagonal rotation R_k, the same for every t
    angle = k * 10000.0 ** (-2 * torch.arange(8, dtype=torch.float64) / 16)
    c, s = angle.cos(), angle.sin()
    R = torch.zeros(16, 16, dtype=torch.float64)
    R[0::2, 0::2] = torch.diag(c)
    R[0::2, 1::2] = torch.diag(s)
    R[1::2, 0::2] = torch.diag(-s)
    R[1::2, 1::2] = torch.diag(c)
    torch.testing.assert_close(pe[:-k] @ R.T, pe[k:])
    assert sinusoidal_positions(3, 4, device="meta").device.type == "meta"
    with pytest.raises(ValueError, match="even"):
        sinusoidal_positions(3, 5)
