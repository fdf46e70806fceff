"""A tracer child started with a plain `os.fork`, watched and stopped as a multiprocessing child would be.

multiprocessing refuses to start a child from a daemonic process ("daemonic processes are not allowed
to have children"), and that is what a Dask worker started by `dask worker` is, by default.  The
refusal is multiprocessing's own bookkeeping (a daemonic process would leave its children orphaned when
it is stopped), not a limit of the operating system; the tracer kills and reaps its children itself,
so it does not need it.  A `ForkedChild` has the parts of `multiprocessing.Process` the batch uses
(`start`, `pid`, `sentinel`, `is_alive`, `kill`, `join`, `exitcode`) and works in any process.

The child runs `target(*args)` and leaves with `os._exit`, never returning into the parent's code (in
a Dask worker that would be its event loop).  Its `sentinel` is the read end of a pipe whose only
write end the child holds: it becomes readable when the child exits, however it exits, which is what
`multiprocessing.connection.wait` needs.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable


class ForkedChild:
    def __init__(self, target: Callable[..., object], args: tuple = ()) -> None:
        self._target, self._args = target, args
        self.pid: int | None = None
        self.sentinel: int | None = None
        self.exitcode: int | None = None
        self._killed = False

    def start(self) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.close(read_end)
                _leave_the_parents_signal_handling()
                self._target(*self._args)
                code = 0
            except BaseException:  # the target reports its own errors; anything else is a crash
                pass
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)  # write_end closes with the process: the parent's sentinel fires
        os.close(write_end)
        self.pid, self.sentinel = pid, read_end

    def is_alive(self) -> bool:
        self._poll(block=False)
        return self.exitcode is None

    def kill(self) -> None:
        if self.exitcode is None and self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                self._killed = True
            except ProcessLookupError:
                pass

    def join(self, timeout: float | None = None) -> None:
        """Reap the child: wait for it (at most `timeout` seconds when given)."""
        if self.exitcode is not None or self.pid is None:
            return
        if timeout is None:
            self._poll(block=True)
            return
        from multiprocessing.connection import wait

        if wait([self.sentinel], timeout):
            self._poll(block=True)  # it has exited (or is exiting): reaping does not wait long

    def _poll(self, block: bool) -> None:
        if self.exitcode is not None or self.pid is None:
            return
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped by someone else (a SIGCHLD handler): its status is lost
            pid, status = self.pid, -1
        if pid == 0:
            return
        if status == -1:
            self.exitcode = -signal.SIGKILL if self._killed else 1
        else:
            self.exitcode = os.waitstatus_to_exitcode(status)
        self._close_sentinel()

    def _close_sentinel(self) -> None:
        if self.sentinel is not None:
            os.close(self.sentinel)
            self.sentinel = None


def _leave_the_parents_signal_handling() -> None:
    """In the child: signals no longer reach the parent's handlers.  An event loop (a Dask worker's)
    has Python write each signal to its wake-up socket, which the child shares: a SIGTERM sent to the
    child must end the child, not wake the parent's loop."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # not the main thread of the main interpreter: nothing was installed for it
        pass
