"""The run folder (issue 24, items 5-7): one fit at a time per folder, checkpoints written whole or
not at all (a full disk), and an output folder that cannot be written is one line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lw_lightning.checkpoint_io import AtomicCheckpointIO, partial_path
from lw_lightning.cli import main
from lw_lightning.errors import CheckpointSaveError
from lw_lightning.run_lock import LOCK_NAME

from .conftest import ROOT, tiny_overrides


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)


def _fast(tmp_path: Path, *extra: str) -> list[str]:
    return [
        *tiny_overrides(tmp_path, size=56),
        "data.num_train=16",
        "data.batch_size=8",
        "trainer.limit_val_batches=1",
        "callbacks.images=null",
        "name=folder",
        *extra,
    ]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


def _in_own_mounts(script: str) -> subprocess.CompletedProcess:
    """``sh -c script`` in a user and mount namespace of its own: it may mount a small or
    read-only tmpfs without root, and the mount goes with it."""
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


# --- item 5: two fits into one folder ------------------------------------------------------------


def test_second_fit_into_a_held_run_folder_names_the_holder(tmp_path, capsys):
    """A fit resumes last.ckpt while another fit trains into the same folder: the second says who
    holds it and exits 2, and the first goes on undisturbed."""
    assert main(["fit", "experiment=demo_vit", *_fast(tmp_path, "trainer.max_epochs=1")]) == 0
    run_dir = tmp_path / "runs" / "folder" / "version_0"
    marker = tmp_path / "step"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lw_lightning",
            "fit",
            "experiment=demo_vit",
            *_fast(tmp_path, "trainer.max_epochs=1000", "ckpt_path=last"),
            "callbacks.marker._target_=tests.scale_helpers.StepMarker",
            f"callbacks.marker.path={marker}",
            "callbacks.marker.delay=0.2",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.is_file():
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the first fit did not start training"
            time.sleep(0.1)
        capsys.readouterr()
        assert main(["fit", "experiment=demo_vit", *_fast(tmp_path, "trainer.max_epochs=1000", "ckpt_path=last")]) == 2
        err = _one_error_line(capsys)
        assert err.startswith(f"error: run folder {run_dir} is in use by process {first.pid} on ")
        assert "another folder (name=... or logger.version=...)" in err
        assert first.poll() is None  # still training
        holder = json.loads((run_dir / LOCK_NAME).read_text())
        assert holder["pid"] == first.pid  # the failed attempt did not overwrite the record
    finally:
        first.kill()
        first.communicate()
    # the holder is gone (killed: the lock went with it): the folder is free again, no stale lock
    from lw_lightning.run_lock import hold_run_folder

    with hold_run_folder(run_dir):
        assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_other_ranks_do_not_take_the_lock(tmp_path, monkeypatch):
    from lw_lightning.run_lock import hold_run_folder

    with hold_run_folder(tmp_path):
        monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP process Lightning started shares the folder
        with hold_run_folder(tmp_path):
            pass
        monkeypatch.setenv("LOCAL_RANK", "0")
        with pytest.raises(Exception, match="is in use by process"), hold_run_folder(tmp_path):
            pass


# --- item 6: a full disk ---------------------------------------------------------------------------


def test_failed_write_keeps_the_previous_checkpoint_and_leaves_no_part(tmp_path, monkeypatch):
    """The writer fails half-way (ENOSPC after some bytes, as on a full disk): the earlier file at
    that path is untouched, no partial file is left, the error is one line."""
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.zeros(1000)}, path)
    before = path.read_bytes()

    real_open = open

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(bytes(data)[: len(data) // 3])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **k: FullDisk(real_open(p, mode, *a, **k)))
    with pytest.raises(CheckpointSaveError) as info:
        io.save_checkpoint({"global_step": 2, "w": torch.ones(1000)}, path)
    monkeypatch.undo()
    assert str(info.value) == (
        f"could not save checkpoint {path}: No space left on device; the earlier checkpoints are kept as they were"
    )
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    assert not partial_path(path).exists()


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _can_unshare(), reason="needs unshare to mount a small tmpfs")
def test_full_disk_stops_the_run_with_one_line_and_whole_checkpoints(tmp_path):
    """A real full disk: the run folder on a 16 MB tmpfs (one checkpoint is 6.2 MB). Epoch 0 writes
    epoch_000.ckpt and last.ckpt; epoch 1's checkpoint does not fit. Before, Lightning's writer left
    a truncated epoch_001.ckpt (its temporary file lies in /tmp, another file system, and the move is
    a copy) and a traceback."""
    disk = tmp_path / "disk"
    disk.mkdir()
    args = _fast(disk, "trainer.max_epochs=3", "callbacks.checkpoint.save_top_k=-1")
    ckpts = f"{disk}/runs/folder/version_0/checkpoints"
    script = (
        f"mount -t tmpfs -o size=16m tmpfs {disk} && cd {ROOT} && "
        f"{sys.executable} -m lw_lightning fit experiment=demo_vit {' '.join(args)}; echo status=$?; "
        f"echo files=$(ls -A {ckpts}); "
        f"{sys.executable} -c \"import glob, torch; print('steps=' + ' '.join(str(torch.load(p, weights_only=True)"
        f"['global_step']) for p in sorted(glob.glob('{ckpts}/*.ckpt'))))\""
    )
    proc = _in_own_mounts(script)
    lines = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    assert lines.get("status") == "1", proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        f"error: could not save checkpoint {ckpts}/epoch_001.ckpt: No space left on device; the earlier checkpoints are kept as they were"
    ]
    assert lines["files"].split() == ["epoch_000.ckpt", "last.ckpt"]  # nothing half-written, nothing lost
    assert lines["steps"] == "2 2"  # both load whole, at the end of epoch 0 (2 steps)


# --- item 7: an output folder that cannot be written --------------------------------------------------


def test_output_dir_under_a_file_is_one_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["fit", "experiment=demo_vit", *_fast(tmp_path), f"output_dir={afile}/runs"]) == 2
    assert _one_error_line(capsys) == f"error: cannot write output_dir {afile}/runs: {afile} is a file, not a folder"


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _can_unshare(), reason="needs unshare to mount a read-only tmpfs")
def test_read_only_output_dir_is_one_line(tmp_path):
    """A read-only file system (where root, too, cannot write): one line before anything runs."""
    ro = tmp_path / "ro"
    ro.mkdir()
    script = (
        f"mount -t tmpfs -o ro,size=1m tmpfs {ro} && cd {ROOT} && "
        f"{sys.executable} -m lw_lightning fit experiment=demo_vit output_dir={ro}/runs; echo status=$?"
    )
    proc = _in_own_mounts(script)
    assert "status=2" in proc.stdout, proc.stderr[-2000:]
    assert proc.stderr.strip() == f"error: cannot write output_dir {ro}/runs: {ro}: Read-only file system"


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root writes regardless of permissions")
def test_output_dir_without_permission_is_one_line(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert main(["fit", "experiment=demo_vit", *_fast(tmp_path), f"output_dir={locked}/runs"]) == 2
    assert _one_error_line(capsys) == f"error: cannot write output_dir {locked}/runs: {locked}: Permission denied"
