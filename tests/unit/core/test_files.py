import errno
import os

import pytest

from ich.core import files
from ich.core.files import atomic_write_bytes, prepare_output_dir, write_file
from ich.core.ids import image_path
from ich.data.copy import link_or_copy_many


def test_image_path_only_accepts_valid_ids(tmp_path):
    assert image_path(tmp_path, "ID_ab", ".dcm") == tmp_path / "ID_ab.dcm"
    for bad in ("ID_../x", "/etc/passwd", "ID_a\x00"):
        with pytest.raises(ValueError):
            image_path(tmp_path, bad, ".dcm")


def test_link_or_copy_hardlinks_and_reports_missing(tmp_path):
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir(), target.mkdir()
    (source / "ID_a.dcm").write_bytes(b"a")
    result = link_or_copy_many(["ID_a", "ID_b"], source, target)
    assert result.linked == ["ID_a"] and result.missing == ["ID_b"]
    assert os.stat(target / "ID_a.dcm").st_ino == os.stat(source / "ID_a.dcm").st_ino


def test_link_or_copy_falls_back_to_copy_across_filesystems(tmp_path, monkeypatch):
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir(), target.mkdir()
    (source / "ID_a.dcm").write_bytes(b"abc")

    def cross_device(*args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(files.os, "link", cross_device)
    result = link_or_copy_many(["ID_a"], source, target, workers=2)
    assert result.copied == ["ID_a"]
    assert (target / "ID_a.dcm").read_bytes() == b"abc"
    assert os.stat(target / "ID_a.dcm").st_ino != os.stat(source / "ID_a.dcm").st_ino


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "out.bin"
    atomic_write_bytes(path, b"old")

    def broken_replace(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_prepare_output_dir_clears_and_reports_unwritable(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "stale.png").write_bytes(b"x")
    assert list(prepare_output_dir(folder).iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="Cannot create or write"):
        prepare_output_dir(blocker / "sub")


def test_atomic_writes_get_the_usual_file_mode_not_mkstemps_private_one(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_UMASK", 0o022)
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644  # mkstemp alone gives 0o600
    assert (tmp_path / "a.bin").read_bytes() == b"x"
    assert [path.name for path in tmp_path.iterdir()] == ["a.bin"]


def test_write_file_writes_all_bytes_with_the_umask_mode(tmp_path, monkeypatch):
    data = bytes(range(256)) * 1000
    old_umask = os.umask(0o027)
    try:
        write_file(tmp_path / "a.png", data)
    finally:
        os.umask(old_umask)
    assert (tmp_path / "a.png").read_bytes() == data
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o640
    write_file(tmp_path / "a.png", b"shorter")  # a retried file replaces the old content
    assert (tmp_path / "a.png").read_bytes() == b"shorter"


def test_write_file_resumes_short_writes_and_leaves_nothing_when_it_fails(tmp_path, monkeypatch):
    real_write, calls = os.write, []

    def short_write(handle, data):  # the kernel may write fewer bytes than asked
        calls.append(len(data))
        return real_write(handle, bytes(data[:3]))

    monkeypatch.setattr(files.os, "write", short_write)
    write_file(tmp_path / "a.bin", b"0123456789")
    assert (tmp_path / "a.bin").read_bytes() == b"0123456789"
    assert calls == [10, 7, 4, 1]

    def full_disk(handle, data):
        real_write(handle, bytes(data[:2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "write", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_file(tmp_path / "a.bin", b"new content")
    assert (tmp_path / "a.bin").read_bytes() == b"0123456789"  # the old file, whole
    with pytest.raises(OSError, match="No space"):
        write_file(tmp_path / "b.bin", b"0123456789")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.bin"]  # no partial file, no temporary


def test_write_file_never_shows_a_partial_file_while_writing(tmp_path, monkeypatch):
    seen = []

    def watching_write(handle, data):  # what a reader sees at the target while the bytes go out
        seen.append((tmp_path / "a.bin").exists())
        return real_write(handle, data)

    real_write = os.write
    monkeypatch.setattr(files.os, "write", watching_write)
    write_file(tmp_path / "a.bin", b"x" * 100)
    assert seen == [False] and (tmp_path / "a.bin").read_bytes() == b"x" * 100
