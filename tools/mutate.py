"""Mutation testing of cxlnet's core modules (`make mutate`), with mutmut's mutation engine.

Every mutant is one small change mutmut makes to one line (an operator, a number, a string, a
keyword, a dropped argument...). Each mutant is written into a scratch copy of the checkout
(build/mutate/src, never the working tree) and the module's own tests run against it with
`pytest -x`: the mutant is killed when they fail or time out, and survives when they pass.
The score of a module is killed / run. A module with more mutants than `--sample` is sampled at
random (fixed `--seed`), and `--budget` stops a module after that many seconds; the report says
exactly how many mutants there were, how many were drawn and how many ran.

    python tools/mutate.py                                # every module, every mutant (hours)
    python tools/mutate.py --sample 40 --budget 900       # at most 40 mutants / 15 minutes per module
    python tools/mutate.py --only cxlnet/sweep.py --show  # one module; print the survivors' diffs
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mutmut import ALL, Context, list_mutations, mutate

REPO = Path(__file__).resolve().parents[1]

# module (or package) -> the fast tests that guard it (the default suite's, no `slow`)
MODULE_TESTS = {
    "cxlnet/model/model.py": ["tests/test_model_core.py", "tests/test_model_parity.py"],
    "cxlnet/model/heads.py": ["tests/test_heads_parity.py", "tests/test_model_parity.py"],
    "cxlnet/model/config.py": ["tests/test_model_config.py", "tests/test_model_parity.py", "tests/test_config.py"],
    "cxlnet/model/weights.py": ["tests/test_weights.py", "tests/test_tf_checkpoint.py"],
    "cxlnet/model/tf_checkpoint.py": ["tests/test_tf_checkpoint.py"],
    "cxlnet/span/metric.py": ["tests/test_span_metric.py", "tests/test_span_metric_official.py"],
    "cxlnet/span/decode.py": ["tests/test_span_decode.py"],
    "cxlnet/span/features.py": ["tests/test_span_features.py", "tests/test_span_decode.py"],
    "cxlnet/span/examples.py": ["tests/test_span_examples.py", "tests/test_span_decode.py"],
    "cxlnet/span/module.py": ["tests/test_anchors_ddp.py", "tests/test_span_cli.py"],
    "cxlnet/span/data.py": ["tests/test_span_cli.py"],
    "cxlnet/classify/data.py": ["tests/test_anchors_classify.py::test_feature_layout_left_pads_and_ends_with_sep_cls",
                                "tests/test_anchors_classify.py::test_data_module_encodes_each_given_split_once",
                                "tests/test_anchors_classify.py::test_bad_utf8_names_the_line_and_column",
                                "tests/test_anchors_classify.py::test_read_tsv_labels_and_line_numbers",
                                "tests/test_finetune_cli.py::test_read_tsv_keeps_quotes_and_skips_header"],
    "cxlnet/classify/module.py": ["tests/test_anchors_ddp.py", "tests/test_anchors_classify.py"],
    "cxlnet/pretrain/examples.py": ["tests/test_sample_mask.py", "tests/test_pretrain_data.py"],
    "cxlnet/training.py": ["tests/test_training.py", "tests/test_anchors_optim.py", "tests/test_training_parity.py",
                           "tests/test_batching.py", "tests/test_guard.py"],
    "cxlnet/sweep.py": ["tests/test_sweep_files.py", "tests/test_anchors_optim.py::test_sweep_summary_std_is_the_sample_std",
                        "tests/test_anchors_ddp.py::test_aggregate_rebuilds_the_summary_from_run_files"],
}


def copy_checkout(dest: Path) -> None:
    """The tracked and untracked-but-not-ignored files of the checkout, fresh."""
    if dest.exists():
        shutil.rmtree(dest)
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)


def run_tests(src: Path, tests: list[str], timeout: float) -> tuple[str, float]:
    """'pass', 'fail' or 'timeout', and the seconds it took."""
    env = {**os.environ, "PYTHONPATH": str(src), "WANDB_MODE": "disabled", "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.time()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=src, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.time() - started
    return ("pass" if proc.returncode == 0 else "fail"), time.time() - started


def mutate_module(src: Path, module: str, tests: list[str], sample: int, budget: float, seed: int) -> dict:
    path = src / module
    original = path.read_text(encoding="utf-8")
    mutations = list_mutations(Context(source=original, filename=str(path), mutation_id=ALL))
    # random order, so that a module stopped by --budget has still run a uniform random sample
    drawn = random.Random(seed).sample(mutations, min(sample or len(mutations), len(mutations)))
    status, baseline = run_tests(src, tests, timeout=3600)
    if status != "pass":
        raise SystemExit(f"{module}: its tests fail without a mutation ({' '.join(tests)})")
    timeout = max(60.0, 3 * baseline)
    result = {"module": module, "tests": tests, "mutants": len(mutations), "drawn": len(drawn), "run": 0,
              "killed": 0, "timed_out": 0, "survived": [], "baseline_s": round(baseline, 1)}
    started = time.time()
    try:
        for mutation in drawn:
            if time.time() - started > budget:
                break
            context = Context(source=original, filename=str(path), mutation_id=mutation)
            mutated, _ = mutate(context)
            path.write_text(mutated, encoding="utf-8")
            outcome, seconds = run_tests(src, tests, timeout)
            result["run"] += 1
            print(f"  {module}:{mutation.line_number} {outcome} ({seconds:.0f} s)", flush=True)
            if outcome == "pass":
                diff = difflib.unified_diff(original.splitlines(), mutated.splitlines(), module, module, n=0,
                                            lineterm="")
                result["survived"].append({"line": mutation.line_number, "diff": "\n".join(list(diff)[2:])})
            else:  # a timeout counts as killed (as in mutmut) and is reported apart
                result["killed"] += 1
                result["timed_out"] += outcome == "timeout"
    finally:
        path.write_text(original, encoding="utf-8")
    result["score"] = round(100.0 * result["killed"] / result["run"], 1) if result["run"] else None
    result["seconds"] = round(time.time() - started)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="modules to mutate (default: all of MODULE_TESTS)")
    parser.add_argument("--sample", type=int, default=0, help="at most this many mutants per module (0: all)")
    parser.add_argument("--budget", type=float, default=float("inf"), help="seconds per module")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "mutate")
    parser.add_argument("--show", action="store_true", help="print the survivors' diffs")
    args = parser.parse_args(argv)
    modules = args.only or list(MODULE_TESTS)
    unknown = [m for m in modules if m not in MODULE_TESTS]
    if unknown:
        parser.error(f"no tests listed for {', '.join(unknown)} (see MODULE_TESTS)")
    src = (args.out / "src").resolve()  # absolute: the CLI tests run subprocesses in other directories
    copy_checkout(src)
    report_path = args.out / "report.json"
    results = json.loads(report_path.read_text()) if report_path.is_file() else {}
    for module in modules:
        result = mutate_module(src, module, MODULE_TESTS[module], args.sample, args.budget, args.seed)
        results[module] = result
        report_path.write_text(json.dumps(results, indent=1, ensure_ascii=False))
        print(f"{module}: {result['killed']}/{result['run']} killed ({result['score']}%, "
              f"{result['timed_out']} by a timeout), "
              f"{result['run']} of {result['drawn']} drawn of {result['mutants']} mutants, {result['seconds']} s",
              flush=True)
        if args.show:
            for survivor in result["survived"]:
                print(survivor["diff"], flush=True)
    print(f"report: {report_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
