"""The `cxlnet` command: one sub-command per job, each a Hydra app (or a plain argparse tool).

    cxlnet finetune task=cmrc2018 model=mid hardware=gpu
    cxlnet finetune task=chnsenticorp -m 'seed=range(10)'
    cxlnet aggregate runs/chnsenticorp/base/sweep_...

The sub-command is also passed to child processes in $CXLNET_COMMAND, because Lightning's DDP
re-executes `sys.argv` (which no longer holds it) in every worker.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from cxlnet.errors import CxlnetError, one_line

# name -> (module:function, one-line help). Hydra apps take overrides; the others take argv.
COMMANDS = {
    "finetune": ("cxlnet.finetune:main", "fine-tune on chnsenticorp | cmrc2018 | drcd (Hydra overrides, -m sweeps)"),
    "eval": ("cxlnet.evaluate:eval_main", "score a fine-tuned model on dev / task.test_file (metrics.json)"),
    "predict": ("cxlnet.evaluate:predict_main", "answer questions / label texts with a fine-tuned model"),
    "aggregate": ("cxlnet.sweep:main", "rebuild a sweep's summary.json (max (mean)) from its runs' metrics.json"),
    "download": ("cxlnet.download:main", "download and verify data sets and hfl files into the cache"),
    "table": ("cxlnet.table:main", "run | render the experiments/ tables (published vs cxlnet, max (mean))"),
    "vocab": ("cxlnet.pretrain.commands:vocab_main",
              "train a SentencePiece vocabulary with Chinese-XLNet's settings; `vocab inspect TEXT`: its pieces"),
    "data": ("cxlnet.pretrain.commands:data_main", "encode a pre-training corpus into a sharded token store"),
    "train": ("cxlnet.pretrain.commands:train_main", "pre-train XLNet (permutation LM with memory; resumes)"),
    "export": ("cxlnet.pretrain.commands:export_main", "CKPT_OR_RUN_DIR OUT_DIR: checkpoint -> Hugging Face format"),
}
HYDRA_APPS = {"finetune", "eval", "predict", "vocab", "data", "train"}
# `<command> <tool> ...`: plain argparse tools under a Hydra command's name.
SUB_TOOLS = {("vocab", "inspect"): "cxlnet.vocab_inspect:main"}
ENV_COMMAND = "CXLNET_COMMAND"


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items())
    return (
        "usage: cxlnet <command> [hydra overrides] [-m]\n\ncommands:\n" + rows +
        "\n\n`cxlnet <command> --help` lists a command's config groups; `--cfg job` prints its composed config."
    )


def _load(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _conf_groups() -> set[str]:
    from cxlnet.confdir import conf_dir

    return {p.name for p in conf_dir().iterdir() if p.is_dir() and not p.name.startswith("_")}


def sweep_subdir(overrides: list[str]) -> str | None:
    """A `hydra.sweep.subdir` override for a sweep over more than the seed: `key=<value>,...,seed=N`,
    so each job gets its own directory (the default `seed=N` would put two learning rates into one
    and refuse the second as already finished). None when only seeds vary or the user chose one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return None  # Hydra reports the bad override itself
    if any(o.key_or_group == "hydra.sweep.subdir" for o in parsed):
        return None
    groups = _conf_groups()
    swept = [o.key_or_group for o in parsed if o.is_sweep_override() and o.key_or_group != "seed"]
    if not swept:
        return None
    value = lambda key: f"${{hydra:runtime.choices.{key}}}" if key in groups else f"${{{key}}}"  # noqa: E731
    return "hydra.sweep.subdir='" + ",".join(f"{k}={value(k)}" for k in swept) + ",seed=${seed}'"


# Hydra's flags that take a value (`--info` takes one optionally: only a known topic).
_VALUE_FLAGS = {"-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn", "--config-name",
                "-cd", "--config-dir", "--experimental-rerun", "-sc", "--shell-completion"}
_INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def split_hydra_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(flags with their values, overrides): Hydra's argparse takes no override after a flag, so
    `finetune task=x -m 'seed=range(3)'` and `finetune a=1 --cfg job b=2` are reordered flags first."""
    flags, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            overrides.append(arg)
        else:
            flags.append(arg)
            takes = arg in _VALUE_FLAGS or (arg in ("-i", "--info") and i + 1 < len(argv) and argv[i + 1] in _INFO_TOPICS)
            if takes and i + 1 < len(argv):
                i += 1
                flags.append(argv[i])
        i += 1
    return flags, overrides


# Free text on the command line (questions, passages, reviews) is quoted for Hydra's override
# grammar, which rejects unquoted full-width punctuation such as `？` and `，`.
FREE_TEXT_KEYS = ("predict.question=", "predict.context=", "predict.text=")


def quote_free_text(arg: str) -> str:
    key, eq, value = arg.partition("=")
    if not arg.startswith(FREE_TEXT_KEYS) or value[:1] in ("'", '"'):
        return arg
    return f"{key}{eq}'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        command = argv.pop(0)
    elif os.environ.get(ENV_COMMAND) in COMMANDS and not (argv and argv[0] in ("-h", "--help")):
        command = os.environ[ENV_COMMAND]
    else:
        if not argv or argv[0] in ("-h", "--help"):
            print(usage())
            return 0
        print(f"cxlnet: error: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        if (command, argv[0] if argv else None) in SUB_TOOLS:
            return int(_load(SUB_TOOLS[command, argv[0]])(argv[1:]) or 0)
        if command in HYDRA_APPS:
            os.environ[ENV_COMMAND] = command
            flags, overrides = split_hydra_args(argv)
            overrides = [quote_free_text(a) for a in overrides]
            multirun = any(f in ("-m", "--multirun") for f in flags)
            if multirun and any(f in ("-c", "--cfg", "-i", "--info") for f in flags):
                raise CxlnetError("-m cannot be combined with --cfg / --info: drop -m to see one job's config")
            subdir = sweep_subdir(overrides) if multirun else None
            argv = flags + overrides + ([subdir] if subdir else [])
            sys.argv = [sys.argv[0], *argv]  # argv[0] stays: DDP workers re-execute it
            _load(COMMANDS[command][0])()
            return 0
        return int(_load(COMMANDS[command][0])(argv) or 0)
    except CxlnetError as err:
        print(f"cxlnet {command}: error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
