"""The command line's grammar: every argument has help, every verb path has its own handler, and
every `python -m scalinglab ...` that a rule, the Makefile or the GPU check runs names a verb
and options that exist."""

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scalinglab import phases
from scalinglab.cli import grammar
from scalinglab.cli.io import merged_config
from scalinglab.cli.main import build_parser, main
from scalinglab.config import StudyConfig, from_dict
from scalinglab.training import gpu_check

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def test_every_argument_and_verb_has_help(parser):
    missing = []
    for path, p in grammar.parsers(parser):
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                missing += [(*path, choice.dest) for choice in action._choices_actions
                            if not (choice.help or "").strip()]
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append((*path, action.dest))
    assert missing == []


def test_no_two_verb_paths_share_a_handler(parser):
    handlers = {}
    for path, leaf in grammar.verbs(parser).items():
        func = leaf.get_default("func")
        assert callable(func), path
        handlers.setdefault(func, []).append(" ".join(path))
    shared = [paths for paths in handlers.values() if len(paths) > 1]
    assert shared == []
    assert len(handlers) >= 30  # the walk reached the groups' verbs


def _commands(text: str) -> list[str]:
    """Each `python -m scalinglab ...` in `text`, a rule's adjacent string literals joined."""
    joined = re.sub(r'"\s*\n\s*"', "", text)  # "a"\n    " b" -> "a b"
    return re.findall(r"python -m scalinglab ([^\"\n>]*)", joined)


def _leaf(parser, words: list[str]):
    """The verb parser that `words` name, and the words after its path."""
    p, rest = parser, list(words)
    while True:
        groups = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups:
            return p, rest
        assert rest and rest[0] in groups[0].choices, f"no verb {' '.join(words)!r}"
        p = groups[0].choices[rest.pop(0)]


def _called_commands() -> list[tuple[str, str]]:
    found = []
    for path in [*sorted((REPO / "workflow/rules").glob("*.smk")), REPO / "Makefile"]:
        code = "\n".join(line for line in path.read_text().splitlines()
                         if not line.lstrip().startswith("#"))
        # steps.smk runs each step's own command (`{params.command}`); the steps are read below
        found += [(path.name, command) for command in _commands(code)
                  if not command.startswith("{params.command}")]
    # the phases' analysis steps (steps.smk makes their rules), every phase on
    configs = [REPO / "config.yaml", *(REPO / "workflow/configs").glob("*.yaml")]
    for path in configs:
        cfg = from_dict(StudyConfig, merged_config([str(REPO / "config.yaml"), str(path)]))
        found += [(f"steps ({path.name})", step.command)
                  for step in phases.steps(cfg, phases.training_groups(cfg))]
    return found


def test_every_command_that_rules_and_the_makefile_run_exists(parser):
    commands = _called_commands()
    assert {name for name, _ in commands} >= {"train.smk", "data.smk", "laws.smk", "Makefile",
                                              "steps (config.yaml)"}
    # every step verb appears (fit, plot, plan, ... of each phase)
    verbs = {" ".join(command.split()[:2]) for name, command in commands
             if name.startswith("steps")}
    assert {"hparams fit", "lr-transfer plan", "depth-transfer fit", "validation spec",
            "schedule-law predict", "isoflop plot"} <= verbs
    for name, command in commands:
        leaf, rest = _leaf(parser, command.split())
        options = {word for word in rest if word.startswith("--")}
        unknown = options - set(leaf._option_string_actions)
        assert not unknown, f"{name}: {command!r}: no option {sorted(unknown)}"


def test_the_gpu_check_runs_an_existing_verb(parser):
    leaf, rest = _leaf(parser, ["bench", "train", *gpu_check._bench_args("gpu", True)])
    assert leaf.get_default("command") == "bench train"
    options = {word for word in rest if word.startswith("--")}
    assert options <= set(leaf._option_string_actions)


def test_a_user_error_is_one_line_naming_the_verb_path(tmp_path, capsys):
    out = tmp_path / "plan.csv"
    code = main(["isoflop", "plan", "--config", str(tmp_path / "missing.json"),
                 "--meta", str(tmp_path / "meta.json"), "--out", str(out)])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert err.startswith("scalinglab isoflop plan: error: ") and "missing.json" in err
    assert err.count("\n") == 1


def test_an_old_verb_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["plan-study", "--config", "x.json"])
    assert exit_.value.code == 2
    assert "invalid choice: 'plan-study'" in capsys.readouterr().err


def test_the_parser_loads_no_heavy_library():
    """`--help` builds the whole parser: it must not wait for torch, pandas or scipy."""
    code = ("import sys; from scalinglab.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'pandas', 'scipy', 'matplotlib') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=REPO)
    assert done.stdout.strip() == "[]"
