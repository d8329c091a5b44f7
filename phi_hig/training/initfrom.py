"""Initial weights from an earlier run: the final network of one of its methods (``init_from='RUN_DIR:METHOD'``, the
command line's ``--init-from RUN_DIR:METHOD``).

It is how a training continues from pre-trained weights with another method, e.g. HIG continuing from an Adam
model and Adam from a HIG model (Schnell, Holl & Thuerey 2022, §3.2, Fig. 3c and appendix Fig. 7b).
`load_init_source` reads the source and refuses, before anything trains or is written, a folder that does not exist
or is no run folder, a method it does not hold, a method that did not finish (no checkpoint marked final,
`phi_hig.training.checkpoint.Checkpoint.final`: interrupted, stopped, failed, still training, or run without
``checkpoint_every``) and weights that do not fit the network of the run (another experiment, or settings that
change the network: the message names what differs). Settings that leave the network as it is (the data size, the
seed) may differ: pre-training on other data is allowed.

The source (its folder, method, step and `weights_fingerprint`) is part of the run's identity
(`phi_hig.training.spec.RunSpec.identity`), so a resume with other initial weights is refused; a resume compares the
fingerprint, so a source folder that was moved still resumes. The source folder is only read, never locked, so a
run writing it is not disturbed: the checkpoint read is complete (checkpoints are replaced atomically) and is used
only when it is marked final, so what is read is always a complete final state (its step and fingerprint are
recorded); once a run that resumed the method there has checkpointed it past that state, the source is refused as
not finished, naming that run.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Mapping, Tuple

import torch

from .. import rundir
from ..errors import InvalidInputError
from .checkpoint import checkpoint_path, read_checkpoint

__all__ = ['InitSource', 'parse_init_from', 'load_init_source', 'weights_fingerprint']

_FORM = "'RUN_DIR:METHOD' (a run folder and a method trained there, e.g. 'runs/pretrain:adam')"


@dataclass(frozen=True)
class InitSource:
    """The final weights of ``method`` in run folder ``run`` (`load_init_source`).

    Attributes:
        run: the run folder, as given.
        method: the method whose final network it is.
        step: the steps that method made.
        fingerprint: `weights_fingerprint` of ``state``.
        path: the checkpoint file read.
        state: the network's ``state_dict`` (CPU tensors).
    """
    run: str
    method: str
    step: int
    fingerprint: str
    path: str
    state: Mapping = field(compare=False, repr=False)

    @property
    def record(self) -> dict:
        """Plain data for a run's identity and ``summary.json``: run (absolute path), method, step, fingerprint."""
        return dict(run=os.path.abspath(self.run), method=self.method, step=self.step, fingerprint=self.fingerprint)


def weights_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a ``state_dict``: each entry's name, dtype, shape and bytes, in name order. Equal for equal
    weights, whatever file or process they came from.

    >>> import torch
    >>> a = weights_fingerprint({'w': torch.zeros(2, 2)})
    >>> a == weights_fingerprint({'w': torch.zeros(2, 2)}), a == weights_fingerprint({'w': torch.zeros(4)})
    (True, False)
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{str(tensor.dtype).replace('torch.', '')}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def parse_init_from(value) -> Tuple[str, str]:
    """``value`` as ``(run folder, method)``: a string ``'RUN_DIR:METHOD'`` (split at its last colon, so a folder may
    hold colons) or a pair of strings.

    >>> parse_init_from('runs/pre:adam'), parse_init_from(('runs/a:b', 'hig'))
    (('runs/pre', 'adam'), ('runs/a:b', 'hig'))
    >>> parse_init_from('runs/pre')
    Traceback (most recent call last):
    phi_hig.errors.InvalidInputError: init_from must be 'RUN_DIR:METHOD' (a run folder and a method trained there, e.g. 'runs/pretrain:adam'), got 'runs/pre'
    """
    if isinstance(value, str):
        folder, colon, method = value.rpartition(':')
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, str) for v in value):
        (folder, method), colon = value, ':'
    else:
        folder = method = colon = ''
    if not colon or not folder.strip() or not method.strip() or method != method.strip():
        raise InvalidInputError(f"init_from must be {_FORM}, got {value!r}")
    return folder, method


def load_init_source(value, experiment, out=None) -> InitSource:
    """The final weights named by ``value`` (`parse_init_from`), checked against the network of ``experiment``.

    Args:
        value: ``'RUN_DIR:METHOD'`` or ``(RUN_DIR, METHOD)``.
        experiment: the `phi_hig.experiments.base.Experiment` of the run that starts from them.
        out: the output folder of that run (None: none); it must not be the source folder.

    Raises:
        InvalidInputError: naming ``init_from`` and the problem (see the module docstring). Nothing is written, and
            the global torch random state is left as it was.
    """
    folder, method = parse_init_from(value)
    named = f"'{folder}:{method}'"
    if not os.path.isdir(folder):
        what = 'is a file, not a run folder' if os.path.exists(folder) else 'does not exist'
        raise InvalidInputError(f"init_from {named}: the run folder {folder!r} {what}")
    if out is not None and (os.path.realpath(folder) + os.sep).startswith(os.path.realpath(out) + os.sep):
        raise InvalidInputError(f"init_from {named} names the folder the run writes (out {out!r}) or one inside it; "
                                f"start from another run's folder")
    methods = rundir.methods_in(folder)
    if not methods and rundir.run_files(folder):
        raise InvalidInputError(f"init_from {named}: the run in {folder!r} wrote no checkpoints, so its final weights "
                                f"were not kept (a run keeps them with checkpoint_every, in checkpoint_METHOD.pt)")
    if not methods:
        raise InvalidInputError(f"init_from {named}: {folder!r} is not a phi_hig run folder (no checkpoint or history "
                                f"of a method in it)")
    if method not in methods:
        raise InvalidInputError(f"init_from {named}: the run folder has no method {method!r}; it holds "
                                f"{', '.join(methods)}")
    path = checkpoint_path(folder, method)
    if not os.path.exists(path):
        raise InvalidInputError(f"init_from {named}: {method} has no checkpoint in {folder!r} (only its history)")
    try:
        ck = read_checkpoint(path)
    except InvalidInputError as err:
        raise InvalidInputError(f"init_from {named}: {err}") from None
    if not ck.final:
        writing = f"; a run is writing the folder: {rundir.holder(folder)}" if \
            os.path.exists(os.path.join(folder, rundir.LOCK)) else ''
        raise InvalidInputError(f"init_from {named}: {method} did not finish: its latest checkpoint (step {ck.step}) "
                                f"is not its final state (interrupted, stopped, diverged, still training, or written "
                                f"before phi_hig marked final states){writing}; resume it to its end first")
    made = ck.identity.get('experiment')
    if made != experiment.name:
        raise InvalidInputError(f"init_from {named}: its network was trained on experiment {made!r}, this run is on "
                                f"{experiment.name!r}")
    _check_fit(named, ck, experiment)
    return InitSource(run=folder, method=method, step=ck.step, fingerprint=weights_fingerprint(ck.net), path=path,
                      state=ck.net)


def _check_fit(named: str, ck, experiment) -> None:
    """Refuse weights that do not load strictly into ``experiment``'s network, naming the settings that differ."""
    with torch.random.fork_rng(devices=[]):  # building a network draws from torch's generator
        net = experiment.make_net()
    try:
        net.load_state_dict(ck.net)
        return
    except (RuntimeError, TypeError, ValueError, KeyError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        problem = (lines[1] if len(lines) > 1 else lines[0] if lines else type(err).__name__).rstrip('.')
    saved = {'preset': ck.identity.get('preset'), **(ck.identity.get('settings') or {})}
    current = {'preset': experiment.settings.get('preset'), **experiment.settings}
    plain = lambda v: json.dumps(v, sort_keys=True, default=repr)  # noqa: E731  (tuples and lists alike)
    differ = [f"{k}={saved[k]!r} there, {current[k]!r} here" for k in saved
              if k in current and plain(saved[k]) != plain(current[k])]
    why = f" (settings that differ: {'; '.join(differ)})" if differ else ''
    raise InvalidInputError(f"init_from {named}: its weights do not fit the network of {experiment.name!r}{why}: "
                            f"{problem}")
