"""What the loopback servers for tests and demos (`pgserver`, `s3server`) share: starting the
server process with its output in a log file, waiting until it answers (stopping it when it
does not), ending it, and stopping it at the end of a `with` block."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self


def spawn(command: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """Start `command` in a session of its own, its output appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip


def wait_ready(
    process: subprocess.Popen[bytes],
    answers: Callable[[], object],
    *,
    log: Path,
    timeout: float,
    pause: float,
    starting: tuple[type[BaseException], ...],
    error: Callable[[str], Exception],
    names: tuple[str, str],
) -> None:
    """Call `answers` until it returns (raising one of `starting` while the server starts).
    Raise `error` when the process (`names[0]`) ends first, or when the server (`names[1]`)
    has not answered after `timeout` seconds."""
    program, server = names
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise error(f"{program} exited ({process.returncode}); see {log}")
        try:
            answers()
            return
        except starting:
            time.sleep(pause)
    raise error(f"{server} did not answer within {timeout:.0f} s; see {log}")


def end(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait up to `timeout` seconds for a signalled process to end, then kill it."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class LoopbackServer:
    """A server process: once started, `ready()` waits until it can be used (stopping it if
    it cannot); `stop()` ends it, also at the end of a `with` block."""

    def _wait_ready(self, timeout: float) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 20) -> None:
        raise NotImplementedError

    def ready(self, timeout: float) -> Self:
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()
