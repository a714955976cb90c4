"""Bad input to every command: one line `cxlnet <command>: error: ...` naming the file, record or
config key, a non-zero exit, no traceback, and no trace in the directory the command refused.

Each case runs the command in this process (`cxlnet.cli.main`). Values, paths and the run
directory are checked before Hydra creates anything, so most cases take milliseconds; the ones
that load a model (wrong size, wrong head, unsafe pickle) take about a second.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from cxlnet import cli
from cxlnet.paths import sample_dir

HFL_SPIECE = sample_dir() / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model"
CORPUS = sample_dir() / "corpus" / "zh-hans.txt"


class RunsCode:
    """A pickle that would run a shell command when loaded (never loaded by the code under test)."""

    def __reduce__(self):
        return (os.system, ("echo this-should-never-run",))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Artefacts the cases point at: fine-tuned tiny models of both kinds, broken weights, a token
    store, checkpoints (a real one, truncated, foreign, code-executing)."""
    from cxlnet.model import XLNetConfig, XLNetForQuestionAnswering, XLNetForSequenceClassification
    from cxlnet.pretrain.corpus import build_store
    from cxlnet.text import Tokenizer

    w = tmp_path_factory.mktemp("world")
    tiny = XLNetConfig.named("tiny", vocab_size=32000)
    XLNetForSequenceClassification(tiny, num_labels=2).save_pretrained(w / "cls-model")
    XLNetForQuestionAnswering(tiny).save_pretrained(w / "qa-model")
    (w / "unsafe-bin").mkdir()
    (w / "unsafe-bin" / "config.json").write_bytes((w / "cls-model" / "config.json").read_bytes())
    torch.save({"transformer.word_embedding.weight": RunsCode()}, w / "unsafe-bin" / "pytorch_model.bin")
    (w / "truncated-st").mkdir()
    (w / "truncated-st" / "config.json").write_bytes((w / "cls-model" / "config.json").read_bytes())
    (w / "truncated-st" / "model.safetensors").write_bytes((w / "cls-model" / "model.safetensors").read_bytes()[:999])
    corpus = w / "corpus.txt"
    corpus.write_text("".join(CORPUS.read_text(encoding="utf-8").splitlines(keepends=True)[:120]), encoding="utf-8")
    build_store([corpus], Tokenizer(HFL_SPIECE), w / "store", num_shards=1)
    torch.save({"global_step": 3, "state_dict": {"x": torch.ones(1)}}, w / "foreign.ckpt")
    torch.save({"global_step": 3, "cxlnet_pretrain": RunsCode()}, w / "unsafe.ckpt")
    good = pickle.dumps(None)
    (w / "truncated.ckpt").write_bytes(b"PK\x03\x04" + good)
    (w / "file").write_text("not a directory\n")
    (w / "empty.jsonl").write_text("\n\n")
    (w / "not-json.jsonl").write_text('{"text": "好"}\n{"text": \n')
    (w / "list.jsonl").write_text('["好"]\n')
    (w / "no-field.jsonl").write_text('{"question": "谁？"}\n')
    (w / "no-tab.tsv").write_text("label\ttext_a\n1\tgood\n0 no tab\n")
    (w / "bad-label.tsv").write_text("label\ttext_a\n1\tgood\n7\tbad\n")
    (w / "not-utf8.tsv").write_bytes(b"label\ttext_a\n1\tgood\n1\t\xff\xfe\n")
    (w / "bad.json").write_text('{"data": [\n  {"paragraphs": [}\n]}')
    (w / "no-data.json").write_text('{"version": "1"}')
    return w


FT = ["experiment=demo", "logger=none", "trainer.enable_progress_bar=false", "task.max_train_examples=16",
      "task.max_seq_length=32", "paths.output_dir={c}/runs", "hydra.run.dir={c}/run"]
SPAN = ["task=cmrc2018", "model=tiny", "logger=none", "trainer.enable_progress_bar=false",
        "task.max_seq_length=96", "task.max_eval_examples=4", "paths.output_dir={c}/runs", "hydra.run.dir={c}/run"]
TRAIN = ["experiment=pretrain_demo", "logger=none", "trainer.enable_progress_bar=false", "data.store={w}/store",
         "data.bsz=4", "data.seq_len=32", "data.reuse_len=16", "data.perm_size=16", "data.num_predict=6",
         "mem_len=16", "train.max_steps=2", "data.num_workers=0", "paths.output_dir={c}/runs",
         "hydra.run.dir={c}/run"]
PRED = ["task=chnsenticorp", "model=tiny", "model.pretrained={w}/cls-model", "predict.text=很好"]
QPRED = ["task=cmrc2018", "model=tiny", "predict.question=谁？", "predict.context=张三在北京。"]


@dataclass
class Case:
    id: str
    argv: list[str]
    expected: str               # a part of the one error line
    files: dict[str, str] = field(default_factory=dict)  # created in the case dir first; "x/": a directory
    slow: bool = False  # loads a model or data like a faster case of the same class


def case(id: str, base: list[str], extra: list[str], expected: str, files: dict[str, str] | None = None,
         slow: bool = False) -> Case:
    return Case(id, [*base, *extra], expected, files or {}, slow)


CASES = [
    # ------------------------------------------------------------------ values (finetune)
    case("batch-abc", ["finetune", *FT], ["task.batch_size=abc"], "task.batch_size=abc: expected a positive integer"),
    case("batch-zero", ["finetune", *FT], ["task.batch_size=0"], "task.batch_size=0: expected a positive integer"),
    case("batch-negative", ["finetune", *FT], ["task.batch_size=-4"], "task.batch_size=-4: expected"),
    case("batch-float", ["finetune", *FT], ["task.batch_size=1.5"], "task.batch_size=1.5: expected"),
    case("eval-batch-zero", ["finetune", *FT], ["task.eval_batch_size=0"], "task.eval_batch_size=0"),
    case("seed-negative", ["finetune", *FT], ["seed=-1"], "seed=-1: expected an integer from 0"),
    case("seed-text", ["finetune", *FT], ["seed=one"], "seed=one: expected"),
    case("seed-too-large", ["finetune", *FT], ["seed=4294967296"], "seed=4294967296"),
    case("lr-zero", ["finetune", *FT], ["optimizer.optim.lr=0"], "optimizer.optim.lr=0: expected a positive number"),
    case("lr-negative", ["finetune", *FT], ["optimizer.optim.lr=-1e-3"], "optimizer.optim.lr=-0.001"),
    case("lr-text", ["finetune", *FT], ["optimizer.optim.lr=fast"], "optimizer.optim.lr=fast"),
    case("lr-nan", ["finetune", *FT], ["optimizer.optim.lr=nan"], "optimizer.optim.lr=nan"),
    case("eps-zero", ["finetune", *FT], ["optimizer.optim.eps=0"], "optimizer.optim.eps=0"),
    case("warmup-ratio", ["finetune", *FT], ["optimizer.warmup_ratio=1.5"], "optimizer.warmup_ratio=1.5"),
    case("warmup-steps", ["finetune", *FT], ["optimizer.warmup_steps=-3"], "optimizer.warmup_steps=-3"),
    case("layer-decay", ["finetune", *FT], ["optimizer.layer_decay=0"], "optimizer.layer_decay=0"),
    case("max-steps-zero", ["finetune", *FT], ["task.max_steps=0"], "task.max_steps=0: expected -1 or a positive"),
    case("epochs-zero", ["finetune", *FT], ["task.epochs=0"], "task.epochs=0"),
    case("nothing-to-train", ["finetune", *FT], ["task.epochs=-1", "task.max_steps=-1"], "nothing to train"),
    case("seq-too-short", ["finetune", *FT], ["task.max_seq_length=2"], "task.max_seq_length=2: too small"),
    case("span-seq-too-short", ["finetune", *SPAN], ["task.max_seq_length=60"],
         "task.max_seq_length=60: too small for the layout"),
    case("doc-stride-zero", ["finetune", *SPAN], ["task.doc_stride=0"], "task.doc_stride=0"),
    case("num-labels", ["finetune", *FT], ["task.num_labels=1"], "task.num_labels=1: expected an integer >= 2"),
    case("micro-batch-zero", ["finetune", *FT], ["hardware.micro_batch_size=0"], "hardware.micro_batch_size=0"),
    case("clip-negative", ["finetune", *FT], ["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1"),
    case("limit-zero", ["finetune", *FT], ["trainer.limit_train_batches=0"], "trainer.limit_train_batches=0"),
    case("workers-negative", ["finetune", *FT], ["hardware.num_workers=-1"], "hardware.num_workers=-1"),
    case("devices-zero", ["finetune", *FT], ["hardware.devices=0"], "hardware.devices=0"),
    case("memory-seq-zero", ["memory", "task=cmrc2018"], ["task.max_seq_length=0"], "task.max_seq_length=0: expected a positive integer"),
    case("logger-kind", ["finetune", *FT], ["logger.kind=tensorboard"], "logger.kind=tensorboard: expected one of"),
    case("bool-text", ["finetune", *FT], ["model.grad_checkpointing=maybe"], "model.grad_checkpointing=maybe"),
    case("sweep-one-bad-seed", ["finetune", *FT], ["-m", "seed=0,-2"], "seed=-2"),
    # ------------------------------------------------------------------ paths (finetune)
    case("run-dir-is-file", ["finetune", *FT], ["hydra.run.dir={w}/file"], "hydra.run.dir={w}/file: a file"),
    case("run-dir-under-file", ["finetune", *FT], ["hydra.run.dir={w}/file/run"], "{w}/file is a file"),
    case("finished-run", ["finetune", *FT], [], "this run already finished",
         files={"run/metrics.json": '{"metrics": {"dev/acc": 99.0}}', "run/config.yaml": "seed: 0\n"}),
    case("train-file-missing", ["finetune", *FT], ["task.train_file={c}/nope.tsv"], "nope.tsv: "),
    case("tsv-no-tab", ["finetune", *FT], ["task.dev_file={w}/no-tab.tsv"], "no-tab.tsv:3: no tab"),
    case("tsv-bad-label", ["finetune", *FT], ["task.dev_file={w}/bad-label.tsv"], "bad-label.tsv:3: label '7'", slow=True),
    case("tsv-not-utf8", ["finetune", *FT], ["task.dev_file={w}/not-utf8.tsv"], "not-utf8.tsv:3: not valid UTF-8", slow=True),
    case("spiece-missing", ["finetune", *FT], ["model.spiece_model={c}/nope.model"], "nope.model: "),
    case("data-dir-is-file", ["finetune", *FT], ["paths.data_dir={w}/file"], "paths.data_dir={w}/file: not a directory"),
    # ------------------------------------------------------------------ weights and mismatches
    case("pretrained-missing", ["finetune", *FT], ["model.pretrained={c}/no-weights"], "no-weights: no such file"),
    case("size-mismatch", ["finetune", *FT], ["model=base", "model.pretrained={w}/cls-model"],
         "but model=base is n_layer 12"),
    case("unsafe-bin", ["finetune", *FT], ["model.pretrained={w}/unsafe-bin"],
         "pytorch_model.bin: refused: this PyTorch weights file holds Python code"),
    case("truncated-safetensors", ["finetune", *FT], ["model.pretrained={w}/truncated-st"],
         "model.safetensors: cannot read safetensors file"),
    case("span-head-on-classifier", ["eval", *SPAN], ["model.pretrained={w}/cls-model"],
         "weights for a span task (task=cmrc2018)"),
    case("classifier-head-on-span-model", ["eval", *FT], ["model.pretrained={w}/qa-model"],
         "no logits_proj/sequence_summary weights for a classification task", slow=True),
    # ------------------------------------------------------------------ eval / predict
    case("eval-no-pretrained", ["eval", *FT], [], "cxlnet eval needs model.pretrained="),
    case("eval-finished", ["eval", *FT], ["model.pretrained={w}/cls-model"], "this run already finished",
         files={"run/metrics.json": "{}"}),
    case("predict-no-pretrained", ["predict", "task=chnsenticorp", "predict.text=好"], [],
         "cxlnet predict needs model.pretrained="),
    case("predict-no-text", ["predict", *PRED[:3]], [], "give predict.text=... or predict.input=FILE.jsonl"),
    case("predict-empty-input", ["predict", *PRED[:3]], ["predict.input={w}/empty.jsonl"],
         "empty.jsonl: no items"),
    case("predict-input-missing", ["predict", *PRED[:3]], ["predict.input={c}/nope.jsonl"], "nope.jsonl: file not found"),
    case("predict-input-dir", ["predict", *PRED[:3]], ["predict.input={w}"], "predict.input={w}: a directory"),
    case("predict-input-not-json", ["predict", *PRED[:3]], ["predict.input={w}/not-json.jsonl"],
         "not-json.jsonl:2:", slow=True),
    case("predict-input-not-object", ["predict", *PRED[:3]], ["predict.input={w}/list.jsonl"],
         "list.jsonl:1: expected a JSON object", slow=True),
    case("predict-input-no-field", ["predict", *QPRED, "model.pretrained={w}/qa-model"],
         ["predict.input={w}/no-field.jsonl"], "no-field.jsonl:1: missing context", slow=True),
    case("predict-output-dir", ["predict", *PRED], ["predict.output={w}"], "predict.output={w}: a directory"),
    case("predict-output-exists", ["predict", *PRED], ["predict.output={c}/labels.jsonl"],
         "predict.output={c}/labels.jsonl: the file exists; predict.overwrite=true replaces it",
         files={"labels.jsonl": "{}\n"}),
    case("predict-wrong-head", ["predict", *QPRED], ["model.pretrained={w}/cls-model"], "for a span task"),
    case("predict-unsafe-bin", ["predict", *PRED[:2]], ["model.pretrained={w}/unsafe-bin", "predict.text=好"],
         "refused: this PyTorch weights file holds Python code", slow=True),
    case("predict-batch-zero", ["predict", *PRED], ["task.eval_batch_size=0"], "task.eval_batch_size=0"),
    # ------------------------------------------------------------------ vocab / data
    case("vocab-size-zero", ["vocab", "paths.output_dir={c}/runs", "hydra.run.dir={c}/run"], ["vocab.vocab_size=0"],
         "vocab.vocab_size=0: expected a positive integer"),
    case("vocab-size-text", ["vocab", "hydra.run.dir={c}/run"], ["vocab.vocab_size=big"], "vocab.vocab_size=big"),
    case("vocab-coverage", ["vocab", "hydra.run.dir={c}/run"], ["vocab.character_coverage=2"],
         "vocab.character_coverage=2"),
    case("vocab-output-is-dir", ["vocab", "hydra.run.dir={c}/run"], ["vocab.output={c}/sp"],
         "vocab.output={c}/sp.model: a directory", files={"sp.model/": ""}),
    case("vocab-exists", ["vocab", "hydra.run.dir={c}/run"], ["vocab.output={c}/sp"],
         "sp.model exists (token stores may be built with it); vocab.overwrite=true replaces it",
         files={"sp.model": "an earlier vocabulary", "sp.vocab": "its pieces"}),
    case("vocab-input-missing", ["vocab", "hydra.run.dir={c}/run", "vocab.output={c}/sp"],
         ["vocab.inputs=[{c}/missing.txt]"], "missing.txt"),
    case("data-shards-zero", ["data", "hydra.run.dir={c}/run"], ["data.num_shards=0"], "data.num_shards=0"),
    case("data-out-is-file", ["data", "hydra.run.dir={c}/run"], ["data.out_dir={w}/file"],
         "data.out_dir={w}/file: a file, not a directory"),
    case("data-corpus-missing", ["data", "hydra.run.dir={c}/run", "data.spiece_model=" + str(HFL_SPIECE),
                                 "data.out_dir={c}/store"], ["data.corpus=[{c}/missing.txt]"], "missing.txt"),
    case("data-spiece-missing", ["data", "hydra.run.dir={c}/run", "data.out_dir={c}/store"],
         ["data.spiece_model={c}/nope.model"], "nope.model"),
    # ------------------------------------------------------------------ train
    case("train-max-steps-zero", ["train", *TRAIN], ["train.max_steps=0"], "train.max_steps=0: expected a positive"),
    case("train-bsz-zero", ["train", *TRAIN], ["data.bsz=0"], "data.bsz=0"),
    case("train-reuse-too-long", ["train", *TRAIN], ["data.reuse_len=30"], "data.reuse_len=30: must be below"),
    case("train-perm-size", ["train", *TRAIN], ["data.perm_size=5"], "data.perm_size=5: must divide"),
    case("train-mem-negative", ["train", *TRAIN], ["mem_len=-1"], "mem_len=-1"),
    case("train-stop-after-text", ["train", *TRAIN], ["train.stop_after=soon"], "train.stop_after=soon"),
    case("train-stop-after-past-end", ["train", *TRAIN], ["train.stop_after=2"], "train.stop_after=2: must be below"),
    case("train-save-steps-zero", ["train", *TRAIN], ["train.save_steps=0"], "train.save_steps=0"),
    case("train-store-missing", ["train", *TRAIN], ["data.store={c}/nostore"], "nostore"),
    case("train-run-dir-is-file", ["train", *TRAIN], ["hydra.run.dir={w}/file"], "a file, not a directory"),
    case("train-finished", ["train", *TRAIN], [], "this run already finished", files={"run/metrics.json": "{}"}),
    case("train-ckpt-path-missing", ["train", *TRAIN], ["train.ckpt_path={c}/none.ckpt"], "no checkpoint there"),
    case("resume-truncated", ["train", *TRAIN], [], "last.ckpt: truncated or not a checkpoint",
         files={"run/config.yaml": "seed: 0\n", "run/checkpoints/last.ckpt": "PK\x03\x04 half a checkpoint"}),
    case("resume-empty", ["train", *TRAIN], [], "last.ckpt: truncated or not a checkpoint",
         files={"run/config.yaml": "seed: 0\n", "run/train.log": "an earlier run\n", "run/checkpoints/last.ckpt": ""}),
    case("resume-code", ["train", *TRAIN], ["train.ckpt_path={w}/unsafe.ckpt"],
         "unsafe.ckpt: refused: this checkpoint holds Python code"),
    case("resume-foreign", ["train", *TRAIN], ["train.ckpt_path={w}/foreign.ckpt"],
         "foreign.ckpt: not a `cxlnet train` checkpoint"),
    case("train-size-mismatch", ["train", *TRAIN], ["model=base", "model.pretrained={w}/cls-model"],
         "but model=base is n_layer 12", slow=True),
    # ------------------------------------------------------------------ export / download / aggregate / table
    case("export-missing", ["export", "{c}/none.ckpt", "{c}/out"], [], "none.ckpt: no such checkpoint"),
    case("export-run-dir-without-ckpt", ["export", "{w}", "{c}/out"], [], "no checkpoints/last.ckpt"),
    case("export-truncated", ["export", "{w}/truncated.ckpt", "{c}/out"], [], "truncated or not a checkpoint"),
    case("export-code", ["export", "{w}/unsafe.ckpt", "{c}/out"], [], "refused: this checkpoint holds Python code"),
    case("export-foreign", ["export", "{w}/foreign.ckpt", "{c}/out"], [], "not a `cxlnet train` checkpoint"),
    case("export-out-exists", ["export", "{w}/foreign.ckpt", "{c}/out"], [],
         "out: already exists and is not empty; pass --overwrite", files={"out/config.json": "{}"}),
    case("export-out-is-file", ["export", "{w}/foreign.ckpt", "{w}/file"], [], "file: a file, not a directory"),
    case("download-cache-under-file", ["download", "cmrc2018", "--cache-dir", "{w}/file/cache"], [],
         "--cache-dir={w}/file/cache: {w}/file is a file"),
    case("download-unknown", ["download", "squad"], [], "unknown dataset squad"),
    case("aggregate-missing", ["aggregate", "{c}/nosweep"], [], "nosweep: not a directory"),
    case("table-missing", ["table", "render", "{c}/notables"], [], "no experiment tables"),
]
def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    assert {c.argv[0] for c in CASES} == set(cli.COMMANDS)  # every command


@pytest.mark.parametrize("bad", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in CASES])
def test_bad_input_is_one_line_and_leaves_no_trace(bad: Case, world, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("CXLNET_DATA_DIR", "HYDRA_FULL_ERROR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CXLNET_CACHE_DIR", str(world / "cache"))
    for rel, text in bad.files.items():
        path = tmp_path / rel
        if rel.endswith("/"):
            path.mkdir(parents=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    fmt = {"c": tmp_path, "w": world}
    argv = [a.format(**fmt) for a in bad.argv]
    before = snapshot(tmp_path)

    rc, out, err = run_cli(*argv)

    assert rc != 0, (out, err)
    assert "Traceback" not in out + err and "weights_only" not in out + err, err
    command = argv[0]
    errors = [ln for ln in err.splitlines() if ln.startswith(f"cxlnet {command}: error: ")]
    assert len(errors) == 1, err
    assert bad.expected.format(**fmt) in errors[0], errors[0]
    assert snapshot(tmp_path) == before, "the refused command changed the directory"


def test_impossible_cmrc_answers_are_named_with_file_and_question_id(caplog):
    from cxlnet.span.examples import parse_squad

    qas = [{"id": "Q-NEG", "question": "q", "answers": [{"text": "乙", "answer_start": -5}]},
           {"id": "Q-PAST", "question": "q", "answers": [{"text": "乙", "answer_start": 400}]},
           {"id": "Q-EMPTY", "question": "q", "answers": [{"text": " ", "answer_start": 0}]},
           {"id": "Q-FREE", "question": "q", "answers": [{"text": "39764.0", "answer_start": -1}]},
           {"id": "Q-OK", "question": "q", "answers": [{"text": "乙", "answer_start": 1}]}]
    with caplog.at_level("WARNING"):
        examples, stats = parse_squad({"data": [{"paragraphs": [{"context": "甲乙丙", "qas": qas}]}]},
                                      source="cmrc2018/dev.json")
    assert stats.impossible == 3 and stats.start_minus_one == 1 and len(examples) == 5
    warning = [r.getMessage() for r in caplog.records if "impossible" in r.getMessage()]
    assert len(warning) == 1 and warning[0].startswith("cmrc2018/dev.json: 3 answers with an impossible offset")
    for qid in ("Q-NEG answer 0 (answer_start -5", "Q-PAST answer 0 (answer_start 400", "Q-EMPTY"):
        assert qid in warning[0]
    assert "Q-FREE" not in warning[0] and "Q-OK" not in warning[0]
    assert [e.trainable for e in examples] == [False, False, False, False, True]


def test_download_list_shows_each_files_hash():
    import io

    from rich.console import Console

    from cxlnet.download import REGISTRY, main

    console = Console(file=io.StringIO(), width=200)
    assert main(["--list"], console=console) == 0
    out = console.file.getvalue()
    entries = [e for ds in REGISTRY for f in ds.files for e in (f.members or (f,))]
    for e in entries:
        shown = f"sha256 {e.sha256[:12]}" if e.sha256 else f"git blob {e.git_blob[:12]}" if e.git_blob else None
        if shown:
            assert shown in out, shown
    if any(not (e.sha256 or e.git_blob) for e in entries):
        assert "files have no published hash: their sha256 is computed and printed" in out
