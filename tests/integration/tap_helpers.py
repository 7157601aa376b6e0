"""Helpers to run tap-redis-stream as a CLI process in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TAP_BIN = Path(sys.executable).parent / "tap-redis-stream"


@dataclass
class TapRun:
    returncode: int
    messages: list[dict[str, Any]]
    stderr: str

    @property
    def records(self) -> list[dict[str, Any]]:
        return [m["record"] for m in self.messages if m["type"] == "RECORD"]

    @property
    def states(self) -> list[Any]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def schemas(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "SCHEMA"]

    def entry_ids(self, key: str | None = None) -> list[str]:
        return [
            r["_sdc_source_entry_id"]
            for r in self.records
            if key is None or r["_sdc_source_stream"] == key
        ]


def run_tap(
    tmp_path: Path,
    config: dict[str, Any],
    state: Any = None,
    args: tuple[str, ...] = (),
    timeout: float = 120,
) -> TapRun:
    config_path = tmp_path / f"tap-config-{os.getpid()}-{len(list(tmp_path.iterdir()))}.json"
    config_path.write_text(json.dumps(config))
    command = [str(TAP_BIN), "--config", str(config_path), *args]
    if state is not None:
        state_path = config_path.with_suffix(".state.json")
        state_path.write_text(json.dumps(state))
        command += ["--state", str(state_path)]
    result = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    if "--discover" in args:  # one pretty-printed catalog
        messages = [json.loads(result.stdout)] if result.returncode == 0 else []
    else:
        lines = result.stdout.decode().splitlines()
        messages = [json.loads(line) for line in lines if line.startswith("{")]
    return TapRun(result.returncode, messages, result.stderr.decode())
