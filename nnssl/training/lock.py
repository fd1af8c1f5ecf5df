"""One run per results folder: a lock file holding the owner's pid; a lock left by a dead process is taken over."""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from types import TracebackType

from nnssl.errors import NnsslError

LOCK_FILE = ".nnssl_pretrain.lock"
logger = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """Context manager: ``with RunLock(folder): ...`` refuses when another live process holds ``folder``.

    The lock file contains ``<pid> <hostname>``. It is created with ``O_EXCL``, so two starts racing for the same folder
    cannot both win. A lock whose pid is dead on this host (e.g. after ``kill -9``) is replaced with a warning.
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me + "\n")
            self._held = True
            return
        raise NnsslError(f"could not take the lock {self.path}; delete it if no nnssl_pretrain runs in that folder")

    def _handle_existing(self) -> None:
        try:
            pid_text, _, host = self.path.read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            pid, host = -1, ""
        other_host = bool(host) and host != socket.gethostname()
        if pid > 0 and (other_host or _pid_alive(pid)):
            where = f" on host {host}" if other_host else ""
            raise NnsslError(f"another nnssl_pretrain (pid {pid}{where}) is running in {self.path.parent}; wait for "
                             f"it to finish or stop it, or delete {self.path} if that process is gone")
        logger.warning("taking over the stale lock %s (pid %s is not running)", self.path, pid)
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
