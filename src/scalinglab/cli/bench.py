"""`scalinglab bench train|fit|attention`: benchmarks that print figures.

`train`: the project's training step against a bare PyTorch loop (`training.bench`); `fit`:
Method 3 with its bootstrap on Epoch's 240 points (`fitting.bench`); `attention`: linear
attention against softmax SDPA by sequence length (`model.attention_bench`). The benchmark
modules that import torch are imported inside the handlers, so that `--help` stays quick.
"""

from __future__ import annotations

from scalinglab.cli import grammar
from scalinglab.fitting import bench as fit_bench


def _train(args) -> None:
    from scalinglab.training import bench

    bench.run(args)


def _attention(args) -> None:
    import torch

    from scalinglab.model.attention_bench import benchmark

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rows = benchmark(args.seq_lens, n_embd=args.n_embd, n_head=args.n_head,
                     batch_size=args.batch_size, repeats=args.repeats,
                     backward=not args.forward_only, chunk_size=args.chunk_size,
                     device=args.device)
    what = "forward" if args.forward_only else "forward+backward"
    print(f"one attention block, {what}, n_embd={args.n_embd}, n_head={args.n_head}, "
          f"batch={args.batch_size}, chunk={args.chunk_size}, device={args.device}, "
          f"threads={torch.get_num_threads()}, best of {args.repeats}")
    print(f"{'seq_len':>8} {'softmax tok/s':>14} {'linear tok/s':>13} {'linear/softmax':>15}")
    for r in rows:
        print(f"{r['seq_len']:>8} {r['softmax_tokens_per_s']:>14,.0f} "
              f"{r['linear_tokens_per_s']:>13,.0f} {r['linear_over_softmax']:>15.2f}")


def register(sub) -> None:
    """Add `bench VERB` to the `scalinglab` parser's subparsers."""
    bench = grammar.group(sub, "bench", "benchmarks that print figures")

    p = grammar.verb(bench, "train", _train,
                     "tokens/s of the project's training step against a bare PyTorch loop")
    grammar.add_shape(p, n_layer=4, n_embd=128, n_head=4, block_size=128, batch_size=16,
                      vocab_size=2048)
    p.add_argument("--steps", type=int, default=2,
                   help="timed steps per loop and round (short turns pair the noise)")
    p.add_argument("--rounds", "--repeats", type=int, default=30,
                   help="interleaved rounds, each timing both loops (>= 6 for a 95%% interval)")
    p.add_argument("--live-rounds", type=int, default=40,
                   help="rounds of the live writing on/off comparison (0: leave it out)")
    p.add_argument("--live-steps", type=int, default=2,
                   help="steps per loop and round in the live comparison")
    p.add_argument("--live-eval-every", type=int, default=2,
                   help="an evaluation every this many steps in the live comparison (the "
                        "study's default is 50: 2 magnifies live writing's cost 25 times)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (0: all cores); 1, as a study's training job has")
    p.add_argument("--compile", action="store_true", help="torch.compile both loops")

    p = grammar.verb(bench, "fit", fit_bench.run,
                     "time Method 3 with its bootstrap on Epoch's 240 points")
    fit_bench.add_arguments(p)

    p = grammar.verb(bench, "attention", _attention,
                     "tokens/s of linear attention against softmax SDPA by sequence length")
    p.add_argument("--seq-lens", type=int, nargs="+", default=[256, 1024, 4096],
                   help="sequence lengths to time (default 256 1024 4096)")
    grammar.add_shape(p, n_embd=128, n_head=4, batch_size=1)
    p.add_argument("--chunk-size", type=int, default=64,
                   help="linear attention's chunk length (default 64)")
    p.add_argument("--repeats", type=int, default=3, help="timings per length, best of "
                   "(default 3)")
    p.add_argument("--forward-only", action="store_true",
                   help="time the forward pass only (default: forward and backward)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    grammar.add_threads(p)
