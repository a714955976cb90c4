"""data-scale: `cxlnet data` and the pre-training loader on synthetic corpora of growing size.

For each size (default 10 MB, 100 MB, 1 GB) a corpus is generated on the fly under a scratch
directory from the shipped corpus sample (its documents repeated, in files of at most 128 MB) and
deleted afterwards. Each measurement runs in its own process, its memory summed over the process
and its children (sampled every 50 ms from /proc/PID/smaps_rollup):

- `cxlnet data` (all cores): wall time, MB/s of corpus text, peak memory (Σ PSS over its processes,
  and Σ RSS, which counts the pages forked workers share with the main process once per process);
- the encoder being replaced (`--baseline-rev`, default 07bc1e3: the single-process, whole-file
  `build_store`), taken from git into the scratch directory, on the sizes up to
  `--baseline-max-mb` (it holds ~12 bytes of RAM per byte of text, so 1 GB would need ~12 GB);
- the raw SentencePiece rate on the same text: `encode(lines, num_threads=1)` over whole-line
  blocks, the encode calls alone timed (the first `RAW_MAX_MB` of a larger corpus: the text repeats);
- the loader (`PretrainStream`, Chinese-XLNet's 32 x 512 batches) over 50 steps, on the new store,
  with today's code and with the baseline's.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FILE_MB = 128
RAW_MAX_MB = 64
SAMPLE_S = 0.05
DEFAULT_BASELINE = "07bc1e3"


def synth_corpus(dest: Path, mb: float, source: Path) -> list[Path]:
    """About `mb` MB of text: the source's documents repeated (rotated each copy, so files do not
    start alike), in files of at most FILE_MB."""
    docs = source.read_text(encoding="utf-8").strip("\n").split("\n\n")
    dest.mkdir(parents=True, exist_ok=True)
    target, written, files, copy = int(mb * 1e6), 0, [], 0
    while written < target:
        path = dest / f"part-{len(files):04d}.txt"
        with path.open("w", encoding="utf-8") as fh:
            size = 0
            while size < FILE_MB * 1e6 and written + size < target:
                k = copy % len(docs)
                text = "\n\n".join(docs[k:] + docs[:k]) + "\n\n"
                fh.write(text)
                size += len(text.encode("utf-8"))
                copy += 1
        files.append(path)
        written += size
    return files


def _tree_memory(pid: int) -> tuple[int, int, int]:
    """(Σ RSS, Σ PSS, Σ anonymous) bytes of pid and all its descendants. Forked workers share their
    parent's pages: RSS counts a shared page in every process, PSS divides it among them (the real
    total). Anonymous = private memory (heap), without the file pages a memory map has touched."""
    rss = pss = anon = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    key, _, value = line.partition(":")
                    if key in ("Rss", "Pss", "Anonymous"):
                        kb = int(value.split()[0]) * 1024
                        rss, pss, anon = rss + kb * (key == "Rss"), pss + kb * (key == "Pss"), anon + kb * (key == "Anonymous")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (OSError, ValueError):
            continue
    return rss, pss, anon


def measure(argv: list[str], env: dict | None = None, timeout: float = 3600) -> dict:
    """Run a command: wall seconds, CPU seconds (its own and its children's), peak memory of its
    process tree (Σ RSS, Σ PSS, Σ anonymous), its output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, cwd=REPO)
    peak = [0, 0, 0]
    out_chunks: list[str] = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = [max(a, b) for a, b in zip(peak, _tree_memory(proc.pid))]
        if time.perf_counter() - t0 > timeout:
            proc.kill()
        time.sleep(SAMPLE_S)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    wall = time.perf_counter() - t0
    out = "".join(out_chunks).strip()
    return {"rc": proc.returncode, "seconds": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_mb": peak[0] / 2**20, "peak_pss_mb": peak[1] / 2**20, "peak_anon_mb": peak[2] / 2**20,
            "last": out.splitlines()[-1] if out else "", "output": out}


def _python(code: str, path: Path | None = None) -> list[str]:
    prefix = f"import sys; sys.path.insert(0, {str(path)!r})\n" if path else ""
    return [sys.executable, "-c", prefix + textwrap.dedent(code)]


RAW_CODE = """
import sys, time
import sentencepiece as spm
from cxlnet.pretrain.encode import iter_blocks
from pathlib import Path
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
limit, done, spent, cpu = float(sys.argv[2]) * 1e6, 0, 0.0, 0.0
for f in sys.argv[3:]:
    for _, _, block in iter_blocks(Path(f), 4 << 20):
        lines = [l for l in block.decode("utf-8").split("\\n") if l.strip()]
        t0, c0 = time.perf_counter(), time.process_time()
        sp.encode(lines, out_type=int, num_threads=1)
        spent, cpu = spent + time.perf_counter() - t0, cpu + time.process_time() - c0
        done += len(block)
        if done >= limit:
            break
    if done >= limit:
        break
print(f"{done / 1e6 / spent:.3f} {done / 1e6 / cpu:.3f} {done}")
"""

OLD_ENCODE_CODE = """
import sys
from cxlnet.pretrain.corpus import build_store
build_store(sys.argv[3:], sys.argv[1], sys.argv[2], num_shards=8)
"""

LOADER_CODE = """
import sys
from cxlnet.pretrain.examples import PretrainStream
st = PretrainStream(sys.argv[1])
n = sum(1 for _ in st.iter_batches(0, int(sys.argv[2])))
print(n)
"""


def baseline_tree(rev: str, scratch: Path) -> Path | None:
    """The cxlnet package of `rev` (git archive), or None when git or the revision is missing."""
    dest = scratch / f"baseline-{rev}"
    try:
        archive = subprocess.run(["git", "archive", rev, "cxlnet"], cwd=REPO, capture_output=True, timeout=120, check=True)
        dest.mkdir(parents=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return dest


def run(sizes_mb: list[float], spiece: Path, source: Path, scratch_root: str | None, baseline_rev: str | None,
        baseline_max_mb: float, steps: int = 50) -> tuple[list[dict], list[str]]:
    from cxlnet.pretrain.encode import default_workers

    workers = default_workers()
    scratch = Path(tempfile.mkdtemp(prefix="cxlnet-data-scale-", dir=scratch_root))
    notes = [f"data-scale: corpora generated from {source.name} (repeated documents) under {scratch.parent}, deleted "
             f"after; `cxlnet data` with data.num_workers={workers}; peak memory = Σ PSS of all processes of the command, Σ RSS in brackets; baseline and loader are single processes: RSS (sampled "
             f"every {SAMPLE_S * 1000:.0f} ms); raw SentencePiece = one thread, encode calls only"
             + (f", on the first {RAW_MAX_MB} MB of larger corpora" if max(sizes_mb) > RAW_MAX_MB else "")
             + f"; loader = PretrainStream with Chinese-XLNet's 32 x 512 batches, {steps} batches, one process"]
    rows = []
    try:
        old = baseline_tree(baseline_rev, scratch) if baseline_rev else None
        if baseline_rev:
            notes.append(f"baseline = cxlnet/ of {baseline_rev} (the whole-file, single-process encoder and the loader "
                         f"that copies the pass), run up to {baseline_max_mb:g} MB" if old else
                         f"baseline {baseline_rev}: not available (git archive failed)")
        for mb in sizes_mb:
            corpus_dir = scratch / f"corpus-{mb:g}MB"
            files = synth_corpus(corpus_dir, mb, source)
            text_mb = sum(f.stat().st_size for f in files) / 1e6
            row = {"kind": "data-scale", "name": "data-scale", "mb": text_mb, "files": len(files), "workers": workers}
            store = scratch / f"store-{mb:g}MB"
            print(f"  data-scale {text_mb:.0f} MB: cxlnet data ...", flush=True)
            new = measure([sys.executable, "-m", "cxlnet", "data", f"data.corpus=['{corpus_dir}/*.txt']",
                           f"data.spiece_model={spiece}", f"data.out_dir={store}", f"paths.output_dir={scratch / 'runs'}"],
                          env={"PYTHONPATH": str(REPO)})
            row["new"] = new
            if new["rc"] != 0:
                row["error"] = new["output"][-300:]
                rows.append(row)
                continue
            row["tokens"] = json.loads((store / "store.json").read_text())["counts"]["tokens"]
            print(f"  data-scale {text_mb:.0f} MB: raw sentencepiece ...", flush=True)
            raw = measure(_python(RAW_CODE) + [str(spiece), str(RAW_MAX_MB), *map(str, files)], env={"PYTHONPATH": str(REPO)})
            row["raw_mb_s"], row["raw_mb_cpu_s"] = map(float, raw["last"].split()[:2]) if raw["rc"] == 0 else (None, None)
            if old is not None and text_mb <= baseline_max_mb * 1.05:
                print(f"  data-scale {text_mb:.0f} MB: baseline encoder ...", flush=True)
                row["old"] = measure(_python(OLD_ENCODE_CODE, old) + [str(spiece), str(scratch / "old-store"), *map(str, files)])
                shutil.rmtree(scratch / "old-store", ignore_errors=True)
            print(f"  data-scale {text_mb:.0f} MB: loaders ...", flush=True)
            row["loader"] = measure(_python(LOADER_CODE) + [str(store), str(steps)], env={"PYTHONPATH": str(REPO)})
            if old is not None:
                row["old_loader"] = measure(_python(LOADER_CODE, old) + [str(store), str(steps)])
            rows.append(row)
            shutil.rmtree(corpus_dir, ignore_errors=True)
            shutil.rmtree(store, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows, notes


COLUMNS = ["corpus", "tokens", "`cxlnet data` s", "MB/s", "MB/CPU-s", "peak PSS MiB (Σ RSS)", "baseline s",
           "baseline MB/s", "baseline MB/CPU-s", "baseline RSS MiB", "speed ×", "CPU efficiency ×",
           "raw spm MB/s (MB/CPU-s)", "per CPU / raw", "loader RSS MiB (anon)", "baseline loader RSS MiB (anon)"]


def _ok(m: dict | None) -> bool:
    return m is not None and m["rc"] == 0


def table_cells(rows: list[dict]) -> list[list[str]]:
    """One row per corpus. speed × = wall MB/s over the baseline's; CPU efficiency × = MB per CPU
    second over the baseline's (insensitive to other load on the machine; on an idle machine the
    wall speed-up is about workers × this). per CPU / raw = MB per CPU second of `cxlnet data`,
    everything included, over raw SentencePiece's."""
    measured_old = [r for r in rows if _ok(r.get("old"))]
    out = []
    for r in rows:
        size = f"{r['mb']:.0f} MB ({r['files']} files)"
        if "error" in r:
            out.append([size, "", f"failed: {r['error'].splitlines()[-1][:120]}"] + [""] * (len(COLUMNS) - 3))
            continue
        new = r["new"]
        mbs, mbc = r["mb"] / new["seconds"], r["mb"] / new["cpu_s"]
        old = r.get("old")
        if _ok(old):
            ref_row, ref = r, ""
            old_cells = [f"{old['seconds']:.1f}", f"{r['mb'] / old['seconds']:.2f}", f"{r['mb'] / old['cpu_s']:.2f}",
                         f"{old['peak_mb']:.0f}"]
        elif measured_old:
            ref_row = max(measured_old, key=lambda x: x["mb"])
            ref = f" (vs {ref_row['mb']:.0f} MB)"
            old_cells = ["not run", "", "", ""]
        else:
            ref_row, ref, old_cells = None, "", ["—"] * 4
        ratios = ["—", "—"]
        if ref_row is not None:
            o = ref_row["old"]
            ratios = [f"{mbs / (ref_row['mb'] / o['seconds']):.2f}{ref}", f"{mbc / (ref_row['mb'] / o['cpu_s']):.2f}{ref}"]
        raw, raw_cpu = r.get("raw_mb_s"), r.get("raw_mb_cpu_s")
        loader, old_loader = r.get("loader"), r.get("old_loader")

        def mem(m):
            return f"{m['peak_mb']:.0f} ({m['peak_anon_mb']:.0f})" if _ok(m) else ("failed" if m else "—")

        out.append([
            size, f"{r['tokens'] / 1e6:.1f}M", f"{new['seconds']:.1f}", f"{mbs:.2f}", f"{mbc:.2f}",
            f"{new['peak_pss_mb']:.0f} ({new['peak_mb']:.0f})", *old_cells, *ratios,
            f"{raw:.2f} ({raw_cpu:.2f})" if raw else "—", f"{mbc / raw_cpu:.2f}" if raw_cpu else "—",
            mem(loader), mem(old_loader),
        ])
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in table_cells(rows)]
    return "\n".join(lines)
