import math
import pickle
from dataclasses import asdict

import pytest

from scalinglab.errors import UserError
from scalinglab.training.schedule import (
    DECAY_SHAPES,
    Schedule,
    cosine_factor,
    decay_start_step,
    wsd_factor,
)

# A 10-step WSD run: 2 warmup steps, decay over the last 40% (steps 6..9).
T, W, FRACTION = 10, 2, 0.4
WARM_STABLE = [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
EXPECTED = {
    "linear": WARM_STABLE + [0.75, 0.5, 0.25, 0.0],
    "cosine": WARM_STABLE
    + [(1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2, 0.0],
    "1-sqrt": WARM_STABLE + [0.5, 1 - math.sqrt(0.5), 1 - math.sqrt(0.75), 0.0],
    # floor 0.01 when final_ratio = 0: 0.01 ** p for p = 1/4, 2/4, 3/4, 1
    "exponential": WARM_STABLE + [0.1**0.5, 0.1, 0.1**1.5, 0.01],
    # DeepSeek: 1.0 before 80% (step 8), 0.316 from 80%, 0.1 from 90% (step 9)
    "multistep": WARM_STABLE + [1.0, 1.0, 0.316, 0.1],
}


def factors(shape, total=T, warmup=W, decay_start="auto", final_ratio=0.0):
    if decay_start == "auto":
        decay_start = decay_start_step(total, FRACTION, shape)
    return [
        wsd_factor(
            s,
            warmup_steps=warmup,
            total_steps=total,
            decay_start=decay_start,
            shape=shape,
            final_ratio=final_ratio,
        )
        for s in range(total)
    ]


@pytest.mark.parametrize("shape", DECAY_SHAPES)
def test_wsd_exact_values(shape):
    assert factors(shape) == pytest.approx(EXPECTED[shape], rel=1e-12, abs=1e-15)


def test_wsd_linear_values_are_exact_floats():
    assert factors("linear") == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]


def test_final_ratio():
    # linear to 0.1: 0.1 + 0.9 * (1 - p)
    assert factors("linear", final_ratio=0.1)[6:] == pytest.approx([0.775, 0.55, 0.325, 0.1])
    # exponential to 0.1: 0.1 ** p
    assert factors("exponential", final_ratio=0.1)[6:] == pytest.approx(
        [0.1**0.25, 0.1**0.5, 0.1**0.75, 0.1]
    )
    # multistep ignores final_ratio
    assert factors("multistep", final_ratio=0.5) == EXPECTED["multistep"]


def test_stable_run_has_no_decay():
    assert factors("linear", total=6, decay_start=None) == WARM_STABLE
    assert wsd_factor(10_000, warmup_steps=W, total_steps=20, decay_start=None) == 1.0


def test_warmup_is_linear_and_reaches_peak():
    got = [wsd_factor(s, warmup_steps=4, total_steps=8, decay_start=None) for s in range(6)]
    assert got == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert wsd_factor(0, warmup_steps=0, total_steps=8, decay_start=None) == 1.0


def test_decay_inside_warmup_multiplies():
    # 4 steps, warmup 4, decay over the last 2: warmup factor times decay factor
    got = [wsd_factor(s, warmup_steps=4, total_steps=4, decay_start=2) for s in range(4)]
    assert got == [0.25, 0.5, 0.75 * 0.5, 0.0]


def test_decay_start_step():
    assert decay_start_step(10, 0.4) == 6
    assert decay_start_step(10, 0.2) == 8
    assert decay_start_step(1000, 0.2) == 800
    assert decay_start_step(7, 0.2) == 6  # 1.4 decay steps -> 1
    assert decay_start_step(3, 0.5) == 1  # 1.5 -> 2 (halves round up)
    assert decay_start_step(5, 0.01) == 4  # at least one decay step
    assert decay_start_step(5, 1.0) == 0
    # multistep: the 80% point whatever the fraction
    assert decay_start_step(10, 0.2, "multistep") == 8
    assert decay_start_step(10, 0.5, "multistep") == 8
    assert decay_start_step(15, 0.2, "multistep") == 12


def test_multistep_boundaries_round_up():
    # 15 steps: 80% = 12, 90% = 13.5 -> from step 14
    got = factors("multistep", total=15, warmup=0)
    assert got == [1.0] * 12 + [0.316, 0.316, 0.1]


def test_multistep_rejects_other_decay_start():
    with pytest.raises(ValueError, match="80%"):
        wsd_factor(0, warmup_steps=0, total_steps=10, decay_start=6, shape="multistep")


def test_cosine_exact_values():
    got = [cosine_factor(s, warmup_steps=W, total_steps=T) for s in range(T)]
    # after warmup, progress p = (s + 1 - 2) / 8; factor 0.1 + 0.9 * (1 + cos(pi p)) / 2
    want = [0.5, 1.0] + [0.1 + 0.45 * (1 + math.cos(math.pi * k / 8)) for k in range(1, 9)]
    assert got == pytest.approx(want, rel=1e-12)
    assert got[-1] == pytest.approx(0.1)
    assert got[5] == pytest.approx(0.55)  # halfway: p = 1/2


def test_cosine_is_wsd_from_end_of_warmup():
    for s in range(T):
        assert cosine_factor(s, warmup_steps=W, total_steps=T, final_ratio=0.0) == wsd_factor(
            s, warmup_steps=W, total_steps=T, decay_start=W, shape="cosine"
        )


@pytest.mark.parametrize("shape", DECAY_SHAPES)
@pytest.mark.parametrize("budget", [7, 40, 100, 333])
def test_rewind_decay_branch_equals_uninterrupted_run(shape, budget):
    largest, warmup, fraction = 400, 5, 0.2
    stable = Schedule("wsd", warmup_steps=warmup, total_steps=largest, decay_start=None)
    start = decay_start_step(budget, fraction, shape)
    branch = Schedule("wsd", warmup, budget, decay_start=start, shape=shape, final_ratio=0.0)
    uninterrupted = [
        wsd_factor(s, warmup_steps=warmup, total_steps=budget, decay_start=start, shape=shape)
        for s in range(budget)
    ]
    # the stable run up to the checkpoint, then the branch from the restored step
    trace = [stable(s) for s in range(start)] + [branch(s) for s in range(start, budget)]
    assert trace == uninterrupted  # exact, not approximate
    assert [stable(s) for s in range(start)] == uninterrupted[:start]
    assert uninterrupted[-1] < 1.0  # and it does decay


def test_schedule_is_picklable_and_serialisable():
    sched = Schedule("wsd", 2, 10, decay_start=6, shape="cosine")
    again = pickle.loads(pickle.dumps(sched))
    assert again == sched
    assert [again(s) for s in range(10)] == [sched(s) for s in range(10)]
    assert asdict(sched) == {
        "kind": "wsd",
        "warmup_steps": 2,
        "total_steps": 10,
        "decay_start": 6,
        "shape": "cosine",
        "final_ratio": 0.0,
    }
    cos = Schedule("cosine", warmup_steps=W, total_steps=T, final_ratio=0.1)
    assert [cos(s) for s in range(T)] == [
        cosine_factor(s, warmup_steps=W, total_steps=T) for s in range(T)
    ]


def test_bad_values_name_the_key():
    with pytest.raises(UserError, match=r"schedule\.decay_shape"):
        wsd_factor(0, warmup_steps=1, total_steps=10, decay_start=5, shape="step")
    with pytest.raises(UserError, match=r"schedule\.decay_shape"):
        decay_start_step(10, 0.2, "triangle")
    with pytest.raises(UserError, match=r"schedule\.decay_shape"):
        Schedule("wsd", 1, 10, decay_start=5, shape="Linear")
    with pytest.raises(UserError, match=r"schedule\.decay_fraction"):
        decay_start_step(10, 0.0)
    with pytest.raises(UserError, match=r"schedule\.decay_fraction"):
        decay_start_step(10, 1.5)
    with pytest.raises(UserError, match=r"schedule\.kind"):
        Schedule("constant", 1, 10)
    with pytest.raises(UserError, match=r"schedule\.final_ratio"):
        Schedule("wsd", 1, 10, decay_start=5, final_ratio=2.0)
    with pytest.raises(UserError, match=r"schedule\.warmup_steps"):
        Schedule("wsd", -1, 10)
    with pytest.raises(UserError, match=r"schedule\.warmup_steps"):
        Schedule("cosine", 10, 10)
    with pytest.raises(ValueError, match="decay_start"):
        wsd_factor(0, warmup_steps=0, total_steps=10, decay_start=10)
