"""Chunked causal linear attention: equal to the quadratic reference, causal, inside the model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from scalinglab.errors import UserError
from scalinglab.model.attention_bench import benchmark
from scalinglab.model.gpt import GPT, GPTConfig
from scalinglab.model.linear_attention import (
    FEATURE_MAPS,
    LinearAttention,
    causal_linear_attention,
    feature_map,
    quadratic_linear_attention,
)

CFG = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_embd=16, n_head=2,
                attention="linear")


def qkv(T: int, seed: int = 0, dtype=torch.float64, B: int = 2, H: int = 3, D: int = 4):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, D, generator=g, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize("feature", FEATURE_MAPS)
@pytest.mark.parametrize("T", [1, 7, 16, 33])
@pytest.mark.parametrize("chunk", [1, 3, 4, 16, 64])
def test_chunked_equals_naive_quadratic(feature, T, chunk):
    q, k, v = qkv(T)
    want = quadratic_linear_attention(q, k, v, feature)
    got = causal_linear_attention(q, k, v, feature, chunk)
    assert got.shape == want.shape and got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_naive_reference_is_the_definition_at_one_position():
    # y_t = phi(q_t) sum_{s<=t} phi(k_s)^T v_s / phi(q_t) . sum_{s<=t} phi(k_s), here at t = 2
    q, k, v = qkv(5, B=1, H=1)
    fq, fk = feature_map(q, "elu")[0, 0], feature_map(k, "elu")[0, 0]
    num = sum(fq[2] @ fk[s] * v[0, 0, s] for s in range(3))
    den = sum(fq[2] @ fk[s] for s in range(3))
    got = quadratic_linear_attention(q, k, v, "elu")[0, 0, 2]
    torch.testing.assert_close(got, num / (den + 1e-6), rtol=1e-12, atol=1e-12)
    assert torch.all(feature_map(torch.tensor([-5.0, 0.0, 2.0]), "elu") > 0)


def test_gradients_equal_the_reference():
    q, k, v = (t.requires_grad_() for t in qkv(13, seed=3))
    causal_linear_attention(q, k, v, "elu", 4).square().sum().backward()
    got = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    quadratic_linear_attention(q, k, v, "elu").square().sum().backward()
    for a, t in zip(got, (q, k, v), strict=True):
        torch.testing.assert_close(a, t.grad, rtol=1e-9, atol=1e-11)


def test_causal_future_positions_do_not_change_the_past():
    q, k, v = qkv(20, seed=4)
    a = causal_linear_attention(q, k, v, "relu", 8)
    q2, k2, v2 = (t.clone() for t in (q, k, v))
    for t in (q2, k2, v2):
        t[:, :, 11:] += 1.0
    b = causal_linear_attention(q2, k2, v2, "relu", 8)
    torch.testing.assert_close(a[:, :, :11], b[:, :, :11], rtol=0, atol=1e-12)
    assert not torch.allclose(a[:, :, 11:], b[:, :, 11:])


def test_low_precision_input_keeps_its_dtype():
    q, k, v = qkv(10, dtype=torch.bfloat16)
    out = causal_linear_attention(q, k, v, "elu", 4)
    assert out.dtype == torch.bfloat16
    want = quadratic_linear_attention(*(t.double() for t in (q, k, v)), "elu")
    torch.testing.assert_close(out.double(), want, rtol=2e-2, atol=2e-2)


def test_in_the_model_same_parameters_as_softmax_and_chunk_size_free():
    softmax = GPT(replace(CFG, attention="softmax"))
    linear = GPT(CFG)
    assert ({n: p.shape for n, p in softmax.named_parameters()}
            == {n: p.shape for n, p in linear.named_parameters()})
    assert isinstance(linear.transformer.h[0].attn, LinearAttention)
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    logits, _ = linear(idx)
    for block in linear.transformer.h:
        block.attn.chunk_size = 5
    torch.testing.assert_close(linear(idx)[0], logits, rtol=1e-5, atol=1e-5)


def test_unknown_feature_map_names_the_key():
    with pytest.raises(UserError, match=r"^feature_map:.*'softplus'"):
        replace(CFG, feature_map="softplus")
    with pytest.raises(UserError, match=r"^attention:.*'sparse'"):
        replace(CFG, attention="sparse")


def test_benchmark_reports_both_attentions():
    rows = benchmark((16, 32), n_embd=16, n_head=2, repeats=1)
    assert [r["seq_len"] for r in rows] == [16, 32]
    for row in rows:
        assert row["softmax_tokens_per_s"] > 0 and row["linear_tokens_per_s"] > 0
        assert row["linear_over_softmax"] == pytest.approx(
            row["linear_tokens_per_s"] / row["softmax_tokens_per_s"])
