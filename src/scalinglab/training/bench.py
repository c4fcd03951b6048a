"""`scalinglab bench train`: the project's training step against a bare PyTorch loop.

Both loops train the same model (same size, same init) on batches of the same shape, in one
process. The bare loop is the least a training step can do: forward, backward, AdamW step,
zero_grad on batches already in memory. The project's step adds what a real run needs: the LR
schedule applied per parameter group, gradient clipping and the batch gather from the
memory-mapped token file.

Noise: a shared machine's speed drifts by more than the overhead being measured (two runs of
the old best-of-5 figure gave 0.972 and 0.900), so the loops are interleaved in short turns,
round by round (AB, BA, AB, ...: the order alternates, so that neither loop always runs just
after the other), and each round gives one ratio of two timings taken seconds apart. The figure
is the median ratio over the rounds, with a distribution-free 95% interval for it (order
statistics of the binomial, `median_interval`); the target (>= 0.95) is judged on the median. On
the CPU the default is one torch thread, as each training job of a study has
(`resources.gpus_per_run` threads): two threads on two shared cores made the spread ten times
wider.

Live writing (`training.live`: the partial metrics file, the progress line and TensorBoard) is
measured the same way: the project's whole loop (`Trainer.run`, evaluating every
`--live-eval-every` steps, by default 25 times the study's rate) with it on against off, and by
timing its calls directly (that share, scaled to an evaluation every 50 steps, is its cost in a
default study).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from scalinglab import atomic
from scalinglab.config import TrainingConfig
from scalinglab.model.flops import model_counts
from scalinglab.model.gpt import GPT, GPTConfig
from scalinglab.training.live import LiveLog
from scalinglab.training.schedule import Schedule
from scalinglab.training.spec import RunSpec

# Dense bf16 tensor-core peaks in FLOP/s from the vendors' data sheets (no sparsity), matched on
# torch.cuda.get_device_name() in this order (the PCIe and NVL H100s before the SXM part);
# MFU = model FLOPs per second / this peak (PaLM, arXiv:2204.02311, appendix B).
PEAK_FLOPS = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10": 125e12,
}
TARGET_RATIO = 0.95
DEFAULT_EVAL_EVERY = TrainingConfig().eval_every


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None  # no meaningful published peak for a shared CPU
    return peak_flops_of(torch.cuda.get_device_name(device))


def peak_flops_of(name: str) -> float | None:
    """The table's peak for a CUDA device name; None for a device not in it."""
    return next((peak for key, peak in PEAK_FLOPS.items() if key in name), None)


def palm_flops_per_token(cfg: GPTConfig) -> float:
    """Training FLOPs per token as PaLM counts them for MFU (arXiv:2204.02311, app. B):
    6 x the matmul parameters (the non-embedding ones and the LM head) + 12 n_layer n_embd T for
    the attention scores and the weighted sum, full context. This is the count behind published
    MFU figures; the study's own conventions are in `scalinglab.model.flops`."""
    counts = model_counts(cfg, "6N")
    return 6.0 * (counts.N + cfg.n_embd * cfg.vocab_size) + 12.0 * cfg.n_layer * cfg.n_embd \
        * cfg.block_size


def median_interval(values, level: float = 0.95) -> tuple[float, float, float] | None:
    """A distribution-free interval for the median: (x_(k), x_(n+1-k), coverage) with the
    largest k such that P(Binomial(n, 1/2) < k) <= (1 - level) / 2, so the coverage is at least
    `level`. None when n is too small for any such k (n < 6 at 95%)."""
    from scipy.stats import binom

    x = sorted(values)
    n = len(x)
    k = 0
    while k < n // 2 and binom.cdf(k, n, 0.5) <= (1 - level) / 2:
        k += 1
    if k == 0:
        return None
    return x[k - 1], x[n - k], 1 - 2 * float(binom.cdf(k - 1, n, 0.5))


def _summary(ratios: list[float]) -> dict:
    interval = median_interval(ratios)
    return {"median": float(np.median(ratios)),
            "interval": None if interval is None else [interval[0], interval[1]],
            "coverage": None if interval is None else interval[2],
            "rounds": len(ratios), "per_round": ratios}


def _spec(args) -> RunSpec:
    """The benchmark's spec: one stable run of the model of `args`, its counts as
    `flops.model_counts` gives them."""
    model = {"vocab_size": args.vocab_size, "block_size": args.block_size,
             "n_layer": args.n_layer, "n_embd": args.n_embd, "n_head": args.n_head}
    counts = model_counts(GPTConfig(**model))
    return RunSpec(
        series_id="bench", phase="bench", seed=0, model=model,
        parametrization={"name": "sp"},
        training={"batch_size": args.batch_size, "lr": 3e-3, "weight_decay": 0.1,
                     "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "eval_every": 10**9,
                     # the live comparison's evaluations: one batch each
                     "eval_tokens": args.block_size * args.batch_size,
                  "checkpoint_every": 10**9, "device": "auto", "compile": args.compile},
        schedule={"kind": "wsd", "decay_fraction": 0.2, "decay_shape": "linear",
                  "final_lr_ratio": 0.0},
        schedule_name="bench", flops_convention=counts.convention, N=counts.N,
        N_total=counts.N_total, flops_per_token=counts.flops_per_token, warmup_steps=10,
        stable_steps=0, branches=(),
    )


def _write_tokens(folder: Path, vocab: int, n_tokens: int) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        tokens = rng.integers(0, vocab, size=n_tokens, dtype=np.uint16)
        atomic.write_with(folder / f"{split}.bin", lambda tmp, t=tokens: t.tofile(tmp))
    atomic.write_json(folder / "meta.json", {"dtype": "uint16", "vocab_size": vocab,
                                             "train_tokens": n_tokens, "val_tokens": n_tokens})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_project(trainer, schedule: Schedule, steps: int) -> float:
    _sync(trainer.device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(schedule(trainer.step))
    _sync(trainer.device)
    return time.perf_counter() - start


def _time_bare(model, optimizer, batches, steps: int, device) -> float:
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    _sync(device)
    start = time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        with autocast:
            _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - start


class _TimedLiveLog(LiveLog):
    """A LiveLog that adds up the time its per-evaluation work takes."""

    seconds = 0.0
    calls = 0

    def record(self, row: dict) -> None:
        start = time.perf_counter()
        super().record(row)
        self.seconds += time.perf_counter() - start
        self.calls += 1


def _time_run(trainer, schedule: Schedule, steps: int, live: LiveLog | None) -> float:
    """The project's whole loop for `steps` steps, evaluations included, from its first step
    (the live outputs' start-up, once per job, is left out)."""
    marks = []

    def first_step(_trainer) -> None:
        if not marks:
            _sync(trainer.device)
            marks.append(time.perf_counter())

    trainer.metrics = []  # each run starts its live file empty
    trainer.divergence = None  # random tokens do not diverge, but a mark would end every run
    trainer.run(schedule, trainer.step + steps, on_step=first_step, live=live, desc="bench")
    _sync(trainer.device)
    return time.perf_counter() - marks[0]


def _process_peak_gib() -> float:
    """The process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(args) -> dict:
    """Run the benchmark; the figures as a plain dict (what `--json` writes)."""
    from scalinglab.training.spec import make_schedule, pick_device
    from scalinglab.training.trainer import Trainer

    device = pick_device("auto")
    if device.type == "cpu" and args.threads > 0:  # as training does (spec.job_device)
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    spec = _spec(args)
    config = GPTConfig(**spec.model)
    counts = model_counts(config)
    tokens_per_step = args.batch_size * args.block_size
    project, bare, live_on, live_off = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        _write_tokens(Path(tmp), args.vocab_size, tokens_per_step * 64 + 1)
        trainer = Trainer(spec, Path(tmp), device)
        schedule = make_schedule(spec, total_steps=10**9, decay_start=None)
        initial_state = {k: v.to("cpu", copy=True) for k, v in trainer.model.state_dict().items()}
        # warm-up: allocator, kernels, compile, page cache (and the project's AdamW state, so
        # that what the bare loop adds to the memory is its own)
        _time_project(trainer, schedule, 3)

        if device.type == "cuda":
            before_bare = torch.cuda.memory_allocated(device)
        torch.manual_seed(0)
        bare_model = GPT(config).to(device)
        bare_model.load_state_dict(initial_state)
        del initial_state
        if args.compile:
            bare_model = torch.compile(bare_model)
        bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=3e-3, betas=(0.9, 0.95),
                                     weight_decay=0.1, fused=device.type == "cuda")
        batches = [
            tuple(t.to(device) for t in trainer.train_data.train_batch(i, args.batch_size, 0))
            for i in range(8)
        ]

        _time_bare(bare_model, bare_opt, batches, 3, device)
        train_peak, process_peak = None, 0
        if device.type == "cuda":  # the bare loop's weights and AdamW state stay resident
            bare_resident = torch.cuda.memory_allocated(device) - before_bare
            train_peak = 0.0
        for i in range(args.rounds):
            arms = ("project", "bare") if i % 2 == 0 else ("bare", "project")
            for arm in arms:
                if arm == "bare":
                    bare.append(_time_bare(bare_model, bare_opt, batches, args.steps, device))
                    continue
                if device.type == "cuda":  # the process's peak so far, then the step's own
                    process_peak = max(process_peak, torch.cuda.max_memory_allocated(device))
                    torch.cuda.reset_peak_memory_stats(device)
                project.append(_time_project(trainer, schedule, args.steps))
                if device.type == "cuda":
                    train_peak = max(train_peak, (torch.cuda.max_memory_allocated(device)
                                                  - bare_resident) / 2**30)

        live = None
        if args.live_rounds > 0:
            trackers = ["tensorboard"] if importlib.util.find_spec("tensorboard") else []
            log = _TimedLiveLog(Path(tmp) / "live", name="bench", tracking=trackers,
                                progress=True)
            trainer.spec.training["eval_every"] = args.live_eval_every
            # the progress lines go where a job's log would take them; the bar is off both ways
            with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
                _time_run(trainer, schedule, args.live_eval_every, None)  # warm-up: eval mode
                _time_run(trainer, schedule, args.live_eval_every, log)
                log.seconds, log.calls = 0.0, 0
                for i in range(args.live_rounds):
                    arms = (True, False) if i % 2 == 0 else (False, True)
                    for on in arms:
                        seconds = _time_run(trainer, schedule, args.live_steps,
                                            log if on else None)
                        (live_on if on else live_off).append(seconds)
            log.close()
            live = {
                "eval_every": args.live_eval_every, "trackers": trackers,
                "steps_per_round": args.live_steps,
                # tokens/s with live writing on / off, per round
                "ratio": _summary([off / on for on, off in zip(live_on, live_off, strict=True)]),
                "seconds_per_eval": log.seconds / max(log.calls, 1),
                # the share of the loop's time spent in live writing, timed call by call
                "share_of_time": log.seconds / sum(live_on),
            }

    tokens = args.steps * tokens_per_step
    project_tps = tokens / float(np.median(project))
    if live is not None:  # the same cost at the study's default evaluation rate
        step_seconds = tokens_per_step / project_tps
        live["share_at_default_eval_every"] = live["seconds_per_eval"] / (
            DEFAULT_EVAL_EVERY * step_seconds)
    peak = peak_flops(device)
    palm = palm_flops_per_token(config)
    if device.type == "cuda":
        peak_memory = max(process_peak, torch.cuda.max_memory_allocated(device)) / 2**30
    else:
        peak_memory = _process_peak_gib()
    return {
        "device": device.type,
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "dtype": "bf16 autocast" if device.type == "cuda" else "fp32",
        "compile": bool(args.compile),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": {"n_layer": args.n_layer, "n_embd": args.n_embd, "n_head": args.n_head,
                  "block_size": args.block_size, "vocab_size": args.vocab_size,
                  "batch_size": args.batch_size, "N": counts.N, "N_total": counts.N_total},
        "tokens_per_step": tokens_per_step,
        "steps_per_round": args.steps,
        "project_tokens_per_s": project_tps,
        "bare_tokens_per_s": tokens / float(np.median(bare)),
        "ratio": {**_summary([b / p for p, b in zip(project, bare, strict=True)]),
                  "target": TARGET_RATIO},
        "flops_per_token": {"palm": palm, counts.convention: counts.flops_per_token},
        "model_flops_per_s": project_tps * palm,
        "peak_flops": peak,
        "mfu": project_tps * palm / peak if peak else None,
        "peak_memory_gib": peak_memory,
        "train_peak_memory_gib": train_peak,
        "live": live,
    }


def report(result: dict) -> str:
    """The figures as the lines `bench train` prints."""
    m, ratio = result["model"], result["ratio"]

    def interval(summary: dict) -> str:
        if summary["interval"] is None:
            return "no 95% interval (too few rounds)"
        lo, hi = summary["interval"]
        return f"{summary['coverage']:.1%} interval [{lo:.3f}, {hi:.3f}]"

    lines = [
        f"model: n_layer={m['n_layer']} n_embd={m['n_embd']} n_head={m['n_head']} "
        f"vocab={m['vocab_size']} block={m['block_size']} batch={m['batch_size']} "
        f"(N={m['N']:,}, N_total={m['N_total']:,}) on {result['device']} "
        f"{result['device_name']} ({result['threads']} threads), {result['dtype']}"
        f"{', torch.compile' if result['compile'] else ''}",
        f"project training step : {result['project_tokens_per_s']:12.0f} tokens/s (median)",
        f"bare PyTorch loop     : {result['bare_tokens_per_s']:12.0f} tokens/s (median)",
        f"ratio project / bare  : median {ratio['median']:.3f} over {ratio['rounds']} "
        f"interleaved rounds of {result['steps_per_round']} steps, {interval(ratio)}; "
        f"target >= {ratio['target']} on the median: "
        f"{'met' if ratio['median'] >= ratio['target'] else 'NOT met'}",
    ]
    peak = result["peak_flops"]
    mfu = f"{result['mfu']:.1%} of {peak:.3g}" if peak else "n/a (no known peak)"
    lines.append(f"model FLOP/s          : {result['model_flops_per_s']:.3g} "
                 f"({result['flops_per_token']['palm']:.3g} per token, PaLM's count); MFU {mfu}")
    where = "CUDA allocated" if result["device"] == "cuda" else "process RSS"
    memory = f"peak memory           : {result['peak_memory_gib']:.2f} GiB ({where})"
    if result["train_peak_memory_gib"] is not None:
        memory += (f"; {result['train_peak_memory_gib']:.2f} GiB in the project's steps, "
                   f"the bare loop's resident model left out")
    lines.append(memory)
    live = result["live"]
    if live is not None:
        trackers = ", ".join(["partial file", "progress line", *live["trackers"]])
        lines.append(
            f"live writing on / off : median {live['ratio']['median']:.3f} of tokens/s "
            f"({interval(live['ratio'])}), whole loop with an eval every {live['eval_every']} "
            f"steps; timed directly: {live['seconds_per_eval'] * 1e3:.2f} ms per eval = "
            f"{live['share_of_time']:.2%} of the loop's time, "
            f"{live['share_at_default_eval_every']:.3%} at an eval every {DEFAULT_EVAL_EVERY} "
            f"steps ({trackers})")
    return "\n".join(lines)


def run(args) -> None:
    result = measure(args)
    print(report(result))
    if args.json:
        atomic.write_json(args.json, _finite_or_none(result))
        print(f"wrote {args.json}")


def _finite_or_none(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    return obj
