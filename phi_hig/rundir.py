"""A run folder: the files phi_hig writes there, and the claim of one run on it (a kernel lock, no silent overwrite).

The files phi_hig writes in a run folder (`is_run_file`; this module is the one place that names them):

* per method ``M``: ``checkpoint_M.pt``, ``checkpoint_M.prev.pt`` and ``history_M.jsonl`` (`checkpoint_file`,
  `previous_file`, `history_file`; written by `phi_hig.training.checkpoint`);
* the results of a run: ``metrics.csv``, ``summary.json``, ``curves.png`` (`RESULT_FILES`; `phi_hig.report.write_run`);
  of a sweep: ``sweep.csv``, ``sweep.png`` (`SWEEP_FILES`) beside one folder per point (`point_folder`); of a report:
  `REPORT_FILES` and ``index.md``;
* the lock ``.lock`` (`LOCK`), and the temporary files of an atomic write a kill interrupted (`phi_hig.files`).

`claim` gives one run a folder: it takes an exclusive ``fcntl.flock`` on ``.lock`` (the kernel releases it when its
process dies, however it dies) and records there who holds it (PID, host, command, start time), so that a second
run into the folder is refused naming the holder (on POSIX systems; elsewhere folders are checked but not locked).
A folder holding another run's files is refused unless the run resumes it or overwrites it; overwriting deletes only
the files listed above and refuses (deleting nothing) a folder holding anything else.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shlex
import socket
import sys
import time
from typing import List, Optional, Tuple

from .errors import InvalidInputError

try:
    import fcntl
except ImportError:  # not POSIX (Windows): folders are checked, not locked
    fcntl = None

__all__ = ['LOCK', 'RESULT_FILES', 'SWEEP_FILES', 'REPORT_FILES', 'INDEX_FILE', 'checkpoint_file', 'previous_file',
           'history_file', 'point_folder', 'is_run_file', 'run_files', 'RunFolder', 'claim', 'holder']

LOCK = '.lock'
"""The lock file of a claimed run folder (`claim`): JSON of its holder while held; removed on release."""
RESULT_FILES = ('metrics.csv', 'summary.json', 'curves.png')
"""The results of a run (`phi_hig.report.write_run`)."""
SWEEP_FILES = ('sweep.csv', 'sweep.png')
"""A sweep's table and figure, beside ``metrics.csv`` and ``summary.json`` of all its points."""
REPORT_FILES = ('report.md', 'report_loss.png', 'report_final.png', 'report_metrics.png', 'report_trajectory.png')
"""Files `phi_hig.report.write_report` may write (the last three only when there is something to show)."""
INDEX_FILE = 'index.md'
"""The index ``python -m phi_hig report`` writes into a folder of run folders."""

_NAMED = frozenset(RESULT_FILES + SWEEP_FILES + REPORT_FILES + (INDEX_FILE, LOCK))
_PER_METHOD = re.compile(r'(checkpoint_.+\.pt|history_.+\.jsonl)\Z', re.S)
_POINT = re.compile(r'\d{3,}_')


def checkpoint_file(method: str) -> str:
    """The name of ``method``'s latest checkpoint."""
    return f'checkpoint_{method}.pt'


def previous_file(method: str) -> str:
    """The name of ``method``'s checkpoint before the latest."""
    return f'checkpoint_{method}.prev.pt'


def history_file(method: str) -> str:
    """The name of ``method``'s append-only history of records."""
    return f'history_{method}.jsonl'


def point_folder(index: int, label: str) -> str:
    """The name of the folder of a sweep's point number ``index`` (from 0) labelled ``label`` (e.g. ``lr=0.1``): its
    number, then the label with every run of characters other than letters, digits and ``. = + -`` replaced by
    ``_``.

    >>> point_folder(2, 'lr=0.1 betas=(0.9, 0.99)')
    '002_lr=0.1_betas=_0.9_0.99'
    """
    return f'{index:03d}_' + re.sub(r'[^A-Za-z0-9.=+-]+', '_', label).strip('_')[:80]


def _plain_name(name: str) -> str:
    """The file an atomic write's temporary ``.NAME.XXXXXXXX.tmp`` (or ``.NAME.link.tmp``) stands for; else ``name``."""
    if name.startswith('.') and name.endswith('.tmp') and len(name) > 5:
        inner = name[1:-4]
        return inner[:-5] if inner.endswith('.link') else inner.rsplit('.', 1)[0]
    return name


def is_run_file(name: str) -> bool:
    """Whether a file named ``name`` is one phi_hig writes in a run folder (see the module docstring).

    >>> [is_run_file(n) for n in ('metrics.csv', 'checkpoint_hig.prev.pt', '.summary.json.k2x9a1b0.tmp', 'notes.txt')]
    [True, True, True, False]
    """
    plain = _plain_name(name)
    return plain in _NAMED or bool(_PER_METHOD.match(plain))


def _survey(path: str) -> Tuple[List[str], List[str], Optional[str]]:
    """(phi_hig's files, phi_hig's point folders, the first other entry or None) below run folder ``path``: a point
    folder counts as phi_hig's when everything in it is."""
    files, folders = [], []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            if not _POINT.match(name):
                return files, folders, full
            sub_files, sub_folders, other = _survey(full)
            if other is not None:
                return files, folders, other
            files += sub_files
            folders += sub_folders + [full]
        elif is_run_file(name):
            if name != LOCK:
                files.append(full)
        else:
            return files, folders, full
    return files, folders, None


def run_files(path: str) -> List[str]:
    """The files phi_hig wrote in folder ``path`` and in its sweep point folders (`is_run_file`, the lock not counted),
    sorted; [] when ``path`` does not exist."""
    if not os.path.isdir(path):
        return []
    found = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            if _POINT.match(name):
                found += run_files(full)
        elif name != LOCK and is_run_file(name):
            found.append(full)
    return found


def _command() -> str:
    argv = list(sys.argv)
    if argv and os.path.basename(argv[0]) == '__main__.py' and \
            os.path.basename(os.path.dirname(os.path.abspath(argv[0]))) == 'phi_hig':
        return shlex.join(['python', '-m', 'phi_hig'] + argv[1:])
    return shlex.join([os.path.basename(sys.executable)] + argv)


def holder(path: str) -> str:
    """Who holds (or last held) the lock of run folder ``path``, as recorded in its ``.lock``: ``PID 1234 on HOST
    (COMMAND), since TIME``; 'unknown' when nothing readable is recorded."""
    try:
        with open(os.path.join(path, LOCK)) as f:
            info = json.load(f)
        return f"PID {info['pid']} on {info['host']} ({info['command']}), since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return 'unknown'


class RunFolder:
    """A run folder claimed by this process (`claim`): the lock on its ``.lock`` is held until `release` (or the end
    of a ``with`` block, or the death of the process).

    Attributes:
        path: the folder.
        created: whether the claim created it (`release` then removes it again if it is left empty).
    """

    def __init__(self, path: str, fd: int, created: bool):
        self.path, self._fd, self.created = path, fd, created

    @classmethod
    def lock(cls, path: str, what: str = 'run') -> 'RunFolder':
        """Take the lock of folder ``path`` (created if missing) and record the holder; no check of its content.

        Raises:
            InvalidInputError: another process, or another claim of this one, holds it (naming the holder).
        """
        created = not os.path.isdir(path)
        os.makedirs(path, exist_ok=True)
        lock = os.path.join(path, LOCK)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise InvalidInputError(f"out {path!r} is in use by another {what}: {holder(path)}; wait for it to "
                                        f"end or choose another folder") from None
            try:  # the previous holder may have removed the file between our open and our lock: lock the one there
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = dict(pid=os.getpid(), host=socket.gethostname(), command=_command(), what=what,
                    since=time.strftime('%Y-%m-%d %H:%M:%S'))
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + '\n').encode(), 0)
        return cls(path, fd, created)

    def release(self) -> None:
        """Remove ``.lock`` and release the lock (idempotent); remove the folder if the claim created it and it is
        empty."""
        if self._fd is None:
            return
        try:
            os.unlink(os.path.join(self.path, LOCK))
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
        if self.created:
            try:
                os.rmdir(self.path)
            except OSError:
                pass

    def __enter__(self) -> 'RunFolder':
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim(path: str, *, resume: bool = False, overwrite: bool = False, what: str = 'run') -> RunFolder:
    """Give one run the folder ``path``: lock it (`RunFolder.lock`), then check what it holds.

    Without ``resume`` and ``overwrite`` a folder holding phi_hig's files of another run (`run_files`) is refused;
    files of other programs may lie beside a run. With ``overwrite``, phi_hig's files (and sweep point folders holding
    nothing else) are deleted, and a folder holding anything else is refused with nothing deleted. With ``resume``
    the files are kept for the run to continue (the checkpoints are checked when read).

    Args:
        path: the run folder (created if missing).
        resume: the run continues the one in ``path``.
        overwrite: the run replaces the one in ``path``.
        what: what claims it, for the messages ('run', 'sweep').

    Returns:
        The held `RunFolder` (use it in a ``with`` block or call `RunFolder.release`).

    Raises:
        InvalidInputError: the folder is locked by another run (naming its PID and command), holds another run's
            files, or (with ``overwrite``) holds something phi_hig did not write (naming it).

    Example:
        >>> import os, tempfile
        >>> folder = os.path.join(tempfile.mkdtemp(), 'run')
        >>> with claim(folder) as claimed:
        ...     open(os.path.join(folder, 'metrics.csv'), 'w').close()
        ...     claim(folder)
        Traceback (most recent call last):
        phi_hig.errors.InvalidInputError: out '...' is in use by another run: PID ...
        >>> claim(folder)
        Traceback (most recent call last):
        phi_hig.errors.InvalidInputError: out '...' holds another run's files (metrics.csv); set resume or overwrite, or choose another folder
        >>> claim(folder, overwrite=True).release()
        >>> os.listdir(folder)
        []
    """
    if resume and overwrite:
        raise InvalidInputError("give resume or overwrite, not both: a run either continues the one in its folder or "
                                "replaces it")
    folder = RunFolder.lock(path, what)
    try:
        if resume:
            return folder
        files, folders, other = _survey(path)
        if not overwrite:
            if files:
                names = [os.path.relpath(f, path) for f in files]
                shown = ', '.join(names[:3]) + (f' and {len(names) - 3} more' if len(names) > 3 else '')
                raise InvalidInputError(f"out {path!r} holds another run's files ({shown}); set resume or overwrite, "
                                        f"or choose another folder")
            return folder
        if other is not None:
            raise InvalidInputError(f"overwrite: out {path!r} holds {os.path.relpath(other, path)!r}, which phi_hig "
                                    f"did not write; nothing was deleted: move it away or choose another folder")
        _clear(files, folders)
        return folder
    except BaseException:
        folder.release()
        raise


def _clear(files: List[str], folders: List[str]) -> None:
    """Delete phi_hig's ``files`` and then the (emptied) point ``folders``, each point folder locked while cleared."""
    points = []
    try:
        for sub in folders:
            points.append(RunFolder.lock(sub))
        for f in files:
            if os.path.basename(f) != LOCK:
                os.unlink(f)
    finally:
        for point in points:
            point.release()
    for sub in folders:  # deepest first (`_survey` lists a folder after its content)
        try:
            os.rmdir(sub)
        except OSError:
            pass
