"""Small helpers several test modules share (tests/ is on sys.path, see conftest.py)."""
import socket

import pytest

from phi_hig.errors import PhiHigError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a process group's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def one_error_line(err: str, *words) -> str:
    """Assert that ``err`` (a command's stderr) is exactly one line ``phi_hig: error: …`` holding every word;
    return that line."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith('phi_hig: error: '), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def refused(call, message: str) -> None:
    """Assert that ``call()`` raises a `PhiHigError` whose message contains ``message``."""
    with pytest.raises(PhiHigError) as info:
        call()
    assert message in str(info.value), str(info.value)
