import pytest

from scalinglab.errors import UserError
from scalinglab.model.flops import CONVENTIONS, model_counts
from scalinglab.model.gpt import GPT, GPTConfig

TINY = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_embd=16, n_head=2)


def test_hand_count_tiny():
    # per block: ln_1 16 + c_attn 16*48 + attn c_proj 16*16 + ln_2 16 + c_fc 16*64
    #            + mlp c_proj 64*16 = 16 + 768 + 256 + 16 + 1024 + 1024 = 3104
    # N = 2 * 3104 + ln_f 16 = 6224
    # N_total = N + wte 64*16 + wpe 16*16 + lm_head 16*64 = 6224 + 1024 + 256 + 1024 = 8528
    # 6N = 37344; attention 6 * 2 * 16 * 16 = 3072; head 6 * 16 * 64 = 6144
    want = {"6N": 37344.0, "6N+attn": 40416.0, "6N+attn+head": 46560.0}
    for convention, flops in want.items():
        c = model_counts(TINY, convention)
        assert (c.N, c.N_total, c.flops_per_token, c.convention) == (
            6224,
            8528,
            flops,
            convention,
        )
    assert model_counts(TINY).convention == "6N+attn+head"


@pytest.mark.parametrize(
    "cfg",
    [
        TINY,
        GPTConfig(vocab_size=100, block_size=32, n_layer=3, n_embd=24, n_head=3, mlp_ratio=2),
        GPTConfig(vocab_size=512, block_size=8, n_layer=1, n_embd=32, n_head=4),
    ],
)
def test_counts_match_built_model(cfg):
    model = GPT(cfg)
    kinds = model.parameter_kinds()
    embedding_kinds = {"embedding", "position", "readout"}
    n = sum(p.numel() for name, p in model.named_parameters() if kinds[name] not in embedding_kinds)
    counts = model_counts(cfg)
    assert counts.N_total == sum(p.numel() for p in model.parameters())
    assert counts.N == n


def test_conventions_nest():
    cfg = GPTConfig(vocab_size=4096, block_size=256, n_layer=4, n_embd=128, n_head=4)
    f = [model_counts(cfg, c).flops_per_token for c in CONVENTIONS]
    assert f[1] - f[0] == 6 * 4 * 256 * 128
    assert f[2] - f[1] == 6 * 128 * 4096


def test_unknown_convention_names_the_key():
    with pytest.raises(UserError, match=r"flops\.convention.*'6ND'"):
        model_counts(TINY, "6ND")
