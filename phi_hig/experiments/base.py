"""What an experiment is: data, network, physics, loss, metrics and per-method defaults. No training loop.

An `Experiment` is plain data for the runner (`phi_hig.train`). A method never knows which experiment it
trains; an experiment never knows which method trains it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..convert import Conditions
from ..errors import InvalidInputError
from ..sip.inverses import Inverse

__all__ = ['Experiment', 'DataStream', 'identity', 'no_conditions', 'inputs_as_conditions', 'simulate_batch']

Batch = Tuple[torch.Tensor, torch.Tensor]


def identity(z):
    """The physics of an experiment without a simulation: ``y = z`` (what `Experiment` holds for ``simulate=None``)."""
    return z


def no_conditions(inputs, targets):
    """The conditions of an experiment whose physics needs none: None for every batch (what `Experiment` holds for
    ``conditions=None``)."""
    return None


def inputs_as_conditions(inputs, targets):
    """The conditions of an experiment whose physics starts from what the network reads (the oscillators' initial
    state, the parameter a of sin(a/x)): each example's input, as one argument of ``simulate``."""
    return inputs


def simulate_batch(simulate: Callable, conditions: Callable, z, inputs, targets):
    """The simulation of the predictions ``z`` of the batch ``(inputs, targets)``: ``simulate(z, …)`` with the
    batch's conditions ``conditions(inputs, targets)`` passed by the rule of `phi_hig.convert.Conditions` (a tuple
    by position, a dict by name, None not at all, any other value as one argument).

    Example:
        >>> import torch
        >>> x0 = torch.tensor([[1.0], [2.0]])
        >>> simulate_batch(lambda u, s0: s0 + u, lambda inputs, targets: inputs, torch.ones(2, 1), x0, x0)
        tensor([[2.],
                [3.]])
    """
    return Conditions(conditions(inputs, targets)).call(simulate, z)


@dataclass
class Experiment:
    """A training problem through a physics simulation.

    Attributes:
        name: registry name.
        make_net: builds a freshly initialized network (the runner seeds torch before calling it).
        simulate: batched physics ``z -> y`` (samples independent); given as None, the experiment holds `identity`
            (so every caller calls it directly). With ``conditions`` it takes each example's conditions after z
            (``simulate(z, x0)``; `simulate_batch`).
        loss: ``loss(y, targets) -> (b,)`` per-sample loss.
        methods: per method name, the default hyperparameters in the batch-mean convention of g
            (``lr``, ``batch_size``, and for HIG/GN ``truncation``, ``kappa``, …).
        train_set: the finite training set ``(inputs, targets)``, consumed in seeded epoch permutations;
            or None when ``generate`` draws fresh examples.
        generate: ``generate(rng, n) -> (inputs, targets)`` draws n fresh examples (infinite data).
        test_set: held-out ``(inputs, targets)``.
        metrics: optional ``metrics(net, inputs, targets) -> dict`` of extra evaluation values.
        conditions: ``conditions(inputs, targets)``: what ``simulate`` and the inverses need per example besides z
            (initial states, boundary values, masks, parameters) for a batch, by the rule of
            `phi_hig.convert.Conditions` (a tuple by position, a dict by name, one value as one argument), e.g.
            ``lambda inputs, targets: inputs`` for physics that starts from the network's input. Every step and
            evaluation asks it for the batch it works on (under torchrun: each rank's slice), and `phi_hig.hig_step`
            / `phi_hig.sip_step` replicate the conditions with z. Given as None, the experiment holds
            `no_conditions`.
        inverses: the SIP inverse solvers by name (`Inverse`: solver and options); the one under 'default'
            enables the 'sip' method, the others are chosen by a method variant's ``inverse`` key (e.g.
            ``'sip_lbfgs': dict(base='sip', inverse='lbfgs', …)``, see `phi_hig.training.methods.make_method`).
        eval_every: default evaluation cadence in steps.
        settings: the experiment's own parameters (recorded in the summary).
        block: number of examples ``generate`` draws at a time (lower it when generating is expensive).
        threads: torch intra-op threads to train with (None: leave torch's setting). Tiny problems run
            fastest on one thread, and much slower with several threads on a loaded machine.
        jax_physics: ``(simulate, loss)`` for batch-first JAX arrays (the same physics and per-sample loss): the
            experiment trains under ``backend='jax'`` (`phi_hig.training.jax_steps`); None: it does not.
        expected: per method, a behaviour of its default hyperparameters that is this experiment's result rather
            than a misconfiguration, in words (e.g. the toy's Gauss–Newton, whose full steps overshoot and saturate
            the network: Schnell, Holl & Thuerey 2022, §2.1). When the method trains with the experiment's own
            hyperparameters, its training-loss growth is reported as this result (a progress line,
            ``summary['final'][m]['expected']``) instead of a `phi_hig.training.runner.RunWarning` advising a
            smaller η.
    """
    name: str
    make_net: Callable[[], nn.Module]
    simulate: Optional[Callable]
    loss: Callable
    methods: Dict[str, dict]
    test_set: Batch
    train_set: Optional[Batch] = None
    generate: Optional[Callable[[np.random.Generator, int], Batch]] = None
    metrics: Optional[Callable] = None
    conditions: Optional[Callable] = None
    inverses: Dict[str, Inverse] = field(default_factory=dict)
    eval_every: int = 100
    settings: dict = field(default_factory=dict)
    description: str = ''
    threads: Optional[int] = None
    block: int = 4096
    jax_physics: Optional[Tuple[Callable, Callable]] = None
    expected: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.simulate is None:
            self.simulate = identity
        if self.conditions is None:
            self.conditions = no_conditions
        if not callable(self.conditions):
            raise InvalidInputError(f"experiment {self.name!r}: conditions must be None or a callable "
                                    f"conditions(inputs, targets), got {type(self.conditions).__name__}")
        if (self.train_set is None) == (self.generate is None):
            raise InvalidInputError(f"experiment {self.name!r} needs exactly one of train_set and generate")
        for key, inverse in self.inverses.items():
            if not isinstance(inverse, Inverse):
                raise InvalidInputError(f"experiment {self.name!r}: inverses[{key!r}] must be an Inverse, got "
                                        f"{type(inverse).__name__} (wrap a solver as Inverse(solve, options))")

    def simulate_batch(self, z, inputs, targets):
        """``simulate(z, …)`` for the predictions z of the batch ``(inputs, targets)``, with its conditions
        (`simulate_batch`); ``simulate(z)`` for an experiment without conditions."""
        return simulate_batch(self.simulate, self.conditions, z, inputs, targets)

    @property
    def inverse(self) -> Optional[Inverse]:
        """The default SIP inverse (`inverses['default']`), or None when the experiment has none."""
        return self.inverses.get('default')


class DataStream:
    """The ordered sequence of training examples for one seed, consumed at any batch size.

    Example ``k`` of the stream is a fixed function of ``(seed, k)``: for a finite training set it is entry
    ``perm_e[k mod N]`` with ``perm_e`` a seeded permutation of epoch ``e = k div N``; for generated data it is
    entry ``k mod B`` of the block ``k div B`` (B = ``experiment.block``) drawn with a generator seeded by
    ``(seed, block)``. Methods with different batch sizes therefore see the same examples in the same order,
    and a stream resumed at ``position`` continues exactly as an uninterrupted one.
    """

    def __init__(self, experiment: Experiment, seed: int, position: int = 0):
        self.experiment = experiment
        self.seed = int(seed)
        self.position = int(position)
        self._cache = {}

    def _chunk(self, index: int) -> Batch:
        if index not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            ex = self.experiment
            if ex.train_set is not None:
                inputs, targets = ex.train_set
                perm = np.random.default_rng([self.seed, 1, index]).permutation(inputs.shape[0])
                perm = torch.as_tensor(perm)
                self._cache[index] = (inputs[perm], targets[perm])
            else:
                self._cache[index] = ex.generate(np.random.default_rng([self.seed, 2, index]), ex.block)
        return self._cache[index]

    def _chunk_size(self) -> int:
        ex = self.experiment
        return ex.train_set[0].shape[0] if ex.train_set is not None else self.experiment.block

    def next(self, n: int) -> Batch:
        """The next ``n`` examples of the stream; advances `position` by n."""
        size = self._chunk_size()
        pieces_x, pieces_y = [], []
        need = n
        while need > 0:
            chunk, offset = divmod(self.position, size)
            x, y = self._chunk(chunk)
            take = min(need, size - offset)
            pieces_x.append(x[offset:offset + take])
            pieces_y.append(y[offset:offset + take])
            self.position += take
            need -= take
        if len(pieces_x) == 1:
            return pieces_x[0], pieces_y[0]
        return torch.cat(pieces_x), torch.cat(pieces_y)
