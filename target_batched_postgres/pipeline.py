"""Two writer threads: Kafka, then PostgreSQL, while the main thread reads on.

Reading and bucketing records is Python work on the main thread; a flush is
mostly waiting, first for Kafka's acknowledgements and then for PostgreSQL to
commit. Each flush is split in those two steps and handed to two threads in
a row, so the three overlap (on two cores even with the GIL: the waits
release it) without changing what is written or in which order:

- each flush's PostgreSQL step runs only after its Kafka step succeeded;
- the Kafka steps waiting when the Kafka thread gets to them are published
  together, their messages in order, with one wait for the acknowledgements
  (`publish_many`): a flush's messages are acknowledged before its PostgreSQL
  step, as always, and a failed publish stops the steps of all of them;
- Kafka steps run one at a time in submission order, and so do PostgreSQL
  steps (an update still follows the earlier inserts of its table), but for
  batch inserts sent ahead (below), which the server still runs in order;
- a submitted flush counts as waiting until its PostgreSQL step has finished,
  so no STATE passes a record that is not durable yet (`oldest_waiting_seq`);
- at most `depth` flushes wait before each step (and as many again set
  aside by the PostgreSQL thread while it gathers a table's batches), so
  memory stays bounded;
- batch flushes of the same table that are all waiting for PostgreSQL when
  its thread gets to them are written together (`Mergeable`; in one
  statement when they can share it, see PostgresWriter.write_parts): when
  PostgreSQL falls behind, it commits fewer, larger statements instead of
  queueing. Their records keep their order, and none of them counts as
  finished before that statement committed. A table's batches are taken
  together past other tables' batches waiting between them (records of
  many tables arrive interleaved), but never past a step of their own table
  that they do not share a statement with, nor past a change or a
  force-drained flush of any table, which are never merged;
- while a PostgreSQL step's statement is in flight and a full statement's
  worth of steps waits behind it (the queue is full), the next one is sent
  at once (`Mergeable.send`, up to `send_ahead` in flight): the server runs
  them in the order sent, and the steps finish in that order. A step that
  cannot be sent so runs after the ones in flight have finished;
- the first error stops both threads: later steps are not run (their
  flushes stay waiting, so no STATE passes them; one already in flight is
  read and left waiting too) and the error is raised on the main thread at
  its next submit or wait. A batch published to Kafka
  whose PostgreSQL step never ran is published again on the replay: Kafka
  delivery is at least once, and the headers name the source entry.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

Step = Callable[[], None]
Collect = Callable[[], list[Any]]  # a flush's Kafka messages, built on the Kafka thread


class Sent(Protocol):
    """A PostgreSQL step begun without waiting: its statement is in flight."""

    def ready(self, timeout: float) -> bool:
        """Whether `finish` would find the result there, waiting up to `timeout` seconds."""

    def finish(self) -> None:
        """Take the result and complete the step (raises what the step raises)."""

    def abandon(self) -> None:
        """Take the result and drop it: the run is stopping."""


@dataclass(frozen=True, slots=True)
class Mergeable:
    """A PostgreSQL step that may be written together with the next ones of the same `key`.

    `write(parts)` writes the `part`s of waiting steps of this key, in
    order, instead of each step's own write; `key` is compared by equality
    (the table and its settings at submit). `rows` counts toward the limit.
    `send(parts)`, when given, begins the same write without waiting for
    PostgreSQL (None: it cannot, `write` is used). `lane` (the destination
    table) orders steps: a step may be written before steps of other lanes
    submitted earlier, never before an earlier one of its own lane that it
    does not share the write with. Steps without a lane all share one.
    """

    key: Any
    rows: int
    part: Any
    write: Callable[[list[Any]], None]
    send: Callable[[list[Any]], Sent | None] | None = None
    lane: Any = None


logger = logging.getLogger(__name__)

_Item = tuple[int, Collect | None, Step, Mergeable | None] | None  # None: stop
_NOTHING = object()


def _no_publisher(messages: list[Any]) -> None:
    raise RuntimeError(f"{len(messages)} Kafka message(s) to publish, but no publisher")


JOIN_TIMEOUT_SECONDS = 60.0
# While a statement is in flight, how often the PostgreSQL thread looks for
# enough waiting work to send the next one.
POLL_SECONDS = 0.005


class WritePipeline:
    """Runs flushes as (Kafka step, PostgreSQL step) on two threads, in order."""

    def __init__(
        self,
        depth: int = 2,
        on_done: Callable[[], None] | None = None,
        *,
        merge_limit: int = 0,
        write_depth: int = 0,
        publish_many: Callable[[list[Any]], None] | None = None,
        send_ahead: int = 2,
    ) -> None:
        """`on_done` runs on the PostgreSQL thread after each flush that finished.

        Mergeable steps are combined up to `merge_limit` records (0: never);
        `write_depth` (when larger than `depth`) lets that many steps wait for
        PostgreSQL, so that a statement can take them, and for Kafka.
        `publish_many(messages)` publishes and waits for the acknowledgements.
        `send_ahead`: how many PostgreSQL steps may be in flight at once
        (`Mergeable.send`); 1 or less: each step's write waits for its result.
        """
        # Room for the steps one shared publish or statement may take.
        self._publish: queue.Queue[_Item] = queue.Queue(maxsize=max(depth, write_depth))
        self._write: queue.Queue[_Item] = queue.Queue(maxsize=max(depth, write_depth))
        self._waiting: dict[int, int] = {}  # flush number -> oldest record sequence number
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._on_done = on_done
        self._merge_limit = merge_limit
        self._publish_many = publish_many or _no_publisher
        self._send_ahead = send_ahead
        # Items taken from `_write` while merging that were not merged, in
        # order: they run before anything still in the queue. Bounded by the
        # queue's size. And the stop item taken from `_publish` while grouping.
        self._backlog: deque[_Item] = deque()
        self._backlog_limit = max(depth, write_depth)
        self._held_publish: _Item | object = _NOTHING

    def _start(self) -> None:
        self._threads = [
            threading.Thread(target=self._run_publish, name="drainer-kafka", daemon=True),
            threading.Thread(target=self._run_write, name="drainer-postgres", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _run_publish(self) -> None:
        while True:
            item: Any = self._held_publish
            self._held_publish = _NOTHING
            if item is _NOTHING:
                item = self._publish.get()
            if item is None:
                self._publish.task_done()
                self._write.put(None)
                return
            group = [item]
            try:
                if self._error is None:
                    group = self._take_waiting_for_kafka(item)
                    self._publish_group(group)
            finally:
                for _ in group:
                    self._publish.task_done()

    def _take_waiting_for_kafka(self, first: Any) -> list[Any]:
        """`first` and the steps waiting behind it: their messages go out together."""
        group = [first]
        while True:
            try:
                following = self._publish.get_nowait()
            except queue.Empty:
                return group
            if following is None:
                self._held_publish = following  # stop after this group
                return group
            group.append(following)

    def _publish_group(self, group: list[Any]) -> None:
        try:
            messages = [m for item in group if item[1] is not None for m in item[1]()]
            if messages:
                self._publish_many(messages)
        except BaseException as exc:  # raised again on the main thread
            self._fail(exc)
            return
        for number, _, write, mergeable in group:
            self._write.put((number, None, write, mergeable))

    def _run_write(self) -> None:
        in_flight: deque[tuple[list[Any], Sent]] = deque()
        while True:
            if in_flight and len(in_flight) >= self._send_ahead:
                self._finish(*in_flight.popleft())  # no room: wait for the oldest result
                continue
            if in_flight and not self._work_waiting():
                # Nothing worth a statement of its own yet: take the oldest
                # result when it comes, looking for such work meanwhile.
                group, sent = in_flight[0]
                if sent.ready(POLL_SECONDS):
                    in_flight.popleft()
                    self._finish(group, sent)
                continue
            item: Any = self._backlog.popleft() if self._backlog else self._write.get()
            if item is None:
                while in_flight:
                    self._finish(*in_flight.popleft())
                self._write.task_done()
                return
            group = [item]
            try:
                if self._error is None:
                    group = self._take_mergeable(item)
                    began = self._send(group)
                    if began is not None:
                        in_flight.append((group, began))
                        continue
                    while in_flight:  # steps run in order: the ones sent first finish first
                        self._finish(*in_flight.popleft())
                    if self._error is None:
                        self._run_group(group)
            except BaseException as exc:  # raised again on the main thread
                self._fail(exc)
            for _ in group:
                self._write.task_done()

    def _work_waiting(self) -> bool:
        """Whether a full statement's worth of steps waits (or one that cannot merge)."""
        return bool(self._backlog) or self._write.full()

    def _send(self, group: list[Any]) -> Sent | None:
        """Begin the group's write without waiting, if its steps allow; None otherwise."""
        first: Mergeable | None = group[0][3]
        if self._send_ahead < 2 or first is None or first.send is None:
            return None
        return first.send([item[3].part for item in group])

    def _finish(self, group: list[Any], sent: Sent) -> None:
        """Complete a group whose statement is in flight (the oldest one)."""
        try:
            if self._error is not None:
                sent.abandon()  # stays waiting: no STATE passes it
                return
            sent.finish()
            self._done(group)
        except BaseException as exc:  # raised again on the main thread
            self._fail(exc)
        finally:
            for _ in group:
                self._write.task_done()

    def _done(self, group: list[Any]) -> None:
        with self._lock:
            for item in group:
                del self._waiting[item[0]]
        if self._on_done is not None:
            self._on_done()

    def _take_mergeable(self, first: tuple[int, Step | None, Step, Mergeable | None]) -> list:
        """`first` and the waiting steps that share its write (see the module docstring)."""
        group: list[Any] = [first]
        mergeable = first[3]
        if mergeable is None or not self._merge_limit:
            return group
        backlog = self._backlog
        while len(backlog) < self._backlog_limit:
            try:
                backlog.append(self._write.get_nowait())
            except queue.Empty:
                break
        count = mergeable.rows
        passed: list[_Item] = []  # steps of other lanes that the group's steps move ahead of
        while backlog and count < self._merge_limit:
            following = backlog[0]
            other = following[3] if following is not None else None
            if other is None:
                break  # the stop, or a step that is never merged: nothing passes it
            if other.key == mergeable.key and count + other.rows <= self._merge_limit:
                group.append(backlog.popleft())
                count += other.rows
            elif other.lane != mergeable.lane:
                passed.append(backlog.popleft())
            else:
                break  # its own lane: what follows may not pass it
        backlog.extendleft(reversed(passed))
        return group

    def _run_group(self, group: list[Any]) -> None:
        try:
            if len(group) == 1:
                group[0][2]()
            else:
                first: Mergeable = group[0][3]
                first.write([item[3].part for item in group])
            self._done(group)
        except BaseException as exc:  # raised again on the main thread
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """Keep the first error (the main thread raises it) and say so now.

        The main thread raises it at its next submit, wait or STATE; while no
        input arrives at all, this line is the only sign the run has stopped.
        """
        if self._error is not None:
            return
        self._error = exc
        logger.error(
            "Writer thread %s stopped the run: %s: %s",
            threading.current_thread().name,
            type(exc).__name__,
            exc,
        )

    def submit(
        self,
        oldest_seq: int,
        collect: Collect | None,
        write: Step,
        mergeable: Mergeable | None = None,
    ) -> None:
        """Queue a flush of records from sequence number `oldest_seq` on.

        `mergeable`, when given, writes the same records as `write` and lets
        them share a statement with the next flushes of its key.
        """
        self.raise_error()
        if not self._threads:
            self._start()
        number = next(self._numbers)
        with self._lock:
            self._waiting[number] = oldest_seq
        self._publish.put((number, collect, write, mergeable))

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
