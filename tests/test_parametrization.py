import math

import pytest
import torch

from scalinglab.errors import UserError
from scalinglab.model import GPT, GPTConfig
from scalinglab.parametrization import (
    ParametrizationConfig,
    init_std,
    init_weights,
    model_multipliers,
    param_groups,
    width_multiplier,
)

BASE = 16
SHAPE = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2)


def build(pcfg, n_embd, seed=0):
    cfg = GPTConfig(n_embd=n_embd, **SHAPE, **model_multipliers(pcfg, 2, n_embd, 2))
    model = GPT(cfg)
    init_weights(model, pcfg, torch.Generator().manual_seed(seed))
    return model


def test_multipliers_hand_computed():
    sp = ParametrizationConfig("sp", base_width=BASE, output_mult=2.0, emb_scale=3.0)
    mup = ParametrizationConfig("mup", base_width=BASE, output_mult=2.0, emb_scale=3.0)
    # width 64, 2 heads: d_head = 32; muP m = 4
    assert model_multipliers(sp, 2, 64, 2) == {
        "emb_scale": 3.0,
        "logit_scale": 2.0,
        "attn_scale": 1 / math.sqrt(32),
        "residual_scale": 1.0,
    }
    assert model_multipliers(mup, 2, 64, 2) == {
        "emb_scale": 3.0,
        "logit_scale": 0.5,
        "attn_scale": 1 / 32,
        "residual_scale": 1.0,
    }
    deep = ParametrizationConfig("mup", base_width=BASE, depth_scale=True, attn_scale="sqrt")
    got = model_multipliers(deep, 4, 16, 2)
    assert got["residual_scale"] == 0.5
    assert got["attn_scale"] == 1 / math.sqrt(8)
    assert got["logit_scale"] == 1.0  # m = 1
    lin = ParametrizationConfig("sp", attn_scale="linear")
    assert model_multipliers(lin, 2, 64, 2)["attn_scale"] == 1 / 32


def test_width_multiplier():
    assert width_multiplier(ParametrizationConfig("mup", base_width=16), 64) == 4.0
    assert width_multiplier(ParametrizationConfig("mup", base_width=16), 24) == 1.5
    # SP ignores base_width entirely
    assert width_multiplier(ParametrizationConfig("sp", base_width=512), 64) == 1.0


@pytest.mark.parametrize(
    "name, n_embd, hidden, c_proj",
    [
        # SP: constant 0.02, residual projections / sqrt(2 * n_layer) = / 2
        ("sp", 16, 0.02, 0.01),
        ("sp", 64, 0.02, 0.01),
        # muP: / sqrt(m); m = 1 and m = 4
        ("mup", 16, 0.02, 0.01),
        ("mup", 64, 0.01, 0.005),
    ],
)
def test_init_std_hand_computed_and_measured(name, n_embd, hidden, c_proj):
    pcfg = ParametrizationConfig(name, base_width=BASE)
    m = width_multiplier(pcfg, n_embd)
    assert init_std(pcfg, "transformer.h.0.attn.c_attn.weight", "hidden", 2, m) == hidden
    assert init_std(pcfg, "transformer.h.1.mlp.c_proj.weight", "hidden", 2, m) == c_proj
    assert init_std(pcfg, "transformer.wte.weight", "embedding", 2, m) == 0.02
    assert init_std(pcfg, "lm_head.weight", "readout", 2, m) == 0.02

    # measured: pool the weights that share an expected std (small matrices alone are noisy)
    model = build(pcfg, n_embd)
    kinds = model.parameter_kinds()
    pools: dict[float, list[torch.Tensor]] = {}
    for pname, p in model.named_parameters():
        if kinds[pname] == "vector":
            assert torch.all(p == 1.0), pname
        elif kinds[pname] == "hidden":
            pools.setdefault(c_proj if pname.endswith("c_proj.weight") else hidden, []).append(p)
        else:
            pools.setdefault(0.02, []).append(p)
    if hidden == 0.02:  # the hidden pool and the embedding pool coincide
        assert set(pools) == {0.02, c_proj}
    for std, members in pools.items():
        flat = torch.cat([p.detach().flatten() for p in members])
        assert flat.std().item() == pytest.approx(std, rel=0.05), std
        assert abs(flat.mean().item()) < 4 * std / math.sqrt(flat.numel())


def test_init_is_reproducible_by_generator():
    pcfg = ParametrizationConfig("mup", base_width=BASE)
    a, b, c = build(pcfg, 32, seed=1), build(pcfg, 32, seed=1), build(pcfg, 32, seed=2)
    for (n, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb), n
        if pa.ndim > 1:
            assert not torch.equal(pa, pc), n


@pytest.mark.parametrize("name, n_embd, hidden_lr", [("sp", 64, 1e-2), ("mup", 64, 2.5e-3)])
def test_param_groups_hand_computed(name, n_embd, hidden_lr):
    pcfg = ParametrizationConfig(name, base_width=BASE)
    model = build(pcfg, n_embd)
    groups = param_groups(model, pcfg, lr=1e-2, weight_decay=0.1)
    summary = {
        g["name"]: (g["lr"], g["lr_mult"], g["weight_decay"], len(g["params"])) for g in groups
    }
    assert summary == {
        "embedding": (1e-2, 1.0, 0.1, 1),
        "position": (1e-2, 1.0, 0.1, 1),
        "hidden": (hidden_lr, hidden_lr / 1e-2, 0.1, 8),  # 4 matrices x 2 blocks
        "readout": (1e-2, 1.0, 0.1, 1),
        "vector": (1e-2, 1.0, 0.0, 5),  # ln_1, ln_2 x 2 blocks + ln_f
    }
    # every parameter in exactly one group, and AdamW takes the groups as they are
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    opt = torch.optim.AdamW(groups, lr=123.0)
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in groups]
    assert opt.param_groups[2]["lr_mult"] == hidden_lr / 1e-2


@pytest.mark.parametrize(
    "settings",
    [
        dict(attn_scale="sqrt"),
        dict(attn_scale="linear", output_mult=2.0, emb_scale=3.0, depth_scale=True),
    ],
)
def test_mup_equals_sp_at_base_width(settings):
    sp = ParametrizationConfig("sp", base_width=BASE, **settings)
    mup = ParametrizationConfig("mup", base_width=BASE, **settings)
    assert model_multipliers(sp, 2, BASE, 2) == model_multipliers(mup, 2, BASE, 2)
    a, b = build(sp, BASE, seed=3), build(mup, BASE, seed=3)
    assert a.config == b.config
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name

    ga = param_groups(a, sp, lr=3e-3, weight_decay=0.1)
    gb = param_groups(b, mup, lr=3e-3, weight_decay=0.1)
    strip = [{k: v for k, v in g.items() if k != "params"} for g in ga]
    assert strip == [{k: v for k, v in g.items() if k != "params"} for g in gb]

    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 64, (2, 16), generator=gen)
    tgt = torch.randint(0, 64, (2, 16), generator=gen)
    opt_a, opt_b = torch.optim.AdamW(ga), torch.optim.AdamW(gb)
    for model, opt in ((a, opt_a), (b, opt_b)):
        for _ in range(2):
            opt.zero_grad()
            model(idx, tgt)[1].backward()
            opt.step()
    la, lb = a(idx, tgt), b(idx, tgt)
    assert torch.equal(la[0], lb[0]) and la[1].item() == lb[1].item()


def test_mup_differs_from_sp_off_base_width():
    sp = ParametrizationConfig("sp", base_width=BASE, attn_scale="sqrt")
    mup = ParametrizationConfig("mup", base_width=BASE, attn_scale="sqrt")
    a, b = build(sp, 64, seed=3), build(mup, 64, seed=3)
    assert a.config.logit_scale == 4 * b.config.logit_scale
    wa = a.transformer.h[0].attn.c_attn.weight
    wb = b.transformer.h[0].attn.c_attn.weight
    torch.testing.assert_close(wb, wa / 2)  # same draws, std / sqrt(4)
    torch.testing.assert_close(b.transformer.wte.weight, a.transformer.wte.weight)


def test_auto_attention_scale_differs_by_parametrization():
    sp = model_multipliers(ParametrizationConfig("sp", base_width=BASE), 2, BASE, 2)
    mup = model_multipliers(ParametrizationConfig("mup", base_width=BASE), 2, BASE, 2)
    assert (sp["attn_scale"], mup["attn_scale"]) == (1 / math.sqrt(8), 1 / 8)


def test_bad_values_name_the_key():
    with pytest.raises(UserError, match=r"parametrization\.name.*'ntk'"):
        ParametrizationConfig("ntk")
    with pytest.raises(UserError, match=r"parametrization\.attn_scale"):
        ParametrizationConfig("mup", attn_scale="cubic")
    with pytest.raises(UserError, match=r"parametrization\.base_width"):
        ParametrizationConfig("mup", base_width=0)
    with pytest.raises(UserError, match=r"parametrization\.init_std"):
        ParametrizationConfig("sp", init_std=0.0)
    with pytest.raises(UserError, match=r"parametrization\.output_mult"):
        ParametrizationConfig("sp", output_mult="1")
    with pytest.raises(UserError, match=r"parametrization\.base_width.*n_embd=32"):
        model_multipliers(ParametrizationConfig("mup", base_width=64), 2, 32, 2)


def _rule_names(text: str) -> list[str]:
    """The first column of a markdown rule table: `| `name` | ...` rows, in order."""
    return [line.split("`")[1] for line in text.splitlines() if line.startswith("| `")]


def test_readme_lists_the_rules_of_the_docstring_table():
    from helpers import REPO
    from scalinglab import parametrization

    readme = (REPO / "README.md").read_text()
    section = readme.split("### Parametrizations: SP and muP")[1].split("\n### ")[0]
    assert _rule_names(section) == _rule_names(parametrization.__doc__)
    assert "router.lr" in _rule_names(section)
