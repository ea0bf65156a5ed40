"""A worker process that ends with its launcher, however the launcher ends (SIGKILL included).

Two mechanisms, both armed, because each covers a gap of the other:

- Linux's parent-death signal, ``prctl(PR_SET_PDEATHSIG, SIGTERM)``: the kernel sends SIGTERM the
  moment the launcher's thread that started the child exits (the launcher is single-threaded). It
  is armed in the child after the interpreter started, so the launcher may already be gone by
  then: the child compares ``os.getppid()`` with the launcher's pid it was given and stops if they
  differ.
- a watchdog pipe, on every POSIX system: the launcher holds the write end and never writes; the
  child blocks on the read end in a daemon thread and reads end-of-file once no process holds the
  write end, i.e. once the launcher is gone. It also fires where the parent-death signal does not
  (not Linux, or a launcher that is not the direct parent).

Why our own: neither Celery nor the standard library ties a process to its parent; ``prctl`` is
one ctypes call and the pipe a few lines.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
"""From ``<linux/prctl.h>``."""


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent thread exits; ``False`` elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
            return False
    except (OSError, AttributeError) as exc:
        log.warning("no parent-death signal (%s); the watchdog pipe alone ties this worker to its launcher", exc)
        return False
    return True


class Lifeline:
    """The child's side of its tie to the launcher.

    Args:
        launcher_pid: the launcher's pid (``os.getppid()`` of the child while the launcher lives).
        watchdog_fd: the read end of the launcher's watchdog pipe, or ``None``.

    Example:
        >>> line = Lifeline(launcher_pid, watchdog_fd)  # doctest: +SKIP
        >>> line.arm(lambda reason: stop_soon(reason))  # doctest: +SKIP
    """

    def __init__(self, launcher_pid: int, watchdog_fd: int | None) -> None:
        self.launcher_pid = launcher_pid
        self.watchdog_fd = watchdog_fd
        self._on_orphaned: Callable[[str], None] = lambda reason: os._exit(1)
        self._fired = False
        self._lock = threading.Lock()

    def orphaned(self) -> bool:
        """True once the launcher is gone (this process was re-parented)."""
        return os.getppid() != self.launcher_pid

    def arm(self, on_orphaned: Callable[[str], None]) -> None:
        """Arm both mechanisms; ``on_orphaned(reason)`` runs once, in the watchdog thread, when the
        pipe reports the launcher gone. If it is gone already, this process exits at once (status 1):
        nothing has started yet. The parent-death signal is SIGTERM, which Celery (once running)
        turns into its warm shutdown."""
        self._on_orphaned = on_orphaned
        set_parent_death_signal(signal.SIGTERM)
        if self.orphaned():  # the launcher died before the signal was armed
            print(f"genaccel worker: launcher pid {self.launcher_pid} is gone before this worker started; "
                  "exiting", file=sys.stderr, flush=True)
            os._exit(1)
        if self.watchdog_fd is not None:
            threading.Thread(target=self._watch, name="genaccel-lifeline", daemon=True).start()

    def _watch(self) -> None:
        assert self.watchdog_fd is not None
        try:
            while os.read(self.watchdog_fd, 64):  # the launcher never writes; b"" is end-of-file
                pass
        except OSError as exc:
            log.warning("watchdog pipe failed (%s); treating the launcher as gone", exc)
        self.fire(f"its launcher (pid {self.launcher_pid}) is gone")

    def fire(self, reason: str) -> None:
        """Run ``on_orphaned(reason)`` unless it already ran."""
        with self._lock:
            if self._fired:
                return
            self._fired = True
        self._on_orphaned(reason)
