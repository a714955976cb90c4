"""Data-file resolution through `paths.data_dir`: explicit dir, $CXLNET_DATA_DIR, download cache,
embedded sample, errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from cxlnet import paths
from cxlnet.errors import CxlnetError

REL = "cmrc2018/dev.json"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No user data dir, an empty cache, and a working directory without data files."""
    monkeypatch.delenv("CXLNET_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("CXLNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def put(root: Path, rel: str = REL, text: str = "{}") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_explicit_dir(tmp_path):
    path = put(tmp_path / "data")
    assert paths.resolve_data_file(str(tmp_path / "data"), REL) == path
    assert paths.resolve_data_file(tmp_path / "data", REL) == path


def test_explicit_dir_beats_cache_and_sample(tmp_path):
    put(tmp_path / "cache")
    mine = put(tmp_path / "data")
    assert paths.resolve_data_file(str(tmp_path / "data"), REL) == mine


def test_explicit_dir_missing_file_names_full_path(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(CxlnetError) as err:
        paths.resolve_data_file(str(tmp_path / "data"), REL)
    assert str(tmp_path / "data" / REL) in str(err.value)


def test_explicit_dir_that_is_not_a_directory(tmp_path):
    with pytest.raises(CxlnetError, match="not a directory"):
        paths.resolve_data_file(str(tmp_path / "nowhere"), REL)


def test_absolute_or_existing_relative_path_is_itself(tmp_path):
    absolute = put(tmp_path / "elsewhere", "x.json")
    assert paths.resolve_data_file("auto", str(absolute)) == absolute
    assert paths.resolve_data_file(str(tmp_path / "data-not-there"), absolute) == absolute
    put(tmp_path, "local/y.tsv")  # relative to the working directory
    assert paths.resolve_data_file("auto", "local/y.tsv") == Path("local/y.tsv")
    with pytest.raises(CxlnetError, match="file not found"):
        paths.resolve_data_file("auto", str(tmp_path / "missing.json"))


def test_auto_with_env_var(tmp_path, monkeypatch):
    put(tmp_path / "cache")
    env_file = put(tmp_path / "envdata")
    monkeypatch.setenv("CXLNET_DATA_DIR", str(tmp_path / "envdata"))
    assert paths.resolve_data_file("auto", REL) == env_file
    assert paths.resolve_data_file(None, REL) == env_file
    # The env var is authoritative: a file missing there is an error, not a silent fall-back.
    with pytest.raises(CxlnetError) as err:
        paths.resolve_data_file("auto", "drcd/dev.json")
    assert str(tmp_path / "envdata" / "drcd/dev.json") in str(err.value)
    assert "CXLNET_DATA_DIR" in str(err.value)


def test_auto_with_cache_present(tmp_path):
    cached = put(tmp_path / "cache")
    assert paths.resolve_data_file("auto", REL) == cached
    assert paths.resolve_data_file(None, REL) == cached


def test_auto_falls_back_to_sample_per_file(tmp_path):
    put(tmp_path / "cache")  # the cache holds dev.json only
    sample = paths.sample_dir() / "cmrc2018/train.json"
    assert paths.resolve_data_file("auto", "cmrc2018/train.json") == sample
    assert paths.resolve_data_file(None, "chnsenticorp/train.tsv") == paths.sample_dir() / "chnsenticorp/train.tsv"
    assert paths.resolve_data_file("auto", "pretrained/hfl-chinese-xlnet-base/spiece.model").is_file()
    assert paths.resolve_data_file("auto", "pretrained/hfl-chinese-xlnet-base").is_dir()


def test_auto_missing_everywhere_lists_places(tmp_path):
    with pytest.raises(CxlnetError) as err:
        paths.resolve_data_file("auto", "drcd/test.json")
    msg = str(err.value)
    assert str(tmp_path / "cache" / "drcd/test.json") in msg
    assert str(paths.sample_dir() / "drcd/test.json") in msg
    assert "cxlnet download" in msg and "\n" not in msg


def test_cache_dir_rules(monkeypatch, tmp_path):
    assert paths.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("CXLNET_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "xdg" / "cxlnet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.cache_dir() == tmp_path / "home" / ".cache" / "cxlnet"


def test_sample_dir_is_in_the_package():
    root = paths.sample_dir()
    assert root.name == "sample" and root.parent == Path(paths.__file__).resolve().parent
    assert (root / "NOTICE.md").is_file()


def test_download_cache_layout_is_what_paths_reads(tmp_path):
    """Every file `cxlnet download` writes is found by `paths` in the cache under the same name."""
    from cxlnet.download import REGISTRY

    for ds in REGISTRY:
        for entry in ds.files:
            for e in entry.members or (entry,):
                put(tmp_path / "cache", e.dest)
                assert paths.resolve_data_file("auto", e.dest) == tmp_path / "cache" / e.dest


def test_hub_names_resolve_to_the_download_cache(tmp_path, monkeypatch):
    from cxlnet.runs import resolve_pretrained

    monkeypatch.setenv("CXLNET_CACHE_DIR", str(tmp_path))
    with pytest.raises(CxlnetError, match="cxlnet download hfl-chinese-xlnet-mid"):
        resolve_pretrained("hfl/chinese-xlnet-mid")
    (tmp_path / "pretrained" / "hfl-chinese-xlnet-mid").mkdir(parents=True)
    assert resolve_pretrained("hfl/chinese-xlnet-mid") == tmp_path / "pretrained" / "hfl-chinese-xlnet-mid"


def test_explicit_dir_beats_a_same_named_file_in_the_working_directory(tmp_path):
    put(tmp_path, REL, "cwd")  # the fixture's working directory is tmp_path
    mine = put(tmp_path / "data", REL, "mine")
    assert paths.resolve_data_file(str(tmp_path / "data"), REL) == mine


def test_a_tasks_files_come_from_one_place(tmp_path):
    """A cache holding only a full DRCD dev set must not be paired with the sample's train set
    (which is cut from that dev set): both come from the sample, or it is an error."""
    put(tmp_path / "cache", "drcd/dev.json")
    names = {"train": "drcd/train.json", "dev": "drcd/dev.json"}
    got = paths.resolve_data_files("auto", names)
    assert got == {k: paths.sample_dir() / v for k, v in names.items()}
    put(tmp_path / "cache", "drcd/train.json")
    assert paths.resolve_data_files("auto", names) == {k: tmp_path / "cache" / v for k, v in names.items()}
    with pytest.raises(CxlnetError) as err:  # the sample has no DRCD test set, the cache no train set
        (tmp_path / "cache" / "drcd/train.json").unlink()
        paths.resolve_data_files("auto", {**names, "test": "drcd/test.json"})
    msg = str(err.value)
    assert "not found together" in msg and str(tmp_path / "cache" / "drcd/train.json") in msg
    assert str(paths.sample_dir() / "drcd/test.json") in msg and "\n" not in msg
