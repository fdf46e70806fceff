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
`wait` needs.

A child's result comes back through a `result_pipe`: one pickled object over a plain pipe, with the
parts of a multiprocessing `Pipe(duplex=False)` the batch used, and `wait` is
`multiprocessing.connection.wait` for pipes.  Not multiprocessing's own: importing it (with socket,
which it imports) was about 5 ms of CPU of every one-file `runtrace scan`.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import sys
from collections.abc import Callable, Iterable

_HEADER = 8  # bytes: the pickled result's length, little-endian


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


class ResultReader:
    """The parent's end of a result pipe."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def poll(self) -> bool:
        """Whether `recv` would not block: a result is there, or the writer is gone (EOFError)."""
        return bool(wait([self._fd], 0))

    def recv(self):
        """The object the child sent; EOFError when the child's end closed before a whole one came."""
        size = int.from_bytes(self._read(_HEADER), "little")
        return pickle.loads(self._read(size))

    def _read(self, size: int) -> bytes:
        chunks, left = [], size
        while left:
            chunk = os.read(self._fd, min(left, 1 << 20))
            if not chunk:
                raise EOFError("the tracer child's end of the pipe closed before its result")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class ResultWriter:
    """The child's end of a result pipe."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def send(self, obj) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(len(data).to_bytes(_HEADER, "little") + data)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def result_pipe() -> tuple[ResultReader, ResultWriter]:
    read_end, write_end = os.pipe()
    return ResultReader(read_end), ResultWriter(write_end)


def wait(objects: Iterable, timeout: float | None = None) -> list:
    """The objects (file descriptors, or objects with `fileno()`) that are readable, or whose other end
    closed, waiting at most `timeout` seconds (None: until one is)."""
    by_fd = {obj if isinstance(obj, int) else obj.fileno(): obj for obj in objects}
    if not by_fd:
        return []
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    ready = poller.poll(None if timeout is None else max(0, int(timeout * 1000)))
    return [by_fd[fd] for fd, _ in ready]


def _leave_the_parents_signal_handling() -> None:
    """In the child: signals no longer reach the parent's handlers.  An event loop (a Dask worker's)
    has Python write each signal to its wake-up socket, which the child shares: a SIGTERM sent to the
    child must end the child, not wake the parent's loop."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # not the main thread of the main interpreter: nothing was installed for it
        pass
