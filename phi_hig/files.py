"""Files that survive a crash: whole-file atomic writes and durable appends.

Every file phi_hig must not lose to a kill (checkpoints, the training history, a run's ``metrics.csv`` and
``summary.json``) is written through `atomic_write` or `append_durable`:

* `atomic_write` writes a temporary file in the target's folder, flushes and fsyncs it, then renames it over
  the target with `os.replace` and fsyncs the folder. A reader sees either the old file or the new one,
  never a mix; a kill leaves at most a stray ``.NAME.*.tmp`` file (`remove_stale_temporaries`). The file gets the
  mode an ordinary ``open(path, 'w')`` would give it: a new file ``0o666`` less the process's umask, a replaced
  file its previous mode (not the ``0o600`` of the temporary file).
* `append_durable` appends complete lines and fsyncs; a kill can leave at most one torn last line, which
  readers drop (`read_lines`).
"""
from __future__ import annotations

import glob
import os
import stat
import tempfile
import threading
from typing import Callable, Iterable, List, Union

__all__ = ['atomic_write', 'umask', 'append_durable', 'read_lines', 'remove_stale_temporaries', 'fsync_folder']

_PAUSE_ENV = 'PHI_HIG_TEST_WRITE_PAUSE'
"""Test hook: seconds to sleep halfway through every atomic write (widens the window a kill can hit)."""


def fsync_folder(folder: str) -> None:
    """Make a rename or a new file in ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder or '.', os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process's file-mode creation mask, read without changing it where the system says it
    (``/proc/self/status``); elsewhere set and restored at once under a lock.

    >>> 0 <= umask() <= 0o777
    True
    """
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _mode_for(path: str) -> int:
    """The permission bits an ordinary ``open(path, 'w')`` leaves ``path`` with: its own if it exists, else
    ``0o666`` less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~umask()


def atomic_write(path: str, data: Union[bytes, str, Callable]) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Args:
        path: target file; its folder must exist.
        data: the bytes or text to write, or a callable ``data(file)`` writing into a binary file object.

    Invariant: at every moment ``path`` is either its previous complete content (or absent) or the new
    complete content; the new content is on disk (fsynced) before it becomes visible under ``path``. Its mode is
    that of an ordinary write (module docstring): a new file follows the umask. A write that fails (e.g.
    ``OSError`` ENOSPC, ``PermissionError``) raises its `OSError` naming ``path`` (``err.filename``).
    """
    folder = os.path.dirname(os.path.abspath(path))
    mode = _mode_for(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            if hasattr(os, 'fchmod'):  # POSIX; elsewhere the temporary file's mode stands
                os.fchmod(f.fileno(), mode)
            if callable(data):
                data(f)
            else:
                payload = data.encode() if isinstance(data, str) else data
                half = len(payload) // 2
                f.write(payload[:half])
                _test_pause()
                f.write(payload[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise _naming(err, path)
    fsync_folder(folder)


def _naming(err: BaseException, path: str) -> BaseException:
    """An `OSError` of writing ``path`` (a full disk, no permission) as one of the same type naming ``path`` itself
    (a failed ``write`` names no file, a failed temporary file names the temporary); other errors as they are."""
    if isinstance(err, OSError) and type(err).__module__ == 'builtins' and err.errno is not None and \
            err.filename != path:
        named = OSError(err.errno, err.strerror or os.strerror(err.errno), path)  # the errno's subclass
        named.__cause__ = err
        return named
    return err


def _test_pause() -> None:
    pause = os.environ.get(_PAUSE_ENV)
    if pause:
        import time
        time.sleep(float(pause))


def append_durable(path: str, lines: Iterable[str]) -> None:
    """Append ``lines`` (each without its newline) to ``path`` and fsync it.

    Invariant: only whole lines are appended in one write; after a kill the file holds every earlier line
    and at most one torn line at its end. A failed write raises its `OSError` naming ``path``.
    """
    text = ''.join(line + '\n' for line in lines)
    if not text:
        return
    new = not os.path.exists(path)
    try:
        with open(path, 'ab') as f:
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise _naming(err, path)
    if new:
        fsync_folder(os.path.dirname(os.path.abspath(path)))


def read_lines(path: str) -> List[str]:
    """The complete lines of ``path`` (a torn last line without its newline is dropped); [] if absent."""
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except FileNotFoundError:
        return []
    lines = raw.split(b'\n')
    return [line.decode() for line in lines[:-1]]  # the part after the last newline is torn (or empty)


def remove_stale_temporaries(path: str) -> None:
    """Delete temporary files an interrupted `atomic_write` of ``path`` left behind."""
    folder = os.path.dirname(os.path.abspath(path))
    for tmp in glob.glob(os.path.join(glob.escape(folder), f'.{glob.escape(os.path.basename(path))}.*.tmp')):
        try:
            os.unlink(tmp)
        except OSError:
            pass
