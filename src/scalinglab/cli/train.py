"""`scalinglab train stable|branch`: the two training jobs that every phase's runs go through.

`stable` trains a series' warmup and stable phase, saving a checkpoint at each branch point;
`branch` decays one branch from its checkpoint, or several of a series in turn, each from its own
(`scalinglab.training.jobs`, imported inside the handlers: it imports torch). With
`--processes K > 1` the verb re-runs itself under torchrun.
"""

from __future__ import annotations

from scalinglab.cli import grammar
from scalinglab.errors import UserError


def _data_parallel(args) -> bool:
    """With `--processes K > 1` outside torchrun, re-run this verb as K torchrun workers (and
    never return); inside torchrun, or for one process, train here."""
    from scalinglab.training import distributed

    if args.processes < 1:
        raise UserError(f"--processes must be >= 1, got {args.processes}")
    if args.processes == 1 or distributed.env_world_size() > 1:
        return False
    from scalinglab.training.spec import read_spec

    batch_size = int(read_spec(args.spec).training["batch_size"])
    distributed.relaunch(args.processes, args.argv, batch_size)
    return True


def _stable(args) -> None:
    from scalinglab.training.jobs import train_stable

    if _data_parallel(args):
        return
    train_stable(args.spec, args.data_dir, args.out_dir, threads=args.threads)


def _branch(args) -> None:
    from scalinglab.training.jobs import decay_branch

    if _data_parallel(args):
        return
    decay_branch(args.spec, args.label, args.checkpoint, args.data_dir, args.out_dir,
                 threads=args.threads, skip_untrained=args.skip_untrained)


def _job_arguments(p, many: bool = False) -> None:
    p.add_argument("--spec", required=True, help="the series' spec (results/specs/.../*.json)")
    p.add_argument("--data-dir", required=True,
                   help="folder with train.bin, val.bin and meta.json (data encode)")
    p.add_argument("--out-dir", required=True, nargs="+" if many else None,
                   help="folder to write metrics.jsonl, run.json and the checkpoints to"
                   + (" (one per --label)" if many else ""))
    p.add_argument("--threads", type=int, default=1, help="torch threads on CPU (default 1)")
    p.add_argument("--processes", type=int, default=1,
                   help="data-parallel processes: more than 1 starts them with torchrun "
                   "(default 1)")


def register(sub) -> None:
    """Add `train VERB` to the `scalinglab` parser's subparsers."""
    train = grammar.group(sub, "train", "the training jobs of every phase's runs")

    p = grammar.verb(train, "stable", _stable,
                     "warmup + stable phase of one series, with a checkpoint per branch point")
    _job_arguments(p)

    p = grammar.verb(train, "branch", _branch,
                     "decay one branch from its stable checkpoint (or several, in turn)")
    _job_arguments(p, many=True)
    p.add_argument("--label", required=True, nargs="+",
                   help="the branch's label in the spec (e.g. its token-budget fraction); "
                   "several: one process decays each in turn")
    p.add_argument("--checkpoint", required=True, nargs="+",
                   help="the stable run's checkpoint at this branch point (one per --label)")
    p.add_argument("--skip-untrained", action="store_true",
                   help="write placeholder outputs (run.json with trained: false, an empty "
                   "metrics.jsonl) for a label the spec leaves out, instead of decaying it")
