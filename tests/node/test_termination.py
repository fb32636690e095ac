"""Termination messages: the message file's tail, the FallbackToLogsOnError log tail, and
the file itself (empty and writable by any user for each attempt)."""

from __future__ import annotations

import stat
from pathlib import Path

from kubling.node import termination

PATH = {"terminationMessagePath": "/dev/termination-log"}


def _log(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"2026-11-27T03:00:00.{i:09d}Z stdout F {line}\n"
                            for i, line in enumerate(lines)))
    return path


def test_prepare_makes_an_empty_world_writable_file(tmp_path: Path) -> None:
    made = termination.prepare(PATH, tmp_path / "main", 2)
    assert made == tmp_path / "main" / "2.termination-log"
    assert made.read_bytes() == b""
    assert stat.S_IMODE(made.stat().st_mode) == 0o666
    made.write_text("old")
    assert termination.prepare(PATH, tmp_path / "main", 2) == made and made.read_text() == ""
    assert termination.prepare({"terminationMessagePath": ""}, tmp_path, 0) is None


def test_message_is_the_files_last_4_kib(tmp_path: Path) -> None:
    made = termination.prepare(PATH, tmp_path, 0)
    assert made is not None
    made.write_text("x" * 5000 + "the end")
    text = termination.message(PATH, tmp_path, 0, exit_code=0, log_path=tmp_path / "none")
    assert len(text) == 4096 and text.endswith("the end")


def test_fallback_to_logs_only_on_error_with_an_empty_file(tmp_path: Path) -> None:
    container = {**PATH, "terminationMessagePolicy": "FallbackToLogsOnError"}
    termination.prepare(container, tmp_path, 0)
    log = _log(tmp_path / "0.log", [f"line {i}" for i in range(100)])
    text = termination.message(container, tmp_path, 0, exit_code=1, log_path=log)
    assert text.splitlines()[0] == "line 20" and text.splitlines()[-1] == "line 99"
    assert termination.message(container, tmp_path, 0, exit_code=0, log_path=log) == ""
    plain = {**PATH, "terminationMessagePolicy": "File"}
    assert termination.message(plain, tmp_path, 0, exit_code=1, log_path=log) == ""
    long = _log(tmp_path / "long.log", ["y" * 1000] * 5)
    assert len(termination.message(container, tmp_path, 0, exit_code=2, log_path=long)) == 2048
    (tmp_path / "0.termination-log").write_text("from the file")
    assert termination.message(container, tmp_path, 0, exit_code=1,
                               log_path=log) == "from the file"
