#!/usr/bin/env python3
"""Cut the small data sample shipped inside the package (`cxlnet/sample/`) from the full data sets.

This script is the record of how the sample was cut. It is deterministic: the same full data gives
byte-identical sample files (selection is by sha256 of stable record keys, never by `random`).

    python tools/make_sample.py [--data-dir ../shared/data] [--out cxlnet/sample]

The full data directory has the layout described in shared/data/SOURCES.md (cmrc2018/, drcd/,
chnsenticorp/, corpus/, pretrained/). The output has the same layout, plus NOTICE.md with sources,
licenses, per-file counts and sha256.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "cxlnet" / "sample"

# Sizes of the cut (change only together with NOTICE.md, which is regenerated).
CHNSENTICORP_TRAIN_PER_LABEL = 1250
CMRC_TRAIN_PARAGRAPHS = 250
CMRC_DEV_PARAGRAPHS = 100
CMRC_DEV_MIN_NEG_START_PARAGRAPHS = 10
CMRC_TRIAL_PARAGRAPHS = 30
DRCD_TRAIN_MIN_PARAGRAPHS = 36
DRCD_DEV_MIN_PARAGRAPHS = 16
CORPUS_MAX_BYTES = 250_000
CORPUS_SOURCE = "corpus/cmrc2018_train_trial_contexts.zh-hans.txt"
PRETRAINED_FILES = ("pretrained/hfl-chinese-xlnet-base/spiece.model",
                    "pretrained/hfl-chinese-xlnet-base/config.json")


def key_order(key: str) -> str:
    """A stable pseudo-random rank for a record key."""
    return hashlib.sha256(("cxlnet-sample:" + key).encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def utf16_offset_answers(paragraph: dict) -> int:
    """Answers whose answer_start counts UTF-16 units: context[s:s+len(text)] != text (s >= 0)."""
    context = paragraph["context"]
    n = 0
    for qa in paragraph["qas"]:
        for ans in qa["answers"]:
            s = ans["answer_start"]
            if s >= 0 and context[s:s + len(ans["text"])] != ans["text"]:
                n += 1
    return n


def negative_start_answers(paragraph: dict) -> int:
    return sum(ans["answer_start"] < 0 for qa in paragraph["qas"] for ans in qa["answers"])


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")


def squad_counts(obj: dict) -> dict:
    arts = obj["data"]
    paras = [p for a in arts for p in a["paragraphs"]]
    qas = [q for p in paras for q in p["qas"]]
    return {"articles": len(arts), "paragraphs": len(paras), "questions": len(qas),
            "answers": sum(len(q["answers"]) for q in qas),
            "utf16_offset_answers": sum(utf16_offset_answers(p) for p in paras),
            "answer_start_-1": sum(negative_start_answers(p) for p in paras)}


def cut_cmrc(full: dict, n: int, must: set[int], extra_must: list[int] = ()) -> dict:
    """Keep whole articles (CMRC has one paragraph per article), in file order."""
    arts = full["data"]
    chosen = set(must) | set(extra_must)
    for i in sorted(range(len(arts)), key=lambda i: key_order(arts[i]["paragraphs"][0]["id"])):
        if len(chosen) >= n:
            break
        chosen.add(i)
    return {"version": full["version"], "data": [a for i, a in enumerate(arts) if i in chosen]}


def make_cmrc(data_dir: Path, out: Path) -> dict:
    stats = {}
    for split, n in (("train", CMRC_TRAIN_PARAGRAPHS), ("dev", CMRC_DEV_PARAGRAPHS),
                     ("trial", CMRC_TRIAL_PARAGRAPHS)):
        full = json.loads((data_dir / "cmrc2018" / f"{split}.json").read_text(encoding="utf-8"))
        arts = full["data"]
        must = {i for i, a in enumerate(arts) if any(utf16_offset_answers(p) for p in a["paragraphs"])}
        extra: list[int] = []
        if split == "dev":
            neg = [i for i, a in enumerate(arts) if any(negative_start_answers(p) for p in a["paragraphs"])]
            neg.sort(key=lambda i: key_order(arts[i]["paragraphs"][0]["id"]))
            extra = neg[:CMRC_DEV_MIN_NEG_START_PARAGRAPHS]
        sample = cut_cmrc(full, n, must, extra)
        full_counts = squad_counts(full)
        counts = squad_counts(sample)
        if counts["utf16_offset_answers"] != full_counts["utf16_offset_answers"]:
            raise SystemExit(f"cmrc2018/{split}: lost UTF-16 offset cases")
        write_json(out / "cmrc2018" / f"{split}.json", sample)
        stats[f"cmrc2018/{split}.json"] = counts
    return stats


def make_drcd(data_dir: Path, out: Path) -> dict:
    """DRCD has no train set in the data dir: split a few dozen paragraphs of the real dev file, by
    article title, into a sample train part and a disjoint sample dev part."""
    full = json.loads((data_dir / "drcd" / "dev.json").read_text(encoding="utf-8"))
    arts = full["data"]
    by_title: dict[str, list[int]] = {}
    for i, a in enumerate(arts):
        by_title.setdefault(a["title"], []).append(i)
    titles = sorted(by_title, key=key_order)
    train_idx: set[int] = set()
    dev_idx: set[int] = set()

    def n_paras(idx: set[int]) -> int:
        return sum(len(arts[i]["paragraphs"]) for i in idx)

    for title in titles:
        if n_paras(train_idx) < DRCD_TRAIN_MIN_PARAGRAPHS:
            train_idx.update(by_title[title])
        elif n_paras(dev_idx) < DRCD_DEV_MIN_PARAGRAPHS:
            dev_idx.update(by_title[title])
        else:
            break
    stats = {}
    for split, idx in (("train", train_idx), ("dev", dev_idx)):
        sample = {"version": full["version"], "data": [a for i, a in enumerate(arts) if i in idx]}
        write_json(out / "drcd" / f"{split}.json", sample)
        stats[f"drcd/{split}.json"] = squad_counts(sample)
    return stats


def read_tsv(path: Path) -> tuple[str, list[str]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "", f"{path}: no trailing newline"
    return lines[0], lines[1:-1]


def tsv_counts(rows: list[str]) -> dict:
    labels = [r.split("\t", 1)[0] for r in rows]
    return {"rows": len(rows), "label 0": labels.count("0"), "label 1": labels.count("1")}


def make_chnsenticorp(data_dir: Path, out: Path) -> dict:
    stats = {}
    header, rows = read_tsv(data_dir / "chnsenticorp" / "train.tsv")
    chosen: set[int] = set()
    for label in ("0", "1"):
        idx = [i for i, r in enumerate(rows) if r.split("\t", 1)[0] == label]
        idx.sort(key=lambda i: key_order(f"chnsenticorp-train:{i}:{rows[i]}"))
        chosen.update(idx[:CHNSENTICORP_TRAIN_PER_LABEL])
    sample = [r for i, r in enumerate(rows) if i in chosen]
    dest = out / "chnsenticorp" / "train.tsv"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join([header, *sample]) + "\n", encoding="utf-8")
    stats["chnsenticorp/train.tsv"] = tsv_counts(sample)
    shutil.copyfile(data_dir / "chnsenticorp" / "dev.tsv", out / "chnsenticorp" / "dev.tsv")
    stats["chnsenticorp/dev.tsv"] = tsv_counts(read_tsv(out / "chnsenticorp" / "dev.tsv")[1])
    return stats


def make_corpus(data_dir: Path, out: Path) -> dict:
    """The leading whole documents of the CMRC-derived corpus, up to CORPUS_MAX_BYTES."""
    text = (data_dir / CORPUS_SOURCE).read_text(encoding="utf-8")
    docs = [d for d in text.split("\n\n") if d.strip()]
    kept: list[str] = []
    size = 0
    for d in docs:
        block = d.strip("\n") + "\n"
        extra = len(block.encode("utf-8")) + (1 if kept else 0)
        if size + extra > CORPUS_MAX_BYTES:
            break
        kept.append(block)
        size += extra
    dest = out / "corpus" / "zh-hans.txt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(kept), encoding="utf-8")
    lines = sum(len(b.splitlines()) for b in kept)
    return {"corpus/zh-hans.txt": {"docs": len(kept), "sentence lines": lines,
                                   "of source docs": len(docs)}}


def make_pretrained(data_dir: Path, out: Path) -> dict:
    stats = {}
    for rel in PRETRAINED_FILES:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / rel, out / rel)
        stats[rel] = {"byte copy": "yes"}
    return stats


SOURCES = {
    "chnsenticorp/": ("ChnSentiCorp, ERNIE / Chinese-BERT-wwm split: `ymcui/Chinese-BERT-wwm` "
                      "`data/chnsenticorp/chnsenticorp.zip` (repo Apache-2.0; data credited to "
                      "`pengming617/bert_classification`, no license file)",
                      "the underlying ChnSentiCorp corpus (Tan Songbo) was released for **research use** only"),
    "cmrc2018/": ("CMRC 2018, `ymcui/cmrc2018` `squad-style-data/cmrc2018_{train,dev,trial}.json`",
                  "**CC BY-SA 4.0** (text from Wikipedia)"),
    "drcd/": ("DRCD v1.3, `DRCKnowledgeTeam/DRCD` `DRCD_dev.json` (both sample parts are cut from the "
              "official **dev** file; DRCD_training.json is not in the data dir)",
              "**CC BY-SA 3.0** (adapted from Wikipedia; Delta Electronics gives no warranty)"),
    "corpus/": ("derived from the `context` of CMRC 2018 train paragraphs (shared/data "
                f"`{CORPUS_SOURCE}`)", "**CC BY-SA 4.0** (derived from CMRC 2018 / Wikipedia)"),
    "pretrained/": ("tokenizer and config of the Hugging Face model `hfl/chinese-xlnet-base` (Chinese-XLNet, "
                    "HFL), via a byte-identical copy in `0202zc/nlp-competition`",
                    "**Apache-2.0** (hfl model card)"),
}

HOW = {
    "chnsenticorp/train.tsv": (f"header kept; {CHNSENTICORP_TRAIN_PER_LABEL} rows per label, the rows whose "
                               "sha256(`cxlnet-sample:chnsenticorp-train:<index>:<line>`) rank lowest "
                               "within their label, kept in file order"),
    "chnsenticorp/dev.tsv": "byte copy of the full dev file",
    "cmrc2018/train.json": (f"{CMRC_TRAIN_PARAGRAPHS} paragraphs: every paragraph holding an answer whose "
                            "answer_start counts UTF-16 units, then the lowest-ranked paragraph ids by "
                            "sha256(`cxlnet-sample:<id>`); file order; whole articles"),
    "cmrc2018/dev.json": (f"{CMRC_DEV_PARAGRAPHS} paragraphs: every UTF-16 offset paragraph, the "
                          f"{CMRC_DEV_MIN_NEG_START_PARAGRAPHS} lowest-ranked paragraphs with an "
                          "answer_start = -1 answer, then lowest-ranked ids; file order"),
    "cmrc2018/trial.json": (f"{CMRC_TRIAL_PARAGRAPHS} paragraphs: every UTF-16 offset paragraph, then "
                            "lowest-ranked ids; file order"),
    "drcd/train.json": ("articles of the official DRCD **dev** file, taken by title in sha256(`cxlnet-sample:"
                        f"<title>`) order until >= {DRCD_TRAIN_MIN_PARAGRAPHS} paragraphs"),
    "drcd/dev.json": ("the next titles of the same order until >= "
                      f"{DRCD_DEV_MIN_PARAGRAPHS} paragraphs; no title or paragraph is shared with "
                      "the sample drcd/train.json"),
    "corpus/zh-hans.txt": (f"the leading whole documents of `{CORPUS_SOURCE}` up to {CORPUS_MAX_BYTES} "
                           "bytes; same format (one sentence per line, blank line between documents)"),
    "pretrained/hfl-chinese-xlnet-base/spiece.model": "byte copy",
    "pretrained/hfl-chinese-xlnet-base/config.json": "byte copy",
}


def write_notice(out: Path, stats: dict, data_dir_label: str) -> None:
    lines = [
        "# Embedded data sample: sources, licenses and how it was cut",
        "",
        "This directory is a small sample of the data sets cxlnet uses, shipped with the package so that",
        "the demo and the tests run without a download. It is **not** meant for reporting results: use",
        "`cxlnet download` (or `paths.data_dir`) for the full data sets. The layout is the same as the full",
        "data directory and the download cache.",
        "",
        "JSON files keep the SQuAD structure and the `version` field of their source, written compactly",
        "(`ensure_ascii=False`, no indentation). TSV files are UTF-8, LF, header `label\\ttext_a`; texts",
        "contain `\"`, so split each row on the first tab (or use `csv.QUOTE_NONE`).",
        "",
        "## Sources and licenses",
        "",
        "| files | source | license |",
        "|---|---|---|",
    ]
    for prefix, (src, lic) in SOURCES.items():
        lines.append(f"| `{prefix}` | {src} | {lic} |")
    lines += [
        "",
        "The sample is redistributed under the same licenses as its sources (ShareAlike for CMRC 2018,",
        "DRCD and the derived corpus). ChnSentiCorp is for research use only.",
        "",
        "## How the sample was cut",
        "",
        "```",
        f"python tools/make_sample.py --data-dir {data_dir_label} --out cxlnet/sample",
        "```",
        "",
        "The script is deterministic (selection by sha256 of record keys); re-running it on the same full",
        "data gives byte-identical files. Counting conventions as in shared/data/SOURCES.md.",
        "CMRC 2018 answer offsets are kept as published: `utf16_offset_answers` counts answers whose",
        "`answer_start` counts UTF-16 units (non-BMP characters as 2), i.e. `context[s:s+len(text)] != text`.",
        "",
        "## Files",
        "",
        "| file | how | counts | bytes | sha256 |",
        "|---|---|---|---|---|",
    ]
    for rel in sorted(stats):
        counts = ", ".join(f"{k} {v}" for k, v in stats[rel].items())
        path = out / rel
        lines.append(f"| `{rel}` | {HOW[rel]} | {counts} | {path.stat().st_size} | `{sha256_file(path)}` |")
    lines.append("")
    (out / "NOTICE.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="full data dir (default ../shared/data)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output dir (default cxlnet/sample)")
    args = ap.parse_args(argv)
    data_dir = Path(args.data_dir)
    out = Path(args.out)
    if not (data_dir / "cmrc2018" / "train.json").is_file():
        print(f"error: {data_dir}: not a full data dir (no cmrc2018/train.json)", file=sys.stderr)
        return 1
    for sub in ("chnsenticorp", "cmrc2018", "drcd", "corpus", "pretrained"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    stats: dict = {}
    stats.update(make_chnsenticorp(data_dir, out))
    stats.update(make_cmrc(data_dir, out))
    stats.update(make_drcd(data_dir, out))
    stats.update(make_corpus(data_dir, out))
    stats.update(make_pretrained(data_dir, out))
    label = "../shared/data" if data_dir.resolve() == DEFAULT_DATA_DIR.resolve() else args.data_dir
    write_notice(out, stats, label)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    for rel in sorted(stats):
        print(f"{rel}: {(out / rel).stat().st_size} bytes, {stats[rel]}")
    print(f"total {total} bytes in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
