"""One writer thread: flushes run in submission order while the next batch is read.

Reading and bucketing records is Python work on the main thread; a flush is
mostly waiting (for Kafka's acknowledgements, then for PostgreSQL to commit).
Handing flushes to one writer thread lets the two overlap, on two cores even
with the GIL, without changing what is written or in which order:

- flushes run one at a time, in the order they were submitted (so an update
  still follows the inserts of its table that came before it);
- a submitted flush counts as waiting until it has finished, so no STATE
  passes a record that is not durable yet (see `oldest_waiting_seq`);
- at most `depth` flushes wait, so memory stays bounded;
- the first error stops the writer: later flushes are not run (they stay
  waiting, so no STATE passes them) and the error is raised on the main
  thread at its next submit or wait.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from typing import Final

STOP: Final = None
JOIN_TIMEOUT_SECONDS = 60.0


class WritePipeline:
    """Runs flushes on one thread, in order, at most `depth` waiting."""

    def __init__(self, depth: int = 2, on_done: Callable[[], None] | None = None) -> None:
        """`on_done` runs on the writer thread after each flush that finished."""
        self._jobs: queue.Queue[tuple[int, Callable[[], None]] | None] = queue.Queue(maxsize=depth)
        self._waiting: dict[int, int] = {}  # job number -> oldest record sequence number in it
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._on_done = on_done

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="drainer-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            try:
                if item is STOP:
                    return
                number, job = item
                if self._error is not None:
                    continue  # stopped: the job stays waiting, never half-done
                try:
                    job()
                    with self._lock:
                        del self._waiting[number]
                    if self._on_done is not None:
                        self._on_done()
                except BaseException as exc:  # raised again on the main thread
                    self._error = exc
            finally:
                self._jobs.task_done()

    def submit(self, oldest_seq: int, job: Callable[[], None]) -> None:
        """Queue a flush of records from sequence number `oldest_seq` on."""
        self.raise_error()
        if self._thread is None:
            self._start()
        number = next(self._numbers)
        with self._lock:
            self._waiting[number] = oldest_seq
        self._jobs.put((number, job))

    def wait(self) -> None:
        """Block until every submitted flush has finished; raise the first error."""
        if self._thread is not None:
            self._jobs.join()
        self.raise_error()

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def oldest_waiting_seq(self) -> int | None:
        """Sequence number of the oldest record in a flush not finished yet."""
        with self._lock:
            return min(self._waiting.values(), default=None)

    def close(self) -> None:
        """Stop the writer thread (after the flushes already queued)."""
        if self._thread is None:
            return
        self._jobs.put(STOP)
        self._thread.join(JOIN_TIMEOUT_SECONDS)
        self._thread = None
