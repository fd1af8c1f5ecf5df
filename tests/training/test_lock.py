"""One run per folder: a live lock refuses, a stale one is taken over."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from nnssl.errors import NnsslError
from nnssl.training.lock import LOCK_FILE, RunLock


def test_second_lock_refuses_and_release(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_FILE).is_file()
        with pytest.raises(NnsslError, match=r"another nnssl_pretrain \(pid \d+\) is running"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_FILE).exists()


def test_stale_lock_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket
    (tmp_path / LOCK_FILE).write_text(f"{dead.pid} {socket.gethostname()}\n")
    with caplog.at_level(logging.WARNING), RunLock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().split()[0] != str(dead.pid)
    assert "stale lock" in caplog.text


def test_lock_of_another_host_refuses(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text("1 some-other-host\n")
    with pytest.raises(NnsslError, match="on host some-other-host"):
        RunLock(tmp_path).acquire()
