"""Decode entries in worker processes while the tap reads on (`decode_workers`).

Decoding an entry and encoding its RECORD line is Python work, about 12 µs
of CPU per KV-connector entry, against 2 µs to read it; one process cannot
use a second core for it. With `decode_workers: N` the tap forks N workers
after it has connected, and each read batch (every key's entries of one
XREAD round) goes whole to the next worker in turn, at most one batch per
worker in flight. The main process keeps everything that orders or
checkpoints: it reads, cuts batches at the record limit, applies the
results in the order the batches were read, writes SCHEMA messages, moves
failed entries, and writes a STATE after each batch's lines. So the output
is the one the tap writes without workers, message for message, but for
how many STATE messages come between the records.

A worker returns a batch's RECORD lines as one buffer, with the places in it
where something happened that only the main process may act on:

- a row shape (table, column names, their JSON types) this worker had not
  seen: the main process takes it into the table's schema and writes the
  table's SCHEMA first, when it changed (the schema is the main process's:
  two workers see different rows);
- an entry that failed to decode, with its reason: the main process moves
  it to the failed-entries stream or stops, as it does without workers.

A worker exits when its pipe closes, so workers never outlive the tap, even
one killed with SIGKILL; it ignores SIGINT and SIGTERM, which are the main
process's to act on (it finishes the batches in flight, then exits).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import time
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe
from typing import Any

from tap_redis_stream import control
from tap_redis_stream.client import DuplicateFields
from tap_redis_stream.entries import (
    ENTRY_FAILURES,
    EntryDecoder,
    EntryParseError,
    Operation,
    as_parse_error,
)
from tap_redis_stream.entry_id import EntryId
from tap_redis_stream.messages import MAX_SHAPES, RecordLines, check_reserved, json_type

Entries = list[tuple[EntryId, dict[bytes, bytes]]]
Batch = list[tuple[str, Entries]]
# (entry index in the batch, offset in the lines, table, columns, kinds) for
# a new row shape; (index, offset, None, reason, None) for a failed entry.
Event = tuple[int, int, str | None, Any, Any]


def decode_entry(decoder: EntryDecoder, key: str, fields: dict[bytes, bytes]) -> Operation:
    """Decode one entry; an entry with repeated field names is refused."""
    if type(fields) is DuplicateFields:
        raise EntryParseError(
            f"field name(s) {', '.join(map(repr, fields.repeated()))} occur more "
            "than once: which value would be the column's?"
        )
    return decoder.decode(key, fields)


class DecodeWorkerFailed(RuntimeError):
    """A worker died or hit an error that is not an entry's (a bug): the run stops."""


@dataclass(slots=True)
class Decoded:
    """A worker's result for one batch."""

    lines: bytes
    events: list[Event]
    records: list[int]  # RECORD lines per key of the batch, in its order


class BatchDecoder:
    """What a worker does with one batch; in its own class to be tested in process."""

    def __init__(self, decoder: EntryDecoder, deselected: frozenset[str]) -> None:
        self.decoder = decoder
        self.deselected = deselected
        self.lines = RecordLines()
        self._shapes: set[tuple[Any, ...]] = set()  # (table, *columns, *value types)

    def decode(self, batch: list[tuple[str, list[tuple[str, dict[bytes, bytes]]]]]) -> Decoded:
        lines = self.lines
        decoder = self.decoder
        deselected = self.deselected
        shapes = self._shapes
        events: list[Event] = []
        records: list[int] = []
        index = 0
        for key, entries in batch:
            written = 0
            for entry_id, fields in entries:
                try:
                    operation = decode_entry(decoder, key, fields)
                    table = operation.table
                    if table not in deselected:
                        row = operation.row
                        shape = (table, *row, *map(type, row.values()))
                        if shape not in shapes:
                            columns = tuple(row)
                            check_reserved(table, control.CONTROL_PROPERTIES, columns)
                            kinds = tuple(map(json_type, row.values()))
                            events.append((index, len(lines.pending), table, columns, kinds))
                            if len(shapes) >= MAX_SHAPES:
                                shapes.clear()
                            shapes.add(shape)
                        lines.record(operation, key, entry_id)
                        written += 1
                except ENTRY_FAILURES as failure:
                    reason = str(as_parse_error(failure))
                    events.append((index, len(lines.pending), None, reason, None))
                index += 1
            records.append(written)
        decoded = Decoded(bytes(lines.pending), events, records)
        lines.pending = bytearray()
        return decoded


def _serve(conn: Connection, work: BatchDecoder) -> int:
    """A worker's loop: a batch in, its result out, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return 0
        try:
            # The tap's own bytes, over the pipe only it and this worker hold.
            reply: tuple[str, Any] = ("ok", work.decode(pickle.loads(request)))  # noqa: S301
        except BaseException:  # a bug, not a bad entry: the main process stops the run
            reply = ("error", traceback.format_exc())
        try:
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            return 0
        if reply[0] == "error":
            return 1


class DecodePool:
    """`workers` forked processes decoding batches in turn, results taken in order."""

    def __init__(self, workers: int, decoder: EntryDecoder, deselected: set[str]) -> None:
        self.workers = workers
        self._make = lambda: BatchDecoder(decoder, frozenset(deselected))
        self._conns: list[Connection] = []
        self._pids: list[int] = []
        self._next = 0
        self._in_flight: deque[tuple[int, Batch]] = deque()

    def start(self) -> None:
        """Fork the workers (close() stops those started, should one fork fail)."""
        for _ in range(self.workers):
            ours, theirs = Pipe()
            pid = os.fork()
            if pid == 0:  # the worker: it must never return into the tap's code
                code = 1
                try:
                    ours.close()
                    for other in self._conns:  # the earlier workers' pipes are not its
                        other.close()
                    code = _serve(theirs, self._make())
                finally:
                    os._exit(code)
            theirs.close()
            self._conns.append(ours)
            self._pids.append(pid)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def submit(self, batch: Batch) -> None:
        """Send a batch to the next worker; it must have no batch in flight."""
        worker = self._next
        self._next = (worker + 1) % self.workers
        request = [(key, [(str(eid), fields) for eid, fields in entries]) for key, entries in batch]
        try:
            self._conns[worker].send_bytes(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError as exc:
            raise self._died(worker, exc) from exc
        self._in_flight.append((worker, batch))

    def result(self) -> tuple[Batch, Decoded]:
        """The oldest batch in flight and its result (waits for it)."""
        worker, batch = self._in_flight.popleft()
        try:
            status, value = pickle.loads(self._conns[worker].recv_bytes())  # noqa: S301
        except (EOFError, OSError) as exc:
            raise self._died(worker, exc) from exc
        if status != "ok":
            raise DecodeWorkerFailed(f"tap-redis-stream: decode worker {worker} failed:\n{value}")
        return batch, value

    def results(self) -> Iterator[tuple[Batch, Decoded]]:
        while self._in_flight:
            yield self.result()

    def _died(self, worker: int, exc: BaseException) -> DecodeWorkerFailed:
        pid = self._pids[worker]
        how = f"closed its pipe ({exc.__class__.__name__})"
        deadline = time.monotonic() + 2.0  # its pipe closed as it exited: it is going
        try:
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    how = _exit_status(status)
                    break
                time.sleep(0.01)
        except ChildProcessError:
            pass
        return DecodeWorkerFailed(f"tap-redis-stream: decode worker {worker} (pid {pid}) {how}")

    def close(self) -> None:
        """Close the pipes (each worker exits on that) and wait for the workers."""
        self._in_flight.clear()
        for conn in self._conns:
            conn.close()
        for pid in self._pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self._conns.clear()
        self._pids.clear()


def _exit_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def entry_at(batch: Batch, index: int) -> tuple[int, int]:
    """(key number, entry number) of the batch's `index`th entry."""
    for number, (_, entries) in enumerate(batch):
        if index < len(entries):
            return number, index
        index -= len(entries)
    raise IndexError(index)


__all__ = [
    "BatchDecoder",
    "DecodePool",
    "DecodeWorkerFailed",
    "Decoded",
    "Entries",
    "decode_entry",
    "entry_at",
]
