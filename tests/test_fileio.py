"""jlstm.fileio: atomic files and directories, no symlink following, recovery, the run lock."""

import errno
import os
import stat

import pytest

from jlstm import fileio


@pytest.fixture
def outside(tmp_path):
    """A file outside the directory being written, that planted links point to."""
    target = tmp_path / "outside" / "precious.txt"
    target.parent.mkdir()
    target.write_text("precious")
    return target


def _plant_predictable_temps(path, outside):
    """Links at every temporary name an attacker could predict for ``path``."""
    names = [f"{path.name}.tmp", f"{path.name}.tmp-{os.getpid()}", f".{path.name}.tmp"]
    names += [f".{path.name}.tmp-{os.getpid()}", f"{path.name}~", f".{path.name}.swp"]
    for name in names:
        (path.parent / name).symlink_to(outside)
    return names


def test_atomic_write_never_follows_planted_temp_links(tmp_path, outside):
    out = tmp_path / "run"
    out.mkdir()
    path = out / "metrics.json"
    planted = _plant_predictable_temps(path, outside)
    fileio.write_text_atomic(path, '{"rmse": 1.0}\n')
    assert path.read_text() == '{"rmse": 1.0}\n' and not path.is_symlink()
    assert outside.read_text() == "precious"
    # Only the target was added; the planted links are left alone, still links.
    assert sorted(os.listdir(out)) == sorted([*planted, "metrics.json"])
    assert all((out / n).is_symlink() for n in planted)


def test_a_target_that_is_a_link_is_replaced_not_written_through(tmp_path, outside):
    path = tmp_path / "forecast.csv"
    path.symlink_to(outside)
    fileio.write_bytes_atomic(path, b"a,b\n")
    assert not path.is_symlink() and path.read_bytes() == b"a,b\n"
    assert outside.read_text() == "precious"
    # Callers that must keep a user's link refuse it instead.
    (tmp_path / "link").symlink_to(outside)
    with pytest.raises(OSError, match=r"--output '.*link' is a symbolic link") as info:
        fileio.refuse_symlink(tmp_path / "link", "--output")
    assert info.value.errno == errno.ELOOP


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "history.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), fileio.writing(path, "w") as f:
        f.write("half")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["history.json"]


def test_files_get_the_umask_permissions_not_mkstemp_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        fileio.write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o644


def test_write_dir_atomic_replaces_and_refuses_links(tmp_path, outside):
    path = tmp_path / "ckpt"

    def fill(content):
        return lambda d: open(os.path.join(d, "f"), "w").write(content)

    fileio.write_dir_atomic(path, fill("one"))
    fileio.write_dir_atomic(path, fill("two"))
    assert (path / "f").read_text() == "two"
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "outside"]

    def broken(d):
        raise OSError(errno.ENOSPC, "disk full")

    with pytest.raises(OSError, match="disk full"):
        fileio.write_dir_atomic(path, broken)
    assert (path / "f").read_text() == "two"
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "outside"]
    link = tmp_path / "linked"
    link.symlink_to(outside.parent)
    with pytest.raises(OSError, match="symbolic link"):
        fileio.write_dir_atomic(link, fill("three"))
    assert sorted(os.listdir(outside.parent)) == ["precious.txt"]


def test_recover_dir_rolls_back_a_half_done_swap(tmp_path):
    def complete(d):
        return os.path.isfile(os.path.join(d, "done"))

    path = tmp_path / "run[1]"  # glob metacharacters in the name
    old = tmp_path / ".run[1].old-abc"
    old.mkdir()
    (old / "done").write_text("")
    tmp = tmp_path / ".run[1].tmp-def"
    tmp.mkdir()
    assert fileio.recover_dir(path, complete=complete)
    assert sorted(os.listdir(tmp_path)) == ["run[1]"]
    assert (path / "done").exists()
    # Nothing complete aside: nothing moved, nothing deleted.
    os.replace(path, old)
    os.remove(old / "done")
    assert not fileio.recover_dir(path, complete=complete)
    assert sorted(os.listdir(tmp_path)) == [".run[1].old-abc"]


def test_recover_dir_refuses_a_link_and_never_rmtrees_through_one(tmp_path, outside):
    link = tmp_path / "run"
    link.symlink_to(outside.parent)
    with pytest.raises(OSError, match="symbolic link"):
        fileio.recover_dir(link, complete=lambda d: True)
    link.unlink()
    link.mkdir()
    (tmp_path / ".run.old-x").symlink_to(outside.parent)
    assert fileio.recover_dir(link, complete=lambda d: True)
    assert outside.read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["outside", "run"]


def test_check_writable(tmp_path):
    fileio.check_writable(tmp_path / "new" / "dir")
    assert os.listdir(tmp_path / "new" / "dir") == []
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        fileio.check_writable(tmp_path / "file" / "sub")
    (tmp_path / "link").symlink_to(tmp_path / "new")
    with pytest.raises(OSError, match="symbolic link"):
        fileio.check_writable(tmp_path / "link")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        with pytest.raises(PermissionError):
            fileio.check_writable(ro)


def test_dir_lock_is_exclusive_and_released(tmp_path, outside):
    with fileio.DirLock(tmp_path):
        with pytest.raises(fileio.LockedError, match="in use by another jlstm run"):
            fileio.DirLock(tmp_path).acquire()
    with fileio.DirLock(tmp_path):  # released on exit
        pass
    other = tmp_path / "other"
    other.mkdir()
    (other / fileio.LOCK_FILE).symlink_to(outside)
    with pytest.raises(OSError) as info:
        fileio.DirLock(other).acquire()
    assert info.value.errno == errno.ELOOP
    assert outside.read_text() == "precious"
