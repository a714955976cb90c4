"""`cxlnet download` against a local HTTP server (127.0.0.1, ephemeral port) that serves copies of
the shipped sample files, with Range support that each test can switch off, cut short or corrupt."""
from __future__ import annotations

import hashlib
import re
import io
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

from cxlnet import download as dl
from cxlnet.errors import CxlnetError
from cxlnet.paths import sample_dir

SAMPLE = sample_dir()


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.ignore_range = False
        self.cut_after: int | None = None  # send Content-Length in full, then drop after this many bytes
        self.corrupt: set[str] = set()  # paths served with one byte flipped

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def ranges(self, path: str) -> list[str | None]:
        return [r for p, r in self.requests if p == path]


class Handler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        if self.path in srv.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start, status = 0, 200
        if rng and not srv.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "none" if srv.ignore_range else "bytes")
        self.end_headers()
        if srv.cut_after is not None:
            self.wfile.write(body[: srv.cut_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture()
def server():
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def serve(server: FileServer, rel: str, url_path: str) -> tuple[bytes, dl.RemoteFile]:
    """Serve the sample file `rel` at `url_path`; a registry entry with its real hash, size and an
    https URL that only the base-URL override can reach."""
    data = (SAMPLE / rel).read_bytes()
    server.files[url_path] = data
    entry = dl.RemoteFile(f"https://files.invalid{url_path}", rel, sha(data), len(data))
    return data, entry


def test_download_verifies_and_skips(server, tmp_path):
    d1, e1 = serve(server, "cmrc2018/dev.json", "/ymcui/cmrc2018/x/cmrc2018_dev.json")
    d2, e2 = serve(server, "pretrained/hfl-chinese-xlnet-base/config.json", "/hfl/config.json")
    registry = (dl.Dataset("toy", "two files", (e1, e2)),)
    paths = dl.download(["toy"], tmp_path, base_url=server.base_url, registry=registry, console=quiet())
    assert paths == [tmp_path / "cmrc2018/dev.json", tmp_path / "pretrained/hfl-chinese-xlnet-base/config.json"]
    assert paths[0].read_bytes() == d1 and paths[1].read_bytes() == d2
    assert not list(tmp_path.rglob("*.part"))
    assert [r for _, r in server.requests] == [None, None]
    # A second run finds both verified and asks the server for nothing.
    console = quiet()
    dl.download(["toy"], tmp_path, base_url=server.base_url, registry=registry, console=console)
    assert len(server.requests) == 2
    assert "already present (verified), skipped" in console.file.getvalue()
    # --force downloads again.
    dl.download(["toy"], tmp_path, force=True, base_url=server.base_url, registry=registry, console=quiet())
    assert len(server.requests) == 4


def test_main_with_env_base_url_and_cache_dir(server, tmp_path, monkeypatch):
    _, entry = serve(server, "chnsenticorp/dev.tsv", "/wwm/dev.tsv")
    registry = (dl.Dataset("toy", "", (entry,)),)
    monkeypatch.setenv(dl.BASE_URL_ENV, server.base_url + "/")
    rc = dl.main(["toy", "--cache-dir", str(tmp_path)], registry=registry, console=quiet())
    assert rc == 0
    assert (tmp_path / "chnsenticorp/dev.tsv").read_bytes() == (SAMPLE / "chnsenticorp/dev.tsv").read_bytes()
    assert server.requests == [("/wwm/dev.tsv", None)]


def test_resume_from_half_written_part(server, tmp_path):
    data, entry = serve(server, "cmrc2018/train.json", "/ymcui/cmrc2018/x/cmrc2018_train.json")
    part = tmp_path / "cmrc2018" / "train.json.part"
    part.parent.mkdir(parents=True)
    half = len(data) // 2
    part.write_bytes(data[:half])
    dl.download_file(entry, tmp_path, base_url=server.base_url, reporter=dl._Reporter(quiet()))
    assert server.ranges("/ymcui/cmrc2018/x/cmrc2018_train.json") == [f"bytes={half}-"]
    assert (tmp_path / "cmrc2018/train.json").read_bytes() == data
    assert not part.exists()


def test_interrupted_download_keeps_part_then_resumes(server, tmp_path):
    data, entry = serve(server, "corpus/zh-hans.txt", "/corpus.txt")
    final = tmp_path / "corpus/zh-hans.txt"
    part = tmp_path / "corpus/zh-hans.txt.part"
    server.cut_after = 100_000
    with pytest.raises(CxlnetError, match=r"interrupted after 100000 of \d+ bytes.*resume"):
        dl.download_file(entry, tmp_path, base_url=server.base_url, reporter=dl._Reporter(quiet()))
    assert not final.exists()
    assert part.read_bytes() == data[:100_000]
    server.cut_after = None
    dl.download_file(entry, tmp_path, base_url=server.base_url, reporter=dl._Reporter(quiet()))
    assert server.ranges("/corpus.txt") == [None, "bytes=100000-"]
    assert final.read_bytes() == data and not part.exists()


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    data, entry = serve(server, "drcd/dev.json", "/DRCD_dev.json")
    server.ignore_range = True
    part = tmp_path / "drcd/dev.json.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[: len(data) // 3])
    console = quiet()
    dl.download_file(entry, tmp_path, base_url=server.base_url, reporter=dl._Reporter(console))
    assert server.ranges("/DRCD_dev.json") == [f"bytes={len(data) // 3}-"]  # asked, got a 200
    assert "ignored the Range request" in console.file.getvalue()
    assert (tmp_path / "drcd/dev.json").read_bytes() == data
    assert not part.exists()


def test_stale_part_longer_than_file_restarts(server, tmp_path):
    data, entry = serve(server, "pretrained/hfl-chinese-xlnet-base/config.json", "/config.json")
    entry = replace(entry, size=None)  # without a known size the server's 416 decides
    part = tmp_path / "pretrained/hfl-chinese-xlnet-base/config.json.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data + b"junk")
    dl.download_file(entry, tmp_path, base_url=server.base_url, reporter=dl._Reporter(quiet()))
    assert server.ranges("/config.json") == [f"bytes={len(data) + 4}-", None]
    assert (tmp_path / "pretrained/hfl-chinese-xlnet-base/config.json").read_bytes() == data


def test_corrupted_file_is_rejected(server, tmp_path, capsys):
    data, entry = serve(server, "cmrc2018/trial.json", "/cmrc2018_trial.json")
    server.corrupt.add("/cmrc2018_trial.json")
    bad = sha(bytes([data[0] ^ 0xFF]) + data[1:])
    with pytest.raises(CxlnetError) as err:
        dl.download_file(entry, tmp_path, base_url=server.base_url, reporter=dl._Reporter(quiet()))
    msg = str(err.value)
    assert "cmrc2018/trial.json" in msg and entry.sha256 in msg and bad in msg and "\n" not in msg
    assert not (tmp_path / "cmrc2018/trial.json").exists()
    assert not (tmp_path / "cmrc2018/trial.json.part").exists()
    # Through main: one line on stderr, exit code 1.
    registry = (dl.Dataset("toy", "", (entry,)),)
    rc = dl.main(["toy", "--cache-dir", str(tmp_path), "--base-url", server.base_url],
                 registry=registry, console=quiet())
    assert rc == 1
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "sha256 mismatch" in err_lines[0] and bad in err_lines[0]
    assert not list(tmp_path.rglob("trial.json*"))


def test_corrupt_present_file_is_replaced(server, tmp_path):
    data, entry = serve(server, "chnsenticorp/dev.tsv", "/dev.tsv")
    final = tmp_path / "chnsenticorp/dev.tsv"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"label\ttext_a\n1\tbroken\n")
    console = quiet()
    dl.download_file(entry, tmp_path, base_url=server.base_url, reporter=dl._Reporter(console))
    assert final.read_bytes() == data
    assert "downloading it again" in console.file.getvalue()


def test_unknown_hash_is_printed_not_pretended(server, tmp_path):
    data, entry = serve(server, "drcd/train.json", "/DRCD_training.json")
    entry = replace(entry, sha256=None, size=None)
    console = quiet()
    dl.download_file(entry, tmp_path, base_url=server.base_url, reporter=dl._Reporter(console))
    assert f"no published hash to check; downloaded sha256 {sha(data)}" in console.file.getvalue()


def _zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_archive_members_are_extracted_and_verified(server, tmp_path):
    train = (SAMPLE / "chnsenticorp/train.tsv").read_bytes()
    dev = (SAMPLE / "chnsenticorp/dev.tsv").read_bytes()
    archive = _zip_of({"chnsenticorp/train.tsv": train, "chnsenticorp/dev.tsv": dev,
                       "__MACOSX/chnsenticorp/._train.tsv": b"x"})
    server.files["/wwm/chnsenticorp.zip"] = archive
    blob = hashlib.sha1(f"blob {len(archive)}\0".encode() + archive).hexdigest()
    entry = dl.RemoteFile("https://raw.invalid/wwm/chnsenticorp.zip", "chnsenticorp/chnsenticorp.zip",
                          git_blob=blob, members=(
                              dl.Member("train.tsv", "chnsenticorp/train.tsv", sha(train), len(train)),
                              dl.Member("dev.tsv", "chnsenticorp/dev.tsv", sha(dev), len(dev))))
    out = dl.download_file(entry, tmp_path, base_url=server.base_url, reporter=dl._Reporter(quiet()))
    assert out == [tmp_path / "chnsenticorp/train.tsv", tmp_path / "chnsenticorp/dev.tsv"]
    assert out[0].read_bytes() == train and out[1].read_bytes() == dev
    assert sorted(p.name for p in (tmp_path / "chnsenticorp").iterdir()) == ["dev.tsv", "train.tsv"]
    # Members present and verified: no request at all.
    dl.download_file(entry, tmp_path, base_url=server.base_url, reporter=dl._Reporter(quiet()))
    assert len(server.requests) == 1
    # A member with a wrong hash: error naming it and both hashes; nothing extracted.
    bad = replace(entry, members=(dl.Member("train.tsv", "chnsenticorp/train.tsv", "0" * 64),))
    with pytest.raises(CxlnetError, match=rf"train\.tsv: sha256 mismatch: expected 0{{64}}, got {sha(train)}"):
        dl.download_file(bad, tmp_path / "other", base_url=server.base_url, reporter=dl._Reporter(quiet()))
    assert not list((tmp_path / "other").rglob("*.*"))


def test_network_error_is_one_line(tmp_path, capsys):
    srv = FileServer()  # bind a port, then close it: nothing listens there
    base = srv.base_url
    srv.server_close()
    entry = dl.RemoteFile("https://x.invalid/cmrc2018_dev.json", "cmrc2018/dev.json", "0" * 64)
    rc = dl.main(["toy", "--cache-dir", str(tmp_path), "--base-url", base],
                 registry=(dl.Dataset("toy", "", (entry,)),), console=quiet())
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: download of http://127.0.0.1:")
    assert not list(tmp_path.rglob("dev.json"))


def test_http_404_is_an_error(server, tmp_path):
    entry = dl.RemoteFile("https://x.invalid/missing.json", "cmrc2018/dev.json")
    with pytest.raises(CxlnetError, match=r"missing\.json failed: HTTP 404"):
        dl.download_file(entry, tmp_path, base_url=server.base_url, reporter=dl._Reporter(quiet()))


def test_effective_url_keeps_path(monkeypatch):
    url = "https://raw.githubusercontent.com/ymcui/cmrc2018/abc/squad-style-data/cmrc2018_dev.json"
    monkeypatch.delenv(dl.BASE_URL_ENV, raising=False)
    assert dl.effective_url(url) == url
    assert dl.effective_url(url, "http://127.0.0.1:9/") == \
        "http://127.0.0.1:9/ymcui/cmrc2018/abc/squad-style-data/cmrc2018_dev.json"
    monkeypatch.setenv(dl.BASE_URL_ENV, "http://mirror.example/data")
    assert dl.effective_url(url) == "http://mirror.example/data/ymcui/cmrc2018/abc/squad-style-data/cmrc2018_dev.json"


# Hashes published in shared/data/SOURCES.md: the registry must carry exactly these.
KNOWN_SHA256 = {
    "cmrc2018/train.json": "5497aa2f81908e31d6b0e27d99b1f90ab63a8f58fa92fffe5d17cf62eba0c212",
    "cmrc2018/dev.json": "e9ff74231f05c230c6fa88b84441ee334d97234cbb610991cd94b82db00c7f1f",
    "cmrc2018/trial.json": "f3fae95b57da8e03afb2b57467dd221417060ef4d82db13bf22fc88589f3a6f3",
    "drcd/dev.json": "e236df03861ba241bd7b29628cd48b3b8e339c60137e041a4358b5320ed61928",
    "chnsenticorp/train.tsv": "0b2653c23e5c79f539472e90cb10522f0ada4b80d3da95572d8b48fda47d5b33",
    "chnsenticorp/dev.tsv": "d129e443eac08ce7643013dad496a8edf282be39cac1a4f2ad080818b296b331",
    "pretrained/hfl-chinese-xlnet-base/spiece.model": "830e1e16012640ca728fd681f0077269cf5ba629c609951ecff7e1f7b5d497ae",
    "pretrained/hfl-chinese-xlnet-base/config.json": "0e44b8b6fea6866ef7741d166c8c3afed78a2eb2b0249b2233a29bab31a264a5",
}


def test_real_registry():
    names = [d.name for d in dl.REGISTRY]
    assert names == ["cmrc2018", "drcd", "chnsenticorp", "hfl-tokenizer", "hfl-chinese-xlnet-base",
                     "hfl-chinese-xlnet-mid"]
    seen = {}
    for ds in dl.REGISTRY:
        for entry in ds.files:
            assert entry.url.startswith("https://")
            for e in entry.members or (entry,):
                seen[e.dest] = e.sha256
    for dest, digest in KNOWN_SHA256.items():
        assert seen[dest] == digest, dest
    unknown = {d for d, s in seen.items() if s is None}
    assert unknown == {"drcd/train.json", "drcd/test.json", "chnsenticorp/test.tsv",
                       "pretrained/hfl-chinese-xlnet-base/pytorch_model.bin",
                       "pretrained/hfl-chinese-xlnet-mid/config.json",
                       "pretrained/hfl-chinese-xlnet-mid/spiece.model"}
    # hfl's LFS pointer of chinese-xlnet-mid/pytorch_model.bin (see the comment in download.py)
    assert seen["pretrained/hfl-chinese-xlnet-mid/pytorch_model.bin"] == \
        "8da1b307d5a7cb3decab6cce760c87d4a5e0ae524ca9903683148dc9eb71c68a"
    # every hfl file comes from a pinned hub commit, never from a moving branch
    for ds in dl.REGISTRY:
        if ds.name.startswith("hfl"):
            assert ds.require_pins
            for entry in ds.files:
                assert re.search(r"/resolve/[0-9a-f]{40}/", entry.url), entry.url
    # The shipped sample copies of the tokenizer files verify against the registry.
    for rel in ("pretrained/hfl-chinese-xlnet-base/spiece.model", "pretrained/hfl-chinese-xlnet-base/config.json"):
        assert sha((SAMPLE / rel).read_bytes()) == seen[rel]


@pytest.mark.fulldata
def test_registry_git_blob_ids_match_full_data(full_data_dir: Path):
    for ds in dl.REGISTRY:
        for entry in ds.files:
            for e in entry.members or (entry,):
                path = full_data_dir / e.dest
                if e.git_blob and path.is_file():
                    assert dl.file_hashes(path)[1] == e.git_blob, e.dest


def test_cli_usage_errors(capsys):
    assert dl.main([]) == 2
    assert dl.main(["nope"]) == 2
    assert "unknown dataset nope" in capsys.readouterr().err
    assert dl.main(["--list"], console=quiet()) == 0


def test_main_reports_each_failed_file_and_goes_on(server, tmp_path, capsys):
    data, good = serve(server, "drcd/dev.json", "/DRCD_dev.json")
    missing = dl.RemoteFile("https://x.invalid/DRCD_training.json", "drcd/train.json")
    also_missing = dl.RemoteFile("https://x.invalid/DRCD_test.json", "drcd/test.json")
    registry = (dl.Dataset("toy", "", (missing, good, also_missing)),)
    rc = dl.main(["toy", "--cache-dir", str(tmp_path), "--base-url", server.base_url],
                 registry=registry, console=quiet())
    assert rc == 1
    assert (tmp_path / "drcd/dev.json").read_bytes() == data
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "DRCD_training.json failed: HTTP 404" in err[0] and "2 files failed" in err[2]


def test_unpinned_weights_are_refused_unless_allowed_loudly(server, tmp_path, capsys):
    pinned_data, pinned = serve(server, "pretrained/hfl-chinese-xlnet-base/config.json", "/hfl/r/config.json")
    data, loose = serve(server, "pretrained/hfl-chinese-xlnet-base/spiece.model", "/hfl/r/pytorch_model.bin")
    loose = replace(loose, dest="pretrained/x/pytorch_model.bin", sha256=None, size=None)
    registry = (dl.Dataset("weights", "", (pinned, loose), require_pins=True),)
    args = ["weights", "--cache-dir", str(tmp_path), "--base-url", server.base_url]
    assert dl.main(args, registry=registry, console=quiet()) == 1
    err = capsys.readouterr().err
    assert "pretrained/x/pytorch_model.bin: no sha256 is pinned" in err and "--allow-unverified" in err
    assert not (tmp_path / loose.dest).exists() and [p for p, _ in server.requests] == ["/hfl/r/config.json"]
    assert (tmp_path / pinned.dest).read_bytes() == pinned_data  # the verifiable file still came

    console = quiet()
    assert dl.main([*args, "--allow-unverified"], registry=registry, console=console) == 0
    out = console.file.getvalue()
    assert f"WARNING: {loose.dest} is NOT VERIFIED" in out and sha(data) in out
    assert (tmp_path / loose.dest).read_bytes() == data
