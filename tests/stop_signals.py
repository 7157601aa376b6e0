"""Stop and continue a writing process (SIGSTOP/SIGCONT), as Ctrl-Z, a debugger or
py-spy attaching do, while a slow reader keeps its stdout pipe full."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable

MIN_STOPS = 10


def output_while_stopping(
    proc: subprocess.Popen[bytes], max_stops: int, feed: Callable[[], None] | None = None
) -> bytes:
    """All `proc` wrote to stdout while stopped and continued every 30 ms, up to
    `max_stops` times (`feed`, when given, writes its stdin meanwhile). Asserts it
    exited 0 and was stopped at least MIN_STOPS times."""
    assert proc.stdout is not None
    chunks: list[bytes] = []

    def read_slowly() -> None:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(65536):  # type: ignore[attr-defined]
            chunks.append(chunk)
            time.sleep(0.005)  # a slow reader keeps the pipe full and the writer blocked

    threads = [threading.Thread(target=read_slowly)]
    if feed is not None:
        threads.append(threading.Thread(target=feed))
    for thread in threads:
        thread.start()
    stops = 0
    while proc.poll() is None and stops < max_stops:
        time.sleep(0.03)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.01)
        proc.send_signal(signal.SIGCONT)
        stops += 1
    assert proc.wait(timeout=60) == 0
    for thread in threads:
        thread.join(timeout=60)
    assert stops >= MIN_STOPS, "the process finished before it could be stopped often"
    return b"".join(chunks)
