"""Two writer threads: Kafka, then PostgreSQL, while the main thread reads on.

Reading and bucketing records is Python work on the main thread; a flush is
mostly waiting, first for Kafka's acknowledgements and then for PostgreSQL to
commit. Each flush is split in those two steps and handed to two threads in
a row, so the three overlap (on two cores even with the GIL: the waits
release it) without changing what is written or in which order:

- each flush's PostgreSQL step runs only after its Kafka step succeeded;
- Kafka steps run one at a time in submission order, and so do PostgreSQL
  steps (an update still follows the earlier inserts of its table);
- a submitted flush counts as waiting until its PostgreSQL step has finished,
  so no STATE passes a record that is not durable yet (`oldest_waiting_seq`);
- at most `depth` flushes wait before each step, so memory stays bounded;
- the first error stops both threads: later steps are not run (their
  flushes stay waiting, so no STATE passes them) and the error is raised on
  the main thread at its next submit or wait. A batch published to Kafka
  whose PostgreSQL step never ran is published again on the replay: Kafka
  delivery is at least once, and the headers name the source entry.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable

Step = Callable[[], None]
_Item = tuple[int, Step | None, Step] | None  # None: stop
JOIN_TIMEOUT_SECONDS = 60.0


class WritePipeline:
    """Runs flushes as (Kafka step, PostgreSQL step) on two threads, in order."""

    def __init__(self, depth: int = 2, on_done: Callable[[], None] | None = None) -> None:
        """`on_done` runs on the PostgreSQL thread after each flush that finished."""
        self._publish: queue.Queue[_Item] = queue.Queue(maxsize=depth)
        self._write: queue.Queue[_Item] = queue.Queue(maxsize=depth)
        self._waiting: dict[int, int] = {}  # flush number -> oldest record sequence number
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._on_done = on_done

    def _start(self) -> None:
        self._threads = [
            threading.Thread(target=self._run_publish, name="drainer-kafka", daemon=True),
            threading.Thread(target=self._run_write, name="drainer-postgres", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _run_publish(self) -> None:
        while True:
            item = self._publish.get()
            try:
                if item is None:
                    self._write.put(None)
                    return
                number, publish, write = item
                if self._error is None:
                    try:
                        if publish is not None:
                            publish()
                    except BaseException as exc:  # raised again on the main thread
                        self._error = exc
                    else:
                        self._write.put((number, None, write))
            finally:
                self._publish.task_done()

    def _run_write(self) -> None:
        while True:
            item = self._write.get()
            try:
                if item is None:
                    return
                number, _, write = item
                if self._error is None:
                    try:
                        write()
                        with self._lock:
                            del self._waiting[number]
                        if self._on_done is not None:
                            self._on_done()
                    except BaseException as exc:  # raised again on the main thread
                        self._error = exc
            finally:
                self._write.task_done()

    def submit(self, oldest_seq: int, publish: Step | None, write: Step) -> None:
        """Queue a flush of records from sequence number `oldest_seq` on."""
        self.raise_error()
        if not self._threads:
            self._start()
        number = next(self._numbers)
        with self._lock:
            self._waiting[number] = oldest_seq
        self._publish.put((number, publish, write))

    def wait(self) -> None:
        """Block until every submitted flush has finished; raise the first error."""
        if self._threads:
            self._publish.join()
            self._write.join()
        self.raise_error()

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def oldest_waiting_seq(self) -> int | None:
        """Sequence number of the oldest record in a flush not finished yet."""
        with self._lock:
            return min(self._waiting.values(), default=None)

    def close(self) -> None:
        """Stop both threads (after the flushes already queued)."""
        if not self._threads:
            return
        self._publish.put(None)
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT_SECONDS)
        self._threads = []
