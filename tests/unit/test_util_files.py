"""util.files.read_regular: whatever a configured path names, a bounded
read or a ready message, never a hang (CONTRACT.md `check`)."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from util.files import FileMissing, FileProblem, read_regular


def test_reads_a_regular_file_and_a_symlink_to_one(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"content\n")
    (tmp_path / "link").symlink_to(path)
    assert read_regular(str(path), 100) == b"content\n"
    assert read_regular(str(tmp_path / "link"), 100) == b"content\n"
    assert read_regular(str(path), 8) == b"content\n"  # exactly the bound is fine


def test_missing_file_is_its_own_kind(tmp_path):
    with pytest.raises(FileMissing) as caught:
        read_regular(str(tmp_path / "nope"), 100)
    assert str(caught.value) == f"{tmp_path / 'nope'}: no such file"
    (tmp_path / "dangling").symlink_to(tmp_path / "nope")
    with pytest.raises(FileMissing):
        read_regular(str(tmp_path / "dangling"), 100)


def _problem(path: str, limit: int = 1 << 20) -> str:
    outcome: list[BaseException | bytes] = []

    def read() -> None:
        try:
            outcome.append(read_regular(path, limit))
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            outcome.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert outcome, f"read_regular({path!r}) is still blocked after 10 s"
    [result] = outcome
    assert isinstance(result, FileProblem) and not isinstance(result, FileMissing), result
    return str(result)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert _problem(str(fifo)) == f"{fifo}: not a regular file (a FIFO)"


def test_devices_directories_and_sockets_are_refused(tmp_path):
    assert _problem("/dev/zero") == "/dev/zero: not a regular file (a character device)"
    assert _problem("/dev/null") == "/dev/null: not a regular file (a character device)"
    assert _problem(str(tmp_path)) == f"{tmp_path}: not a regular file (a directory)"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        assert _problem(str(tmp_path / "sock")) == f"{tmp_path / 'sock'}: not a regular file (a socket)"


def test_a_file_over_the_bound_is_refused(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"x" * (2 << 20))
    assert _problem(str(path), 1 << 20) == f"{path}: larger than 1 MiB, the most msa reads from such a file"
    assert _problem(str(path), 100).endswith("larger than 100 octets, the most msa reads from such a file")


def test_a_file_whose_size_lies_is_still_bounded():
    # /proc files report st_size 0; the read itself stops at the bound.
    assert read_regular("/proc/self/status", 1 << 20).startswith(b"Name:")
    assert "larger than 10 octets" in _problem("/proc/self/status", 10)


def test_other_errors_are_messages(tmp_path):
    assert _problem(str(tmp_path / "x\0y")) == f"{tmp_path}/x\\0y: the path contains a NUL character"
    (tmp_path / "file").write_text("")
    assert _problem(str(tmp_path / "file" / "below")).endswith("/file/below: cannot read: Not a directory")
