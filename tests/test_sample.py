"""The data sample shipped in the package (`cxlnet/sample/`): size, NOTICE, and the quirks it must keep."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import pytest

from cxlnet.paths import sample_dir

SAMPLE = sample_dir()
REPO = Path(__file__).resolve().parents[1]
EXPECTED = {
    "NOTICE.md",
    "chnsenticorp/train.tsv", "chnsenticorp/dev.tsv",
    "cmrc2018/train.json", "cmrc2018/dev.json", "cmrc2018/trial.json",
    "drcd/train.json", "drcd/dev.json",
    "corpus/zh-hans.txt",
    "pretrained/hfl-chinese-xlnet-base/spiece.model", "pretrained/hfl-chinese-xlnet-base/config.json",
}


def sample_files() -> dict[str, Path]:
    return {p.relative_to(SAMPLE).as_posix(): p for p in sorted(SAMPLE.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def load(rel: str) -> dict:
    return json.loads((SAMPLE / rel).read_text(encoding="utf-8"))


def utf16_cases(obj: dict) -> int:
    n = 0
    for art in obj["data"]:
        for para in art["paragraphs"]:
            ctx = para["context"]
            for qa in para["qas"]:
                for ans in qa["answers"]:
                    s = ans["answer_start"]
                    if s >= 0 and ctx[s:s + len(ans["text"])] != ans["text"]:
                        n += 1
    return n


def test_files_and_total_size():
    files = sample_files()
    assert set(files) == EXPECTED
    total = sum(p.stat().st_size for p in files.values())
    assert total < 5 * 1024 * 1024, total


def test_notice_lists_every_file_with_its_hash_and_license():
    notice = (SAMPLE / "NOTICE.md").read_text(encoding="utf-8")
    rows = {m.group(1): (int(m.group(2)), m.group(3))
            for m in re.finditer(r"^\| `([^`]+)` \|.*\| (\d+) \| `([0-9a-f]{64})` \|$", notice, re.M)}
    for rel, path in sample_files().items():
        if rel == "NOTICE.md":
            continue
        assert rel in rows, f"NOTICE.md does not list {rel}"
        size, digest = rows[rel]
        assert path.stat().st_size == size, rel
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, rel
    for needle in ("Apache-2.0", "CC BY-SA 4.0", "CC BY-SA 3.0", "research use", "tools/make_sample.py"):
        assert needle in notice


def test_cmrc_keeps_structure_and_utf16_offset_cases():
    for split, n_paras, n_utf16 in (("train", 250, 21), ("dev", 100, 7), ("trial", 30, 5)):
        obj = load(f"cmrc2018/{split}.json")
        assert obj["version"] == "v1.0"
        paras = [p for a in obj["data"] for p in a["paragraphs"]]
        assert len(paras) == n_paras
        assert all(p["id"].startswith(split.upper() + "_") for p in paras)
        # All UTF-16 cases of the full split (21 train, 7 dev, 5 trial per SOURCES.md) are in the sample.
        assert utf16_cases(obj) == n_utf16, split
    dev = load("cmrc2018/dev.json")
    answers = [a for art in dev["data"] for p in art["paragraphs"] for q in p["qas"] for a in q["answers"]]
    assert sum(a["answer_start"] == -1 for a in answers) >= 10
    assert all(len(q["answers"]) == 3 for art in dev["data"] for p in art["paragraphs"] for q in p["qas"])


def test_drcd_train_and_dev_are_disjoint():
    train, dev = load("drcd/train.json"), load("drcd/dev.json")
    assert train["version"] == dev["version"] == "1.3"

    def keys(obj):
        titles = {a["title"] for a in obj["data"]}
        contexts = {p["context"] for a in obj["data"] for p in a["paragraphs"]}
        ids = {q["id"] for a in obj["data"] for p in a["paragraphs"] for q in p["qas"]}
        return titles, contexts, ids

    for a, b in zip(keys(train), keys(dev)):
        assert a and b and not (a & b)
    n_train = sum(len(a["paragraphs"]) for a in train["data"])
    n_dev = sum(len(a["paragraphs"]) for a in dev["data"])
    assert 30 <= n_train <= 80 and 10 <= n_dev <= 40
    assert utf16_cases(train) == utf16_cases(dev) == 0  # DRCD offsets are code points


def read_tsv(rel: str) -> tuple[str, list[tuple[str, str]]]:
    raw = (SAMPLE / rel).read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf") and b"\r" not in raw and raw.endswith(b"\n")
    lines = raw.decode("utf-8").split("\n")[:-1]
    return lines[0], [tuple(line.split("\t", 1)) for line in lines[1:]]


def test_chnsenticorp_rows():
    for rel, n in (("chnsenticorp/train.tsv", 2500), ("chnsenticorp/dev.tsv", 1200)):
        header, rows = read_tsv(rel)
        assert header == "label\ttext_a"
        assert len(rows) == n
        assert all(len(r) == 2 and r[0] in ("0", "1") and r[1] for r in rows), rel
    _, train = read_tsv("chnsenticorp/train.tsv")
    assert sum(r[0] == "1" for r in train) == sum(r[0] == "0" for r in train) == 1250
    assert any('"' in r[1] for r in train)  # the quoting quirk is in the sample


def test_corpus_format():
    text = (SAMPLE / "corpus/zh-hans.txt").read_text(encoding="utf-8")
    assert 200_000 <= len(text.encode("utf-8")) <= 300_000
    assert text.endswith("\n") and not text.startswith("\n") and "\n\n\n" not in text
    docs = text.split("\n\n")
    assert len(docs) > 100
    assert all(line and line == line.strip() for d in docs for line in d.strip("\n").split("\n"))


def test_pretrained_files_are_the_hfl_ones():
    digests = {
        "spiece.model": "830e1e16012640ca728fd681f0077269cf5ba629c609951ecff7e1f7b5d497ae",
        "config.json": "0e44b8b6fea6866ef7741d166c8c3afed78a2eb2b0249b2233a29bab31a264a5",
    }
    for name, digest in digests.items():
        data = (SAMPLE / "pretrained/hfl-chinese-xlnet-base" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest


def _make_sample_module():
    spec = importlib.util.spec_from_file_location("make_sample", REPO / "tools" / "make_sample.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.fulldata
def test_make_sample_is_deterministic_and_matches_shipped(full_data_dir: Path, tmp_path: Path, capsys):
    mod = _make_sample_module()
    assert mod.main(["--data-dir", str(full_data_dir), "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    shipped = sample_files()
    for rel, path in shipped.items():
        if rel == "NOTICE.md" and full_data_dir.resolve() != mod.DEFAULT_DATA_DIR.resolve():
            continue  # the NOTICE records the data dir given on the command line
        assert (tmp_path / rel).read_bytes() == path.read_bytes(), f"{rel} differs from a fresh cut"


@pytest.mark.fulldata
def test_sample_is_a_subset_of_full_data(full_data_dir: Path):
    for rel in ("cmrc2018/train.json", "cmrc2018/dev.json", "cmrc2018/trial.json"):
        full = json.loads((full_data_dir / rel).read_text(encoding="utf-8"))
        assert utf16_cases(load(rel)) == utf16_cases(full), rel  # every case kept
        by_id = {a["paragraphs"][0]["id"]: a for a in full["data"]}
        for art in load(rel)["data"]:
            assert by_id[art["paragraphs"][0]["id"]] == art
    full_drcd = json.loads((full_data_dir / "drcd/dev.json").read_text(encoding="utf-8"))["data"]
    for rel in ("drcd/train.json", "drcd/dev.json"):
        assert all(art in full_drcd for art in load(rel)["data"])
    full_rows = set((full_data_dir / "chnsenticorp/train.tsv").read_text(encoding="utf-8").split("\n"))
    assert set((SAMPLE / "chnsenticorp/train.tsv").read_text(encoding="utf-8").split("\n")) <= full_rows
