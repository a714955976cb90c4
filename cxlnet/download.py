"""`cxlnet download`: fetch the full data sets and the hfl tokenizer/weights into the download cache.

    cxlnet download cmrc2018 drcd chnsenticorp hfl-tokenizer [--cache-dir DIR] [--force]
    cxlnet download hfl-chinese-xlnet-mid [--allow-unverified]
    cxlnet download --list

Files land in the cache (`cxlnet.paths.cache_dir()`, the same layout as the full data directory),
where `paths.data_dir=auto` finds them. Each file streams to `<dest>.part`; an interrupted download
resumes with an HTTP Range request (or restarts when the server ignores Range); the sha256 (or the
git blob id, where that is what is published) is checked before the `.part` is renamed to its final
name, so a final name never holds a partial or unverified-against-a-known-hash file. A file whose
hash is not published is recorded as None in the registry and its computed sha256 is printed.

hfl's published weights are pinned: every URL names a hub commit (not `main`), and each file has
the sha256 of hfl's Git LFS pointer where one could be found (source cited at the constants). A
weights file without a pinned sha256 is refused unless `--allow-unverified` is given, and is then
downloaded with a loud warning and its sha256 printed: never accepted silently.

`CXLNET_DOWNLOAD_BASE_URL` (or `--base-url`) replaces the scheme and host of every URL, keeping
each file's path: a mirror with the same paths, or the tests' local server.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import urlsplit

from cxlnet.errors import CxlnetError, atomic_write_bytes
from cxlnet.paths import cache_dir as default_cache_dir

BASE_URL_ENV = "CXLNET_DOWNLOAD_BASE_URL"
CHUNK = 1 << 16
TIMEOUT_S = 60
USER_AGENT = "cxlnet-download/0.1 (+urllib)"


@dataclass(frozen=True)
class Member:
    """A file extracted from a downloaded zip archive."""

    name: str  # base name inside the archive
    dest: str  # path relative to the cache dir
    sha256: str | None = None
    size: int | None = None
    git_blob: str | None = None


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch. With `members` it is a zip archive: `dest` is where the archive is
    kept while it is extracted (it is deleted afterwards) and the members are the results."""

    url: str
    dest: str  # path relative to the cache dir
    sha256: str | None = None  # None: not published, computed and printed, never pretended
    size: int | None = None
    git_blob: str | None = None  # git blob id (sha1 of "blob <size>\0" + bytes), when published
    members: tuple[Member, ...] = ()


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    files: tuple[RemoteFile, ...]
    # Published weights: a file with no pinned hash is refused unless the user passes
    # --allow-unverified (and is then warned loudly), never accepted silently.
    require_pins: bool = False


_CMRC = "https://raw.githubusercontent.com/ymcui/cmrc2018/c0eb1b6ba219847457e6af3180da722bbeb656af/squad-style-data"
_DRCD = "https://raw.githubusercontent.com/DRCKnowledgeTeam/DRCD/b944790de5af02c5fbb7cd9cb1473d27d169eebf"
_WWM = "https://raw.githubusercontent.com/ymcui/Chinese-BERT-wwm/f6410cbd89c49dee8a42a7f7d94d9cca87b431aa"
_HF = "https://huggingface.co/hfl"
_SPIECE_SHA = "830e1e16012640ca728fd681f0077269cf5ba629c609951ecff7e1f7b5d497ae"
_CONFIG_BASE_SHA = "0e44b8b6fea6866ef7741d166c8c3afed78a2eb2b0249b2233a29bab31a264a5"
# Hub revisions (full commit ids) pinned in every hfl URL instead of `main`, as listed on the hub:
#   https://huggingface.co/hfl/chinese-xlnet-base/tree/34b827684078f956411389834966eb55588f5254
#   https://huggingface.co/hfl/chinese-xlnet-mid/tree/e103afe9441e257b0d55b78fbe1015805f384edb
# (the latest commit of each, "add fast tokenizer config").
BASE_REVISION = "34b827684078f956411389834966eb55588f5254"
MID_REVISION = "e103afe9441e257b0d55b78fbe1015805f384edb"
_BASE = f"{_HF}/chinese-xlnet-base/resolve/{BASE_REVISION}"
_MID = f"{_HF}/chinese-xlnet-mid/resolve/{MID_REVISION}"
# Git LFS pointer of chinese-xlnet-mid's pytorch_model.bin, last changed in commit 25d29b7 and the
# same at MID_REVISION: "SHA256: 8da1b307...c68a" on
#   https://huggingface.co/hfl/chinese-xlnet-mid/blob/25d29b7b8b522b5e04eebf8d1bb40a60be8e5329/pytorch_model.bin
_MID_BIN_SHA = "8da1b307d5a7cb3decab6cce760c87d4a5e0ae524ca9903683148dc9eb71c68a"
# Not found in any source we could read, so not pinned (refused without --allow-unverified):
# chinese-xlnet-base/pytorch_model.bin, chinese-xlnet-mid/config.json, chinese-xlnet-mid/spiece.model.

# Hashes and sizes from shared/data/SOURCES.md; None where no hash is published.
REGISTRY: tuple[Dataset, ...] = (
    Dataset("cmrc2018", "CMRC 2018 train/dev/trial (simplified Chinese, CC BY-SA 4.0)", (
        RemoteFile(f"{_CMRC}/cmrc2018_train.json", "cmrc2018/train.json",
                   "5497aa2f81908e31d6b0e27d99b1f90ab63a8f58fa92fffe5d17cf62eba0c212", 7408757,
                   "cd56f7d38f6f4a6f92df2616479bbf134a37bebf"),
        RemoteFile(f"{_CMRC}/cmrc2018_dev.json", "cmrc2018/dev.json",
                   "e9ff74231f05c230c6fa88b84441ee334d97234cbb610991cd94b82db00c7f1f", 3299139,
                   "94c1f2df14a669b0b7b836665d6339a34df8aa97"),
        RemoteFile(f"{_CMRC}/cmrc2018_trial.json", "cmrc2018/trial.json",
                   "f3fae95b57da8e03afb2b57467dd221417060ef4d82db13bf22fc88589f3a6f3", 800221,
                   "020e3559e914d23404ffc5bf9411ee52a9c38451"),
    )),
    Dataset("drcd", "DRCD v1.3 train/dev/test (traditional Chinese, CC BY-SA 3.0)", (
        # sha256 of the training file is not known; its git blob id is (SOURCES.md).
        RemoteFile(f"{_DRCD}/DRCD_training.json", "drcd/train.json", None, None,
                   "35480d22ed6449adeb1bece5ae27d0889bf8b7af"),
        RemoteFile(f"{_DRCD}/DRCD_dev.json", "drcd/dev.json",
                   "e236df03861ba241bd7b29628cd48b3b8e339c60137e041a4358b5320ed61928", 2184379,
                   "daa42e47130e8d5b907b87e75cecc8fb807fd4f5"),
        RemoteFile(f"{_DRCD}/DRCD_test.json", "drcd/test.json"),
    )),
    Dataset("chnsenticorp", "ChnSentiCorp train/dev/test TSV (research use only)", (
        RemoteFile(f"{_WWM}/data/chnsenticorp/chnsenticorp.zip", "chnsenticorp/chnsenticorp.zip",
                   None, None, "52385f2972266b6a9fee2446c29225a27a7c51f5", members=(
                       Member("train.tsv", "chnsenticorp/train.tsv",
                              "0b2653c23e5c79f539472e90cb10522f0ada4b80d3da95572d8b48fda47d5b33", 3019974,
                              "5e15f842bdf7ebb5cef97f3f8e5c1c06bb151d6e"),
                       Member("dev.tsv", "chnsenticorp/dev.tsv",
                              "d129e443eac08ce7643013dad496a8edf282be39cac1a4f2ad080818b296b331", 374230,
                              "3913c6604d550fdbe112a0ee38fc94c79b86f406"),
                       Member("test.tsv", "chnsenticorp/test.tsv"),
                   )),
    )),
    Dataset("hfl-tokenizer", "hfl/chinese-xlnet-base SentencePiece model and config (Apache-2.0)", (
        RemoteFile(f"{_BASE}/spiece.model", "pretrained/hfl-chinese-xlnet-base/spiece.model", _SPIECE_SHA, 691427),
        RemoteFile(f"{_BASE}/config.json", "pretrained/hfl-chinese-xlnet-base/config.json", _CONFIG_BASE_SHA, 671),
    ), require_pins=True),
    Dataset("hfl-chinese-xlnet-base", f"hfl/chinese-xlnet-base @ {BASE_REVISION[:7]}, HF format (Apache-2.0; ~470 MB)", (
        RemoteFile(f"{_BASE}/config.json", "pretrained/hfl-chinese-xlnet-base/config.json", _CONFIG_BASE_SHA, 671),
        RemoteFile(f"{_BASE}/pytorch_model.bin", "pretrained/hfl-chinese-xlnet-base/pytorch_model.bin"),
        RemoteFile(f"{_BASE}/spiece.model", "pretrained/hfl-chinese-xlnet-base/spiece.model", _SPIECE_SHA, 691427),
    ), require_pins=True),
    Dataset("hfl-chinese-xlnet-mid", f"hfl/chinese-xlnet-mid @ {MID_REVISION[:7]}, HF format (Apache-2.0; ~840 MB)", (
        RemoteFile(f"{_MID}/config.json", "pretrained/hfl-chinese-xlnet-mid/config.json"),
        RemoteFile(f"{_MID}/pytorch_model.bin", "pretrained/hfl-chinese-xlnet-mid/pytorch_model.bin", _MID_BIN_SHA),
        RemoteFile(f"{_MID}/spiece.model", "pretrained/hfl-chinese-xlnet-mid/spiece.model"),
    ), require_pins=True),
)


# ---------------------------------------------------------------------------------------- hashing

def file_hashes(path: Path) -> tuple[str, str]:
    """(sha256, git blob id) of a file, in one pass."""
    size = path.stat().st_size
    sha = hashlib.sha256()
    blob = hashlib.sha1(f"blob {size}\0".encode())
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            blob.update(chunk)
    return sha.hexdigest(), blob.hexdigest()


def bytes_hashes(data: bytes) -> tuple[str, str]:
    return hashlib.sha256(data).hexdigest(), hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def check_hashes(label: str, entry: RemoteFile | Member, size: int, sha: str, blob: str) -> str | None:
    """None when the bytes match every published value, else the one-line reason."""
    if entry.sha256 is not None and sha != entry.sha256:
        return f"{label}: sha256 mismatch: expected {entry.sha256}, got {sha}"
    if entry.git_blob is not None and blob != entry.git_blob:
        return f"{label}: git blob id mismatch: expected {entry.git_blob}, got {blob} (sha256 {sha})"
    if entry.size is not None and size != entry.size:
        return f"{label}: size mismatch: expected {entry.size} bytes, got {size}"
    return None


def is_verifiable(entry: RemoteFile | Member) -> bool:
    return entry.sha256 is not None or entry.git_blob is not None


# ------------------------------------------------------------------------------------------- urls

def effective_url(url: str, base_url: str | None = None) -> str:
    """`url` with its scheme and host replaced by `base_url` (parameter, else $CXLNET_DOWNLOAD_BASE_URL);
    the path is kept."""
    base = base_url if base_url is not None else os.environ.get(BASE_URL_ENV)
    if not base:
        return url
    parts = urlsplit(url)
    return base.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


# ------------------------------------------------------------------------------------- downloading

class _Reporter:
    """Rich console and progress bar (or a plain console in tests)."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console if console is not None else Console(stderr=True)

    def info(self, msg: str) -> None:
        self.console.print(msg, markup=False, highlight=False, soft_wrap=True)

    def progress(self):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TimeRemainingColumn(), console=self.console, transient=True,
                        disable=not self.console.is_terminal)


def _open(url: str, offset: int):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)


def _network_error(url: str, err: BaseException) -> CxlnetError:
    if isinstance(err, urllib.error.HTTPError):
        return CxlnetError(f"download of {url} failed: HTTP {err.code} {err.reason}")
    reason = getattr(err, "reason", None) or err
    return CxlnetError(f"download of {url} failed: {reason}")


def fetch_to_part(url: str, part: Path, label: str, reporter: _Reporter, size: int | None = None) -> None:
    """Stream `url` into `part`, resuming from its current length with a Range request.

    A server that answers 200 instead of 206 (ignores Range) or a Content-Range that does not start
    where the part ends restarts the part from zero. An interrupted transfer keeps the part for the
    next run and raises CxlnetError."""
    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    if offset and size is not None and offset >= size:
        if offset == size:
            return  # complete, only the rename was missing; the hash check decides
        part.unlink()
        offset = 0
    try:
        resp = _open(url, offset)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # range not satisfiable: the part is stale, restart
            reporter.info(f"{label}: server refused to resume at byte {offset}; restarting")
            part.unlink()
            return fetch_to_part(url, part, label, reporter, size)
        raise _network_error(url, err) from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as err:
        raise _network_error(url, err) from None

    with resp:
        total: int | None = None
        mode = "wb"
        if offset and resp.status == 206:
            match = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == offset:
                mode = "ab"
                total = int(match.group(3)) if match.group(3) != "*" else None
            else:
                reporter.info(f"{label}: server resumed at the wrong offset; restarting")
                offset = 0
        elif offset:
            reporter.info(f"{label}: server ignored the Range request (HTTP {resp.status}); restarting")
            offset = 0
        if mode == "wb":
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else size
        received = offset
        with part.open(mode) as fh, reporter.progress() as progress:
            task = progress.add_task(label, total=total, completed=offset)
            try:
                while chunk := resp.read(CHUNK):
                    fh.write(chunk)
                    received += len(chunk)
                    progress.update(task, completed=received)
            except (OSError, ValueError, EOFError, http.client.HTTPException) as err:
                fh.flush()
                raise CxlnetError(f"download of {url} interrupted after {received} bytes ({err}); "
                                  f"run the command again to resume") from None
            finally:
                fh.flush()
                os.fsync(fh.fileno())
        if total is not None and received < total:
            raise CxlnetError(f"download of {url} interrupted after {received} of {total} bytes; "
                              f"run the command again to resume")


def _verify_present(path: Path, label: str, entry: RemoteFile | Member, reporter: _Reporter) -> bool:
    """True when `path` exists and matches the published hashes (or exists and none is published)."""
    if not path.is_file():
        return False
    sha, blob = file_hashes(path)
    problem = check_hashes(label, entry, path.stat().st_size, sha, blob)
    if problem is None:
        note = "verified" if is_verifiable(entry) else f"no published hash, sha256 {sha}"
        reporter.info(f"{label}: already present ({note}), skipped")
        return True
    reporter.info(f"{problem}; downloading it again")
    path.unlink()
    return False


def unpinned_policy(dataset: Dataset, allow_unverified: bool) -> str:
    if not dataset.require_pins:
        return "note"
    return "warn" if allow_unverified else "refuse"


def refuse_unpinned(entry: RemoteFile) -> None:
    """The error for a file of published weights whose sha256 cxlnet does not know."""
    raise CxlnetError(f"{entry.dest}: no sha256 is pinned for this file ({entry.url}), so it cannot be verified; "
                      f"pass --allow-unverified to download it anyway (its sha256 is printed)")


def warn_unverified(reporter: _Reporter, dest: str, sha: str) -> None:
    reporter.console.print(f"[bold red]WARNING: {dest} is NOT VERIFIED[/bold red] (no pinned sha256): got sha256 "
                           f"{sha}; compare it with the hub's Git LFS pointer before trusting these weights",
                           highlight=False, soft_wrap=True)


def download_file(entry: RemoteFile, root: Path, *, force: bool = False, base_url: str | None = None,
                  reporter: _Reporter | None = None, unpinned: str = "note") -> list[Path]:
    """Fetch one registry entry into `root`; returns the final paths (the members for an archive).
    An entry without any published hash is, by `unpinned`: "note" downloaded and its sha256
    printed (data sets), "refuse" refused before downloading, "warn" downloaded with a loud warning
    (published weights: see `unpinned_policy`)."""
    reporter = reporter or _Reporter()
    if unpinned == "refuse" and not (entry.members or is_verifiable(entry)):
        refuse_unpinned(entry)
    final = root / entry.dest
    outputs = [root / m.dest for m in entry.members] if entry.members else [final]
    if not force:
        checks = entry.members or (entry,)
        if all(_verify_present(root / e.dest, e.dest, e, reporter) for e in checks):
            return outputs
    part = final.with_name(final.name + ".part")
    if force:
        part.unlink(missing_ok=True)
    url = effective_url(entry.url, base_url)
    fetch_to_part(url, part, entry.dest, reporter, entry.size)

    sha, blob = file_hashes(part)
    problem = check_hashes(entry.dest, entry, part.stat().st_size, sha, blob)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise CxlnetError(f"{problem} (from {url}; the partial file was deleted)")
    if not is_verifiable(entry):
        if unpinned == "warn":
            warn_unverified(reporter, entry.dest, sha)
        else:
            reporter.info(f"{entry.dest}: no published hash to check; downloaded sha256 {sha}")
    os.replace(part, final)

    if entry.members:
        try:
            _extract(final, entry, root, reporter)
        finally:
            final.unlink(missing_ok=True)
    else:
        reporter.info(f"{entry.dest}: done ({final.stat().st_size} bytes)")
    return outputs


def _extract(archive: Path, entry: RemoteFile, root: Path, reporter: _Reporter) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as err:
        raise CxlnetError(f"{entry.dest}: not a zip archive ({err})") from None
    with zf:
        names = [n for n in zf.namelist() if not n.endswith("/") and "__MACOSX" not in n]
        datas = {}
        for member in entry.members:
            found = [n for n in names if n.rsplit("/", 1)[-1] == member.name]
            if len(found) != 1:
                raise CxlnetError(f"{entry.dest}: expected one member named {member.name}, found {found or 'none'}")
            data = zf.read(found[0])
            sha, blob = bytes_hashes(data)
            problem = check_hashes(f"{entry.dest}:{found[0]}", member, len(data), sha, blob)
            if problem is not None:
                raise CxlnetError(f"{problem} (nothing was extracted)")
            if not is_verifiable(member):
                reporter.info(f"{member.dest}: no published hash to check; extracted sha256 {sha}")
            datas[member] = data
    for member, data in datas.items():
        atomic_write_bytes(root / member.dest, data)
        reporter.info(f"{member.dest}: done ({len(data)} bytes)")


def find_dataset(name: str, registry: Sequence[Dataset] = REGISTRY) -> Dataset:
    for ds in registry:
        if ds.name == name:
            return ds
    raise CxlnetError(f"unknown dataset {name!r}; known: {', '.join(d.name for d in registry)}")


def download(names: Iterable[str], cache: str | Path | None = None, *, force: bool = False,
             base_url: str | None = None, registry: Sequence[Dataset] = REGISTRY, console=None,
             allow_unverified: bool = False) -> list[Path]:
    """Download the named datasets into `cache` (default: the download cache); raises CxlnetError at
    the first failure. Returns the final paths."""
    root = Path(cache).expanduser() if cache is not None else default_cache_dir()
    reporter = _Reporter(console)
    paths: list[Path] = []
    for name in names:
        dataset = find_dataset(name, registry)
        for entry in dataset.files:
            paths += download_file(entry, root, force=force, base_url=base_url, reporter=reporter,
                                   unpinned=unpinned_policy(dataset, allow_unverified))
    return paths


def list_datasets(registry: Sequence[Dataset] = REGISTRY, console=None) -> None:
    from rich.table import Table

    reporter = _Reporter(console)
    table = Table("dataset", "bytes", "checked against")
    table.add_column("file (under the cache dir)", overflow="fold")
    for ds in registry:
        for entry in ds.files:
            for e in entry.members or (entry,):
                check = "sha256" if e.sha256 else ("git blob id" if e.git_blob else "nothing published")
                if ds.require_pins and not (e.sha256 or e.git_blob or entry.members):
                    check = "NOT PINNED: needs --allow-unverified"
                table.add_row(ds.name, str(e.size) if e.size else "?", check, e.dest)
    reporter.console.print(table)
    for ds in registry:
        reporter.info(f"{ds.name}: {ds.description}")


def build_parser(registry: Sequence[Dataset] = REGISTRY) -> argparse.ArgumentParser:
    names = [d.name for d in registry]
    ap = argparse.ArgumentParser(prog="cxlnet download",
                                 description="Download data sets and hfl files into the cxlnet cache, "
                                             "checking their hashes.")
    ap.add_argument("datasets", nargs="*", metavar="dataset", help=f"one or more of: {', '.join(names)}")
    ap.add_argument("--cache-dir", default=None,
                    help="where to put the files (default $CXLNET_CACHE_DIR or ~/.cache/cxlnet)")
    ap.add_argument("--force", action="store_true", help="download again even if a verified copy is present")
    ap.add_argument("--list", action="store_true", help="list the datasets and their files")
    ap.add_argument("--allow-unverified", action="store_true",
                    help="download published weights whose sha256 is not pinned (with a loud warning) "
                         "instead of refusing them")
    ap.add_argument("--base-url", default=None,
                    help=f"replace scheme and host of every URL (mirror); default ${BASE_URL_ENV}")
    return ap


def main(argv: list[str] | None = None, *, registry: Sequence[Dataset] = REGISTRY, console=None) -> int:
    ap = build_parser(registry)
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.list:
        list_datasets(registry, console)
        return 0
    if not args.datasets:
        ap.print_usage(sys.stderr)
        print("cxlnet download: error: name at least one dataset (see --list)", file=sys.stderr)
        return 2
    known = {d.name for d in registry}
    unknown = [n for n in args.datasets if n not in known]
    if unknown:
        print(f"error: unknown dataset {', '.join(unknown)}; known: {', '.join(sorted(known))}", file=sys.stderr)
        return 2
    root = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    reporter = _Reporter(console)
    failed = 0
    for name in dict.fromkeys(args.datasets):  # a failed file does not stop the others
        dataset = find_dataset(name, registry)
        for entry in dataset.files:
            try:
                download_file(entry, root, force=args.force, base_url=args.base_url, reporter=reporter,
                              unpinned=unpinned_policy(dataset, args.allow_unverified))
            except CxlnetError as err:
                print(f"error: {err}", file=sys.stderr)
                failed += 1
    if failed:
        if failed > 1:
            print(f"error: {failed} files failed", file=sys.stderr)
        return 1
    reporter.info(f"files are in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
