"""Checkpoints that survive any kill, carry the run's identity and never execute code when loaded.

Per method ``M`` a run folder holds:

* ``checkpoint_M.pt``: the latest checkpoint, replaced atomically (`phi_hig.files.atomic_write`);
* ``checkpoint_M.prev.pt``: the one before it (a hard link made before each replacement), the fallback when
  the latest cannot be read;
* ``history_M.jsonl``: the method's records, one JSON object a line, append-only. A checkpoint stores how
  many records it covers, so its size does not grow with the run; on resume the history is cut back to
  them (`load_for_resume`).

A checkpoint is plain data and tensors only (``torch.load(..., weights_only=True)``): the run's identity
(`phi_hig.training.spec.RunSpec.identity`), step, training time, stream position, whether it is the method's final
state, and the network, optimizer and RNG states with all tensors of one dtype packed into one flat buffer (`pack`),
which keeps writing cheap. The checkpoint a method writes when it has spent its whole budget is marked ``final``
(`Checkpoint.final`): the weights another run may start from (`phi_hig.training.initfrom`); one written at an
interrupt, a stop, a failure or during training is not.
`CheckpointWriter` writes in a background thread: the training thread only packs a snapshot; the thread
appends the history, fsyncs, writes the checkpoint and renames it into place. The runner takes a snapshot at
every ``checkpoint_every``-th step at which the writer is idle (and always at the end of a method), so a
checkpoint is never more than one write behind and a slow disk never slows the training.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
import warnings
from dataclasses import dataclass
from typing import List, Mapping, Optional, Tuple

import torch

from .. import checks, rundir
from ..errors import InvalidInputError, RunFileError
from ..files import append_durable, atomic_write, read_lines, remove_stale_temporaries

__all__ = ['FORMAT', 'Checkpoint', 'CheckpointWarning', 'CheckpointWriter', 'checkpoint_path', 'previous_path',
           'history_path', 'pack', 'unpack', 'read_checkpoint', 'load_for_resume', 'identity_difference']

FORMAT = 'phi_hig-checkpoint-3'
_TENSOR = '$tensor'


class CheckpointWarning(UserWarning):
    """A checkpoint could not be used and another one (or none) was used instead."""


def checkpoint_path(out: str, method: str) -> str:
    """The latest checkpoint of ``method`` in run folder ``out`` (named by `phi_hig.rundir.checkpoint_file`)."""
    return os.path.join(out, rundir.checkpoint_file(method))


def previous_path(out: str, method: str) -> str:
    """The checkpoint before the latest (the fallback when the latest cannot be read)."""
    return os.path.join(out, rundir.previous_file(method))


def history_path(out: str, method: str) -> str:
    """The append-only history of ``method``'s records (one JSON object a line)."""
    return os.path.join(out, rundir.history_file(method))


# --- plain data + packed tensors ------------------------------------------------------------------------------
def pack(tree) -> dict:
    """``tree`` (dicts, lists, tuples, tensors, numbers, strings, None) as ``{'skeleton', 'buffers'}``: every
    tensor replaced by a reference into one flat CPU buffer per dtype (copies: later changes of the tensors do
    not reach the packed state)."""
    groups, sizes = {}, {}

    def walk(v):
        if isinstance(v, torch.Tensor):
            key = str(v.dtype).replace('torch.', '')
            flat = v.detach().reshape(-1).cpu()
            groups.setdefault(key, []).append(flat)
            offset = sizes.get(key, 0)
            sizes[key] = offset + flat.numel()
            return {_TENSOR: [key, offset, list(v.shape)]}
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(walk(x) for x in v)
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        raise InvalidInputError(f"cannot checkpoint a value of type {type(v).__name__}: {v!r}")

    skeleton = walk(tree)
    return dict(skeleton=skeleton, buffers={k: torch.cat(ts) for k, ts in groups.items()})


def unpack(packed: dict):
    """The tree `pack` packed (each tensor a fresh CPU tensor)."""
    buffers = packed['buffers']

    def walk(v):
        if isinstance(v, dict):
            if set(v) == {_TENSOR}:
                key, offset, shape = v[_TENSOR]
                n = 1
                for s in shape:
                    n *= s
                return buffers[key][offset:offset + n].reshape(shape).clone()
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(walk(x) for x in v)
        return v

    return walk(packed['skeleton'])


@dataclass
class Checkpoint:
    """The content of one checkpoint file.

    Attributes:
        method: method name.
        identity: the run's identity (`phi_hig.training.spec.RunSpec.identity`).
        step: steps made.
        train_time: training seconds so far.
        position: position of the method's data stream.
        records: number of history records (steps 0 … step) it covers.
        net: the network's ``state_dict``.
        optimizer: the optimizer's ``state_dict``.
        rng: ``{'torch': ByteTensor, 'cuda': [ByteTensor, ...]}``.
        path: the file it was read from ('' when not read).
        final: True for the state of a method that spent its whole budget (status 'ok'); False for every other
            checkpoint, and for one written before phi_hig marked final states.
    """
    method: str
    identity: dict
    step: int
    train_time: float
    position: int
    records: int
    net: dict
    optimizer: dict
    rng: dict
    path: str = ''
    final: bool = False


def _content(ck: Checkpoint) -> dict:
    """What a checkpoint file holds but its checksum: plain data and the packed state (a copy: the training may go
    on meanwhile). The writer thread adds the checksum (`_checksum`) when it serializes it."""
    return dict(format=FORMAT, method=ck.method, identity=ck.identity, step=ck.step, train_time=ck.train_time,
                position=ck.position, records=ck.records, final=bool(ck.final),
                state=pack(dict(net=ck.net, optimizer=ck.optimizer, rng=ck.rng)))


def _checksum(content: dict) -> str:
    """SHA-256 of a checkpoint's plain data and of the bytes of its packed tensors: a file whose bytes changed
    after it was written (a flipped bit, a partial overwrite) no longer matches and is not resumed from."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in content.items() if k not in ('state', 'checksum')},
                                       sort_keys=True, default=str).encode())
    digest.update(json.dumps(content['state']['skeleton'], sort_keys=True, default=str).encode())
    for key in sorted(content['state']['buffers']):
        digest.update(key.encode())
        digest.update(content['state']['buffers'][key].contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()


def _save(content: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(content, buf)
    return buf.getvalue()


_ZIP = b'PK\x03\x04'
"""The first bytes of every file ``torch.save`` writes (a zip archive)."""


def _load(path: str):
    """``torch.load(path, weights_only=True)`` of a file that is a torch zip archive; a damaged file is refused in
    phi_hig's words (torch's own message may advise loading with ``weights_only=False``, which runs code)."""
    with open(path, 'rb') as f:
        head = f.read(len(_ZIP))
    if head != _ZIP:
        what = 'zeros' if head and not head.strip(b'\0') else repr(head)
        raise ValueError(f"not a torch zip file (its first bytes are {what}): damaged or not a checkpoint")
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ''
        if 'weights_only' in first or 'Weights only load failed' in first or len(first) > 160:
            first = 'it holds something other than plain data and tensors, or is damaged'
        raise ValueError(f"cannot be loaded ({type(err).__name__}: {first})") from None


def read_checkpoint(path: str) -> Checkpoint:
    """Read a checkpoint with ``weights_only=True`` (no code runs).

    Raises:
        InvalidInputError: naming the file, when it is missing, torn, corrupted or not a phi_hig checkpoint.
    """
    try:
        raw = _load(path)
        if not isinstance(raw, dict) or raw.get('format') != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        if raw.get('checksum') != _checksum(raw):
            raise ValueError("its checksum does not match its content: the file was changed after it was written")
        state = unpack(raw['state'])
        ck = Checkpoint(method=raw['method'], identity=raw['identity'], step=int(raw['step']),
                        train_time=float(raw['train_time']), position=int(raw['position']),
                        records=int(raw['records']), net=state['net'], optimizer=state['optimizer'],
                        rng=state['rng'], path=path, final=raw.get('final') is True)
    except FileNotFoundError:
        raise InvalidInputError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # torn zip, bad pickle, missing keys: all mean "unusable"
        raise InvalidInputError(f"checkpoint {path} is unreadable ({type(err).__name__}: {err})") from None
    return ck


# --- identity -------------------------------------------------------------------------------------------------
def _describe(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def identity_difference(saved: dict, current: dict, method: str, renamed: Optional[Mapping[str, str]] = None) \
        -> Optional[str]:
    """The first setting in which the run identities ``saved`` and ``current`` differ for ``method``, as
    "made with X, this run has Y"; None when they agree. Initial weights taken from another run (``init_from``) are
    compared by their fingerprint, not by the folder they were read from. Other methods' hyperparameters are not
    compared (a run may resume a subset of its methods or add one). ``renamed`` (old key -> current key, the method
    kind's `MethodKind.renamed`): a saved hyperparameter under its old name counts as the current one, so a
    checkpoint written before a rename still matches."""
    for key in ('experiment', 'preset', 'seed', 'world_size', 'backend'):
        unset = 'torch' if key == 'backend' else None  # an identity without a backend is a torch run's
        if saved.get(key, unset) != current.get(key, unset):
            return (f"was made with {key} {_describe(saved.get(key, unset))}, this run has {key} "
                    f"{_describe(current.get(key, unset))}")
    sources = [identity.get('init_from') or {} for identity in (saved, current)]
    if sources[0].get('fingerprint') != sources[1].get('fingerprint'):  # the weights decide, not where they lay
        return "was made with {}, this run has {}".format(*(
            f"init_from '{s.get('run')}:{s.get('method')}' (step {s.get('step')}, weights sha256 "
            f"{str(s.get('fingerprint'))[:12]}…)" if s else "the seeded initial weights (no init_from)"
            for s in sources))
    before = dict(saved.get('hyperparameters', {}).get(method, {}))
    for old, new in (renamed or {}).items():
        if old in before and new not in before:
            before[new] = before.pop(old)
    for a, b, prefix in ((saved.get('settings', {}), current.get('settings', {}), ''),
                         (before, current.get('hyperparameters', {}).get(method, {}), f'{method}.')):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key, '<unset>') != b.get(key, '<unset>'):
                x = f"{prefix}{key}={_describe(a[key])}" if key in a else f"no {prefix}{key}"
                y = f"{prefix}{key}={_describe(b[key])}" if key in b else f"no {prefix}{key}"
                return f"was made with {x}, this run has {y}"
    return None


# --- resume ---------------------------------------------------------------------------------------------------
def _history(path: str, method: str, ck: Checkpoint) -> Tuple[List[dict], List[str]]:
    """The first ``ck.records`` records of the history file (and their lines), checked against the checkpoint."""
    try:
        lines = read_lines(path)
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"history {path} is unreadable ({err})") from None
    if len(lines) < ck.records:
        raise InvalidInputError(f"history {path} holds {len(lines)} complete records, checkpoint "
                                f"{os.path.basename(ck.path)} needs {ck.records}")
    lines = lines[:ck.records]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError as err:
            raise InvalidInputError(f"history {path} is corrupted: line {number} ({err})") from None
        if not isinstance(record, dict) or record.get('method') != method or \
                not checks.is_integer(record.get('step')) or record['step'] < 0:
            raise InvalidInputError(f"history {path} is corrupted: line {number} is not a record of {method} "
                                    f"(a JSON object with its method and step), got {line[:60]!r}")
        records.append(record)
    if records and (records[-1].get('step') != ck.step or records[-1].get('method') != method):
        raise InvalidInputError(f"history {path}: record {ck.records} is step {records[-1].get('step')} of "
                                f"{records[-1].get('method')!r}, checkpoint {os.path.basename(ck.path)} is step "
                                f"{ck.step} of {method!r}")
    return records, lines


def load_for_resume(out: str, method: str, identity: dict, renamed: Optional[Mapping[str, str]] = None) \
        -> Optional[Tuple[Checkpoint, List[dict]]]:
    """The checkpoint of ``method`` in ``out`` to resume from, and its history records; None if there is none.

    ``identity`` is this run's (`phi_hig.training.spec.RunSpec.identity`); ``renamed``: the method kind's renamed
    hyperparameters (`identity_difference`).

    Tries the latest checkpoint, then the previous one; one that cannot be read, or whose history does not
    match, is skipped with a `CheckpointWarning` naming the file. Truncates the history file to the records
    of the checkpoint used (a torn last line and records past its step are dropped), atomically.

    Raises:
        InvalidInputError: (1) the checkpoint was made by a run of another identity ("resume: the
            checkpoint … was made with seed 0, this run has seed 1"); (2) checkpoint files exist but none is
            usable (the message names each file and why).
    """
    problems = []
    for path in (checkpoint_path(out, method), previous_path(out, method)):
        if not os.path.exists(path):
            continue
        try:
            ck = read_checkpoint(path)
            if ck.method != method:
                raise InvalidInputError(f"checkpoint {path} belongs to method {ck.method!r}")
            difference = identity_difference(ck.identity, identity, method, renamed)
            if difference is not None:
                raise _IdentityError(f"resume: the checkpoint {path} {difference}")
            records, lines = _history(history_path(out, method), method, ck)
        except _IdentityError:
            raise
        except InvalidInputError as err:  # each problem names the checkpoint it was found for
            problems.append(str(err) if path in str(err) else f"checkpoint {path}: {err}")
            continue
        for problem in problems:
            warnings.warn(f"{problem}; resuming {method} from {path} (step {ck.step})", CheckpointWarning, 2)
        hist = history_path(out, method)
        kept = ''.join(line + '\n' for line in lines).encode()
        if os.path.getsize(hist) != len(kept):  # records past the checkpoint, or a torn last line
            atomic_write(hist, kept)
        return ck, records
    if problems:
        raise InvalidInputError(f"resume: no usable checkpoint of {method} in {out}: " + '; '.join(problems))
    warnings.warn(f"resume: no checkpoint of {method} in {out}; it starts from step 0", CheckpointWarning, 2)
    return None


class _IdentityError(InvalidInputError):
    pass


# --- writing --------------------------------------------------------------------------------------------------
def _link_previous(latest: str, previous: str) -> None:
    """Make ``previous`` the current content of ``latest`` (hard link, else a copy), atomically."""
    tmp = os.path.join(os.path.dirname(previous), f'.{os.path.basename(previous)}.link.tmp')
    try:
        if os.path.exists(tmp):
            os.unlink(tmp)
        os.link(latest, tmp)
        os.replace(tmp, previous)
    except OSError:
        with open(latest, 'rb') as f:
            atomic_write(previous, f.read())


class CheckpointWriter:
    """Writes one method's checkpoints and history in a background thread (see the module docstring).

    Args:
        out: the run folder (created if needed).
        method: method name.
        fresh: True for a method that starts from step 0: the first write replaces any old checkpoints and
            history of this method in ``out``; False when resuming (the history then holds exactly the
            records of the checkpoint resumed from).

    Invariant: the history is on disk before the checkpoint that covers it becomes visible, so a checkpoint
    never covers records the history lacks; any kill leaves the latest or the previous checkpoint complete.
    """

    def __init__(self, out: str, method: str, fresh: bool):
        os.makedirs(out, exist_ok=True)
        self.latest, self.previous = checkpoint_path(out, method), previous_path(out, method)
        self.history = history_path(out, method)
        for path in (self.latest, self.previous, self.history):
            remove_stale_temporaries(path)
        self._fresh = fresh
        self._cond = threading.Condition()
        self._blob: Optional[bytes] = None
        self._lines: List[str] = []
        self._busy = False
        self._error: Optional[BaseException] = None
        self._closed = False
        self.method = method
        self.last_submit = -float('inf')
        """`time.perf_counter` of the last `submit`."""
        self.written: Optional[int] = None
        """The step of the last checkpoint written completely (None before the first)."""
        self._thread = threading.Thread(target=self._loop, name=f'phi_hig-checkpoint-{method}', daemon=True)
        self._thread.start()

    @property
    def idle(self) -> bool:
        """True when nothing is being written or waiting: a new snapshot would be written at once."""
        return not self._busy and self._blob is None and self._error is None

    @property
    def failed(self) -> bool:
        """True once a write failed (until the failure is raised by `check`, `submit` or `flush`)."""
        return self._error is not None

    def check(self, step: int) -> None:
        """Raise a failed write now (the training stops at ``step``, the step it has made): `RunFileError` naming the
        file, the step and the last checkpoint written."""
        with self._cond:
            self._raise(step)

    def submit(self, ck: Checkpoint, new_records: List[dict]) -> None:
        """Queue a checkpoint and the records made since the last submit. Returns once the state is copied
        (packed); serializing and writing happen in the background."""
        self.last_submit = time.perf_counter()
        blob = _content(ck)
        lines = [json.dumps(r, default=float) for r in new_records]  # NumPy scalars as floats
        with self._cond:
            self._raise()
            self._blob = blob
            self._lines += lines
            self._cond.notify_all()

    def flush(self) -> None:
        """Wait until everything submitted is on disk; re-raise a failed write (e.g. a full disk)."""
        with self._cond:
            while (self._blob is not None or self._busy) and self._error is None:
                self._cond.wait()
            self._raise()

    def close(self) -> None:
        """`flush`, then end the thread."""
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._thread.join()

    def _raise(self, step: Optional[int] = None) -> None:
        if self._error is None:
            return
        error, self._error = self._error, None
        if not isinstance(error, OSError) or isinstance(error, RunFileError):
            raise error
        where = f"could not write {error.filename}" if error.filename else "could not write a checkpoint"
        stopped = f"{self.method} stopped at step {step}" if step is not None else f"{self.method} stopped"
        last = f"its last checkpoint written is step {self.written} (with resume, the run continues from there)" \
            if self.written is not None else "no checkpoint of it was written"
        raise RunFileError(f"{where}: {error.strerror or error}; {stopped}; {last}") from error

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._blob is None and not self._closed:
                    self._cond.wait()
                if self._blob is None:
                    return
                blob, lines, self._blob, self._lines, self._busy = self._blob, self._lines, None, [], True
            try:
                self._write(blob, lines)
                self.written = blob['step']
            except BaseException as err:  # reported to the training thread by check / submit / flush
                with self._cond:
                    self._error = err
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, content: dict, lines: List[str]) -> None:
        blob = _save(dict(content, checksum=_checksum(content)))  # hashed here, off the training thread
        if self._fresh:  # a new run: the old checkpoints go first, so none can outlive the history it matched
            for path in (self.latest, self.previous):
                if os.path.exists(path):
                    os.unlink(path)
            atomic_write(self.history, ''.join(line + '\n' for line in lines))
            self._fresh = False
        else:
            append_durable(self.history, lines)
        if os.path.exists(self.latest):
            _link_previous(self.latest, self.previous)
        atomic_write(self.latest, blob)
