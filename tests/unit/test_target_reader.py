"""The target's Singer reader does what the SDK's loop does, with less work per line.

`FastSingerReader.process_lines` replaces the SDK's `GenericSingerReader.process_lines`;
each case runs through both and must give the same callbacks, counts and errors.
"""

from __future__ import annotations

import fcntl
import io
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from singer_sdk.singerlib.encoding.base import GenericSingerReader

from target_batched_postgres.reader import INPUT_BUFFER_BYTES, FastSingerReader, open_input

TYPES = ("SCHEMA", "RECORD", "STATE", "ACTIVATE_VERSION", "BATCH")
SCHEMA = b'{"type":"SCHEMA","stream":"s","schema":{"type":"object"},"key_properties":[]}'
RECORD = b'{"type":"RECORD","stream":"s","record":{"id":1,"n":1.50}}'
STATE = b'{"type":"STATE","value":{"a":1}}'

CASES = {
    "messages": [SCHEMA, RECORD, STATE, RECORD, b'{"type":"ACTIVATE_VERSION","stream":"s"}'],
    "NaN, read by the standard library": [b'{"type":"RECORD","stream":"s","record":{"x":NaN}}'],
    "not JSON": [SCHEMA, b'{"type":"RECORD",'],
    "not an object": [SCHEMA, b"[1, 2]"],
    "no type": [SCHEMA, b'{"stream":"s"}'],
    "unknown type": [SCHEMA, b'{"type":"PING"}'],
    "null type": [b'{"type":null}'],
    "not UTF-8": [b'{"type":"RECORD","stream":"s","record":{"id":"\xff"}}'],
    "blank line": [SCHEMA, b"", RECORD],
    "CRLF": [SCHEMA + b"\r", RECORD + b"\r"],
}


def _run(
    process: Callable[..., Any], lines: list[bytes], as_text: bool
) -> tuple[list[Any], Any, Any]:
    calls: list[tuple[str, dict]] = []
    callbacks = {kind: (lambda m, kind=kind: calls.append((kind, m))) for kind in TYPES}
    data = b"\n".join(lines) + b"\n"
    stream: Any = io.StringIO(data.decode(errors="replace")) if as_text else io.BytesIO(data)
    try:
        counts = process(FastSingerReader(), stream, callbacks)
    except Exception as exc:  # the error itself is compared
        return calls, None, (type(exc), str(exc))
    return calls, dict(counts), None


@pytest.mark.parametrize("as_text", [False, True], ids=["bytes", "text"])
@pytest.mark.parametrize("case", list(CASES))
def test_same_callbacks_counts_and_errors_as_the_sdk_loop(case: str, as_text: bool) -> None:
    ours = _run(FastSingerReader.process_lines, CASES[case], as_text)
    sdks = _run(GenericSingerReader.process_lines, CASES[case], as_text)
    assert ours == sdks
    if case == "messages":
        assert ours[1] == {"SCHEMA": 1, "RECORD": 2, "STATE": 1, "ACTIVATE_VERSION": 1}
    elif case not in ("NaN, read by the standard library", "CRLF"):
        # Each of the others is refused (a text stream has no bytes that are not UTF-8).
        assert (ours[2] is not None) != (case == "not UTF-8" and as_text)


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe sizes are Linux-only")
def test_input_pipe_grows_and_reads_every_line() -> None:
    read_end, write_end = os.pipe()
    try:
        stream = open_input(read_end)
        assert fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ) == INPUT_BUFFER_BYTES
        lines = [b'{"type":"STATE","value":{"n":%d}}\n' % n for n in range(3000)]
        writer = threading.Thread(target=_write_and_close, args=(write_end, b"".join(lines)))
        writer.start()
        assert list(stream) == lines
        writer.join()
    finally:
        os.close(read_end)


def test_input_from_a_file_reads_every_line(tmp_path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(b"a\nb\n")
    with path.open("rb") as file:
        assert list(open_input(file.fileno())) == [b"a\n", b"b\n"]


def _write_and_close(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as out:
        out.write(data)


RECORD_LINE = b'{"type":"RECORD","stream":"t","record":{"id":1}}\n'


def test_stop_in_a_callback_ends_the_input_after_that_line() -> None:
    reader = FastSingerReader()
    seen: list[dict] = []

    def on_record(message: dict) -> None:
        seen.append(message)
        if len(seen) == 2:
            reader.stop(sys._getframe())  # a signal while a callback runs: no raise

    counts = reader.process_lines(io.BytesIO(RECORD_LINE * 5), {"RECORD": on_record})
    assert len(seen) == 2
    assert counts["RECORD"] == 2


def test_stop_while_the_loop_waits_for_input_ends_it_at_once() -> None:
    reader = FastSingerReader()

    class Blocking:
        """Two lines, then a read that blocks until a signal (simulated)."""

        def __init__(self) -> None:
            self.lines = [RECORD_LINE, RECORD_LINE]

        def __iter__(self) -> Blocking:
            return self

        def __next__(self) -> bytes:
            if self.lines:
                return self.lines.pop()
            # The signal handler runs with the frame it interrupted: the loop's.
            reader.stop(sys._getframe(1))
            raise AssertionError("stop() did not leave the read")

    counts = reader.process_lines(Blocking(), {"RECORD": lambda _: None})  # type: ignore[arg-type]
    assert counts["RECORD"] == 2
