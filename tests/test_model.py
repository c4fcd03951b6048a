import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from scalinglab.errors import UserError
from scalinglab.model.gpt import GPT, GPTConfig

CFG = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_embd=16, n_head=2)


def build(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    model = GPT(cfg)
    # torch's defaults leave the norm gains at 1; randomise everything so that tests see
    # every parameter at work
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3 if p.ndim > 1 else 1.0)
    return model


def tokens(B=3, T=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, CFG.vocab_size, (B, T), generator=g)


def test_shapes_and_loss_is_mean_cross_entropy():
    model = build()
    idx, tgt = tokens(), tokens(seed=2)
    logits, loss = model(idx, tgt)
    assert logits.shape == (3, 16, 64)
    want = F.cross_entropy(logits.reshape(-1, 64), tgt.reshape(-1))
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    assert model(idx)[1] is None
    # targets of -1 are ignored
    tgt2 = tgt.clone()
    tgt2[:, :8] = -1
    want2 = F.cross_entropy(logits[:, 8:].reshape(-1, 64), tgt[:, 8:].reshape(-1))
    assert model(idx, tgt2)[1].item() == pytest.approx(want2.item(), rel=1e-6)


def test_causal_future_tokens_do_not_change_past_logits():
    model = build()
    idx = tokens()
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % CFG.vocab_size
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_shorter_sequences_and_too_long():
    model = build()
    assert model(tokens(T=5))[0].shape == (3, 5, 64)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_parameter_names_and_kinds():
    kinds = build().parameter_kinds()
    want = {
        "transformer.wte.weight": "embedding",
        "transformer.wpe.weight": "position",
        "transformer.ln_f.weight": "vector",
        "lm_head.weight": "readout",
    }
    for i in range(2):
        want |= {
            f"transformer.h.{i}.ln_1.weight": "vector",
            f"transformer.h.{i}.attn.c_attn.weight": "hidden",
            f"transformer.h.{i}.attn.c_proj.weight": "hidden",
            f"transformer.h.{i}.ln_2.weight": "vector",
            f"transformer.h.{i}.mlp.c_fc.weight": "hidden",
            f"transformer.h.{i}.mlp.c_proj.weight": "hidden",
        }
    assert kinds == want


def test_no_biases_and_untied_head():
    model = build()
    assert all(name.endswith(".weight") for name, _ in model.named_parameters())
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["transformer.h.0.mlp.c_fc.weight"] == (64, 16)  # mlp_ratio 4
    assert shapes["transformer.h.0.attn.c_attn.weight"] == (48, 16)


def reference_forward(model, idx, scale):
    """The same network written out by hand, with explicit softmax attention."""
    cfg = model.config
    B, T = idx.shape
    nh, hs = cfg.n_head, cfg.d_head
    x = cfg.emb_scale * (model.transformer.wte.weight[idx] + model.transformer.wpe.weight[:T])
    mask = torch.ones(T, T).tril().bool()
    for blk in model.transformer.h:
        h = F.layer_norm(x, (cfg.n_embd,), blk.ln_1.weight)
        q, k, v = (h @ blk.attn.c_attn.weight.T).split(cfg.n_embd, dim=2)
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * scale
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, cfg.n_embd)
        x = x + cfg.residual_scale * (y @ blk.attn.c_proj.weight.T)
        h = F.layer_norm(x, (cfg.n_embd,), blk.ln_2.weight)
        h = F.gelu(h @ blk.mlp.c_fc.weight.T) @ blk.mlp.c_proj.weight.T
        x = x + cfg.residual_scale * h
    x = F.layer_norm(x, (cfg.n_embd,), model.transformer.ln_f.weight)
    return cfg.logit_scale * (x @ model.lm_head.weight.T)


@pytest.mark.parametrize(
    "overrides, scale",
    [
        ({}, 1 / math.sqrt(8)),
        ({"attn_scale": 1 / 8}, 1 / 8),
        ({"emb_scale": 3.0, "logit_scale": 0.25, "residual_scale": 0.5, "attn_scale": 0.3}, 0.3),
    ],
)
def test_matches_hand_written_reference(overrides, scale):
    cfg = replace(CFG, **overrides)
    model = build(cfg)
    idx = tokens()
    torch.testing.assert_close(model(idx)[0], reference_forward(model, idx, scale))


def test_attn_scale_changes_output():
    a = build(replace(CFG, attn_scale=1 / 8))
    b = build(CFG)  # same seed, so same weights; 1/sqrt(8) by default
    idx = tokens()
    assert not torch.allclose(a(idx)[0], b(idx)[0])


def test_logit_scale_multiplies_logits_exactly():
    a = build(CFG)
    b = build(replace(CFG, logit_scale=0.5))
    idx = tokens()
    torch.testing.assert_close(b(idx)[0], 0.5 * a(idx)[0])


def test_activations_are_recorded():
    cfg = replace(CFG, emb_scale=2.0, residual_scale=0.5)
    model = build(cfg)
    idx = tokens()
    acts = {}
    logits, _ = model(idx, activations=acts)
    assert list(acts) == ["emb", "h.0.attn", "h.0.mlp", "h.1.attn", "h.1.mlp", "logits"]
    emb = 2.0 * (model.transformer.wte.weight[idx] + model.transformer.wpe.weight[:16])
    torch.testing.assert_close(acts["emb"], emb)
    torch.testing.assert_close(acts["logits"], logits)
    for name in ("h.0.attn", "h.0.mlp", "h.1.attn", "h.1.mlp"):
        assert acts[name].shape == (3, 16, 16)
        assert not acts[name].requires_grad
    # the branches rebuild the residual stream: emb + sum of branches -> ln_f -> head
    x = acts["emb"] + sum(acts[n] for n in ("h.0.attn", "h.0.mlp", "h.1.attn", "h.1.mlp"))
    x = F.layer_norm(x, (16,), model.transformer.ln_f.weight)
    torch.testing.assert_close(x @ model.lm_head.weight.T, logits)
    # and the branch is recorded after residual_scale: zero branch scale -> zero activations
    acts0 = {}
    build(replace(CFG, residual_scale=0.0))(idx, activations=acts0)
    assert acts0["h.0.mlp"].abs().max().item() == 0.0


def test_backward_reaches_every_parameter():
    model = build()
    _, loss = model(tokens(), tokens(seed=2))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_config_names_the_key():
    with pytest.raises(UserError, match="n_head"):
        GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_embd=16, n_head=3)
    with pytest.raises(UserError, match="n_layer"):
        GPTConfig(vocab_size=64, block_size=16, n_layer=0, n_embd=16, n_head=2)
    with pytest.raises(UserError, match="vocab_size"):
        GPTConfig(vocab_size=6.5, block_size=16, n_layer=2, n_embd=16, n_head=2)


def test_the_last_positions_logits_are_the_full_forwards_tail():
    # `last` (continuation scoring) and the readout's pre-scaled input must give what the full
    # forward gives, logit_scale included
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_embd=16, n_head=2,
                          logit_scale=0.25)).eval()
    idx = torch.randint(0, 50, (3, 12))
    full, _ = model(idx)
    tail, _ = model(idx, last=5)
    assert tail.shape == (3, 5, 50)
    torch.testing.assert_close(tail, full[:, -5:])
    unscaled = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_embd=16, n_head=2)).eval()
    unscaled.load_state_dict(model.state_dict())
    torch.testing.assert_close(full, 0.25 * unscaled(idx)[0])
    with pytest.raises(ValueError, match="no targets"):
        model(idx, idx, last=5)
