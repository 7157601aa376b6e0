"""The writer pipeline: order, merging of waiting batches, and what counts as finished."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from target_batched_postgres.pipeline import Mergeable, WritePipeline

WAIT_SECONDS = 5.0


class Log:
    """What the PostgreSQL step ran, in order: ("alone" | "merged", record numbers)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.seen_waiting: list[int | None] = []

    def alone(self, numbers: list[int]) -> Callable[[], None]:
        return lambda: self.calls.append(("alone", numbers))

    def mergeable(
        self, key: str, numbers: list[int], pipeline: WritePipeline, lane: str | None = None
    ) -> Mergeable:
        def write(parts: list[Any]) -> None:
            self.seen_waiting.append(pipeline.oldest_waiting_seq())
            self.calls.append(("merged", [n for part in parts for n in part]))

        return Mergeable(key, len(numbers), numbers, write, lane=lane)

    def records(self) -> list[int]:
        return [n for _, numbers in self.calls for n in numbers]


def _blocked_pipeline(
    merge_limit: int, write_depth: int = 0
) -> tuple[WritePipeline, threading.Event]:
    """A pipeline whose PostgreSQL thread is held in a first step until the event is set."""
    gate, running = threading.Event(), threading.Event()

    def hold() -> None:
        running.set()
        gate.wait(WAIT_SECONDS)

    pipeline = WritePipeline(merge_limit=merge_limit, write_depth=write_depth)
    pipeline.submit(0, None, hold)
    assert running.wait(WAIT_SECONDS)
    return pipeline, gate


def _submit(
    pipeline: WritePipeline, log: Log, key: str, numbers: list[int], lane: str | None = None
) -> None:
    mergeable = log.mergeable(key, numbers, pipeline, lane)
    pipeline.submit(numbers[0], None, lambda: mergeable.write([mergeable.part]), mergeable)


def _until_waiting_for_postgres(pipeline: WritePipeline, count: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while pipeline._write.qsize() < count:  # the test looks inside: no public view of it
        assert time.monotonic() < deadline, "steps never reached the PostgreSQL queue"
        time.sleep(0.001)


def _release(pipeline: WritePipeline, gate: threading.Event) -> None:
    """Let the held first step finish, wait for the rest, stop the threads."""
    gate.set()
    pipeline.wait()
    pipeline.close()


def test_batches_waiting_for_postgres_with_one_key_share_one_write():
    pipeline, gate = _blocked_pipeline(merge_limit=100)
    log = Log()
    _submit(pipeline, log, "t", [1, 2])
    _submit(pipeline, log, "t", [3, 4])
    _until_waiting_for_postgres(pipeline, 2)
    _release(pipeline, gate)
    assert log.calls[0] == ("merged", [1, 2, 3, 4])
    assert log.records() == [1, 2, 3, 4]
    # Until the shared write finished, its first record was still waiting.
    assert log.seen_waiting[0] == 1
    assert pipeline.oldest_waiting_seq() is None


def test_other_keys_and_unmergeable_steps_keep_their_place():
    pipeline, gate = _blocked_pipeline(merge_limit=100)
    log = Log()
    _submit(pipeline, log, "a", [1])
    _submit(pipeline, log, "b", [2])
    _until_waiting_for_postgres(pipeline, 2)
    pipeline.submit(3, None, log.alone([3]))  # a change: never merged
    _submit(pipeline, log, "a", [4])
    _submit(pipeline, log, "a", [5])
    _release(pipeline, gate)
    assert log.records() == [1, 2, 3, 4, 5]
    assert ("alone", [3]) in log.calls
    for kind, numbers in log.calls:
        if kind == "merged" and len(numbers) > 1:
            assert numbers == [4, 5]  # only neighbours of one key


def test_a_tables_batches_share_a_write_past_other_tables_between_them():
    pipeline, gate = _blocked_pipeline(merge_limit=100, write_depth=5)
    log = Log()
    for number, table in enumerate("ABABA", 1):  # records of two tables, interleaved
        _submit(pipeline, log, table, [number], lane=table)
    _until_waiting_for_postgres(pipeline, 5)
    _release(pipeline, gate)
    assert log.calls == [("merged", [1, 3, 5]), ("merged", [2, 4])]
    assert pipeline.oldest_waiting_seq() is None


@pytest.mark.parametrize(
    ("between", "limit"),
    [
        ("same table, other settings", 100),  # its own lane, another key
        ("a change of another table", 100),  # never merged: nothing passes it
        ("more rows than the limit", 2),  # the key's next step does not fit
    ],
)
def test_nothing_passes_a_step_it_cannot_share_a_write_with(between: str, limit: int):
    pipeline, gate = _blocked_pipeline(merge_limit=limit, write_depth=4)
    log = Log()
    _submit(pipeline, log, "A", [1], lane="A")
    _submit(pipeline, log, "B", [2], lane="B")
    if between == "same table, other settings":
        _submit(pipeline, log, "A'", [3], lane="A")
    elif between == "a change of another table":
        pipeline.submit(3, None, log.alone([3]))
    else:
        _submit(pipeline, log, "A", [3, 3], lane="A")
    _submit(pipeline, log, "A", [4], lane="A")
    _until_waiting_for_postgres(pipeline, 4)
    _release(pipeline, gate)
    first_a = [n for _, numbers in log.calls for n in numbers if n in (1, 3, 4)]
    assert first_a.index(3) < first_a.index(4)  # 4 never moved ahead of 3
    assert sorted(set(log.records())) == [1, 2, 3, 4]


def test_merge_limit_bounds_the_rows_of_a_shared_write():
    pipeline, gate = _blocked_pipeline(merge_limit=3)
    log = Log()
    _submit(pipeline, log, "t", [1, 2])
    _submit(pipeline, log, "t", [3, 4])
    _until_waiting_for_postgres(pipeline, 2)
    _release(pipeline, gate)
    assert log.calls == [("merged", [1, 2]), ("merged", [3, 4])]


def test_no_merging_without_a_limit():
    pipeline, gate = _blocked_pipeline(merge_limit=0)
    log = Log()
    _submit(pipeline, log, "t", [1])
    _submit(pipeline, log, "t", [2])
    _until_waiting_for_postgres(pipeline, 2)
    _release(pipeline, gate)
    assert log.calls == [("merged", [1]), ("merged", [2])]


def test_a_failed_shared_write_finishes_none_of_its_batches():
    pipeline, gate = _blocked_pipeline(merge_limit=100)

    def fail(parts: list[Any]) -> None:
        raise RuntimeError(f"refused {sum(len(p) for p in parts)} rows")

    for numbers in ([1, 2], [3]):
        mergeable = Mergeable("t", len(numbers), numbers, fail)
        pipeline.submit(numbers[0], None, lambda: None, mergeable)
    _until_waiting_for_postgres(pipeline, 2)
    gate.set()
    with pytest.raises(RuntimeError, match="refused 3 rows"):
        pipeline.wait()
    assert pipeline.oldest_waiting_seq() == 1
    pipeline.close()


def test_flushes_waiting_for_kafka_are_published_together_in_order():
    published: list[list[int]] = []
    gate, running = threading.Event(), threading.Event()

    def publish_many(messages: list[Any]) -> None:
        running.set()
        gate.wait(WAIT_SECONDS)
        published.append(list(messages))

    pipeline = WritePipeline(publish_many=publish_many, write_depth=8)
    written: list[int] = []
    pipeline.submit(0, lambda: [0], lambda: written.append(0))
    assert running.wait(WAIT_SECONDS)  # the Kafka thread holds flush 0

    def messages(n: int) -> Callable[[], list[Any]]:
        return lambda: [n, n]

    def write(n: int) -> Callable[[], None]:
        return lambda: written.append(n)

    for n in (1, 2, 3):
        pipeline.submit(n, messages(n), write(n))
    deadline = time.monotonic() + WAIT_SECONDS
    while pipeline._publish.qsize() < 3:  # the test looks inside: no public view of it
        assert time.monotonic() < deadline
        time.sleep(0.001)
    gate.set()
    pipeline.wait()
    pipeline.close()
    assert published == [[0], [1, 1, 2, 2, 3, 3]]
    assert written == [0, 1, 2, 3]


def test_a_failed_publish_finishes_none_of_its_flushes():
    def publish_many(messages: list[Any]) -> None:
        raise RuntimeError(f"broker refused {len(messages)} messages")

    pipeline = WritePipeline(publish_many=publish_many)
    written: list[int] = []
    pipeline.submit(7, lambda: ["m"], lambda: written.append(7))
    with pytest.raises(RuntimeError, match="refused 1 messages"):
        pipeline.wait()
    assert written == []
    assert pipeline.oldest_waiting_seq() == 7
    pipeline.close()


# -- statements sent ahead (Mergeable.send) ------------------------------------------


class FakeSent:
    """A step's statement in flight: its result comes when the test says so."""

    def __init__(self, log: SendLog, numbers: list[int]) -> None:
        self.log = log
        self.numbers = numbers
        self.result = threading.Event()
        self.fail = False

    def ready(self, timeout: float) -> bool:
        return self.result.wait(timeout)

    def finish(self) -> None:
        assert self.result.wait(WAIT_SECONDS), "finish waited for a result never given"
        if self.fail:
            raise RuntimeError(f"statement of {self.numbers} failed")
        self.log.events.append(("finished", self.numbers))

    def abandon(self) -> None:
        self.log.events.append(("abandoned", self.numbers))


class SendLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, list[int]]] = []
        self.sent: dict[int, FakeSent] = {}

    def step(self, pipeline: WritePipeline, number: int, *, sendable: bool = True) -> None:
        def write(parts: list[Any]) -> None:
            self.events.append(("written", [n for part in parts for n in part]))

        def send(parts: list[Any]) -> FakeSent:
            numbers = [n for part in parts for n in part]
            sent = self.sent[numbers[0]] = FakeSent(self, numbers)
            self.events.append(("sent", numbers))
            return sent

        mergeable = Mergeable("t", 1, [number], write, send if sendable else None)
        pipeline.submit(number, None, lambda: write([[number]]), mergeable)

    def until(self, event: tuple[str, list[int]]) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while event not in self.events:
            assert time.monotonic() < deadline, f"never {event}: {self.events}"
            time.sleep(0.001)


def _send_ahead_pipeline() -> WritePipeline:
    # One row a step and a limit of one: no merging. Two steps fill the queue.
    return WritePipeline(merge_limit=1, write_depth=2)


def _two_in_flight() -> tuple[WritePipeline, SendLog]:
    """Steps 1 and 2 in flight, step 3 waiting behind them."""
    pipeline, log = _send_ahead_pipeline(), SendLog()
    log.step(pipeline, 1)
    log.until(("sent", [1]))
    log.step(pipeline, 2)
    log.step(pipeline, 3)
    log.until(("sent", [2]))  # the queue was full: sent with 1 in flight
    return pipeline, log


def test_a_full_queue_is_sent_while_the_statement_before_it_is_in_flight():
    pipeline, log = _two_in_flight()
    time.sleep(0.02)
    assert ("sent", [3]) not in log.events, "at most two statements in flight"
    assert pipeline.oldest_waiting_seq() == 1
    log.sent[1].result.set()
    log.until(("finished", [1]))
    assert pipeline.oldest_waiting_seq() == 2
    log.sent[2].result.set()
    log.until(("sent", [3]))  # the window was free: sent even with the queue not full
    log.sent[3].result.set()
    pipeline.wait()
    pipeline.close()
    finished = [numbers for kind, numbers in log.events if kind == "finished"]
    assert finished == [[1], [2], [3]]
    assert pipeline.oldest_waiting_seq() is None


def test_a_step_that_cannot_be_sent_runs_after_the_statements_in_flight():
    pipeline, log = _send_ahead_pipeline(), SendLog()
    log.step(pipeline, 1)
    log.until(("sent", [1]))
    log.step(pipeline, 2, sendable=False)
    log.step(pipeline, 3)
    time.sleep(0.02)
    assert ("written", [2]) not in log.events
    log.sent[1].result.set()
    log.until(("sent", [3]))
    log.sent[3].result.set()
    pipeline.wait()
    pipeline.close()
    assert log.events == [
        ("sent", [1]),
        ("finished", [1]),
        ("written", [2]),
        ("sent", [3]),
        ("finished", [3]),
    ]


def test_a_failed_statement_in_flight_stops_the_one_sent_behind_it():
    pipeline, log = _two_in_flight()
    log.sent[1].fail = True
    log.sent[1].result.set()
    log.sent[2].result.set()
    with pytest.raises(RuntimeError, match=r"statement of \[1\] failed"):
        pipeline.wait()
    assert ("abandoned", [2]) in log.events
    assert ("finished", [2]) not in log.events
    assert ("sent", [3]) not in log.events
    assert pipeline.oldest_waiting_seq() == 1  # no STATE passes any of them
    pipeline.close()
