"""The JAX builders of the method kinds (``--backend jax``): how 'adam', 'sgd', 'hig' and 'gn' train on PhiML JAX.

A run on JAX trains the same experiment, data stream and initial weights as on torch: the runner still builds the
experiment's torch network from the seed (`phi_hig.training.runner.run`); each method's step trains a PhiML JAX
twin of it (`phi_hig.nets.jax_twin`, the weights copied) through the experiment's JAX physics
(``Experiment.jax_physics``) and copies the updated weights back into the torch network after every step, so that
evaluation, metrics, checkpoints and output files are those of a torch run. The copy back is part of the timed step.

* 'adam' / 'sgd': ``jax.example_libraries.optimizers`` (Adam as torch's: bias-corrected moments, ε outside the
  square root), one jitted step of value, gradient, clipping (``clip``) and update; torch's keys beyond ``lr``,
  ``betas``, ``eps`` and ``momentum`` must keep their defaults.
* 'hig' / 'gn': `phi_hig.HIG` on the twin (`phi_hig.hig.jax_optimizer.JaxHIG`) and `phi_hig.hig_step`.

The optimizer a runner checkpoints is a `JaxTrainer`: its ``state_dict`` is plain numbers and lists (Adam's moments
included). Imports JAX only when a step runs.
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np

from .. import checks
from ..errors import InvalidInputError, NonFiniteStepError

__all__ = ['JaxTrainer', 'jax_builders', 'JAX_KINDS']

JAX_KINDS = ('adam', 'sgd', 'hig', 'gn')
"""The built-in kinds that train under ``--backend jax``."""
_FIRST_ORDER_KEYS = {'adam': ('lr', 'betas', 'eps'), 'sgd': ('lr', 'momentum')}
"""What a JAX first-order step reads of torch's optimizer keys; the others must keep torch's defaults."""
_TWINS: Dict[tuple, object] = {}
"""One JAX twin per network architecture, reused by every method and seed of a process (compiled once)."""


class JaxTrainer:
    """The optimizer of a method on JAX as the runner sees it: a PhiML JAX twin of the torch network, its optimizer
    state, and `state_dict` / `load_state_dict` of plain data.

    Args:
        kind: 'adam', 'sgd', 'hig' or 'gn'.
        hyper: the method's validated hyperparameters.
    """

    def __init__(self, kind: str, hyper: dict):
        self.kind, self.hyper = kind, dict(hyper)
        self.twin, self.state, self.count, self.bound, self.saved = None, None, 0, False, None
        self.param_groups = [{'lr': hyper.get('lr', 1.0)}]

    def bind(self, net) -> None:
        """Before the first step (and after a restore): the twin takes ``net``'s weights, the optimizer its state."""
        if self.bound:
            return
        from ..nets import jax_twin
        key = tuple((type(m).__name__, tuple(p.shape for p in m.parameters())) for m in net)
        fresh = jax_twin(net)
        self.twin = _TWINS.setdefault(key, fresh)
        self.twin.parameters = fresh.parameters
        if self.kind in ('hig', 'gn'):
            from ..hig.optimizer import HIG
            from .steps import optimizer_args
            args = optimizer_args(self.hyper)
            self.state = HIG(self.twin, learning_rate=args.pop('lr', 1.0), **args)
            if self.saved is not None:
                self.state.load_state_dict(self.saved)
        else:
            import jax
            import jax.numpy as jnp
            self.state = self.first_order().init_fn(self.twin.parameters)
            if self.saved is not None:
                leaves = [jnp.asarray(np.asarray(v, dtype=leaf.dtype))
                          for v, leaf in zip(self.saved, jax.tree_util.tree_leaves(self.state))]
                self.state = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(self.state), leaves)
        self.bound, self.saved = True, None

    def first_order(self):
        """The ``jax.example_libraries.optimizers`` triple of 'adam' / 'sgd' for the hyperparameters (torch's
        other keys must keep their defaults)."""
        from jax.example_libraries import optimizers
        h = self.hyper
        unsupported = {k: v for k, v in h.items() if k in ('weight_decay', 'amsgrad', 'maximize', 'nesterov',
                                                            'dampening') and v not in (0, 0.0, False, None)}
        if unsupported:
            raise InvalidInputError(f"{self.kind} on JAX supports {', '.join(_FIRST_ORDER_KEYS[self.kind])} and clip; "
                                    f"got {', '.join(f'{k}={v!r}' for k, v in unsupported.items())}")
        lr = self.param_groups[0]['lr']
        if self.kind == 'adam':
            b1, b2 = h.get('betas', (0.9, 0.999))
            return optimizers.adam(lr, b1, b2, h.get('eps', 1e-8))
        return optimizers.momentum(lr, h['momentum']) if h.get('momentum', 0) else optimizers.sgd(lr)

    def state_dict(self) -> dict:
        """Plain data: the learning rate, the step count, and HIG's settings or the first-order arrays as lists."""
        out = {'kind': self.kind, 'lr': self.param_groups[0]['lr'], 'count': self.count}
        if self.kind in ('hig', 'gn'):
            out['hig'] = self.state.state_dict() if self.state is not None else self.saved
        else:
            import jax
            out['arrays'] = [np.asarray(v).tolist() for v in jax.tree_util.tree_leaves(self.state)] \
                if self.state is not None else self.saved
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict` (applied, with the torch network's weights, before the next step)."""
        if not isinstance(state, dict) or state.get('kind') != self.kind:
            raise InvalidInputError(f"a {self.kind} state on JAX is a JaxTrainer.state_dict() of kind {self.kind!r}, "
                                    f"got {state.get('kind') if isinstance(state, dict) else type(state).__name__!r}")
        self.param_groups[0]['lr'] = state['lr']
        self.count = int(state['count'])
        self.saved = state.get('hig' if self.kind in ('hig', 'gn') else 'arrays')
        self.bound = False

    def mirror(self, net) -> None:
        """Copy the twin's weights into the torch network ``net`` (stax's ``(in, out)`` weights transposed)."""
        import torch
        leaves = [np.asarray(v) for layer in self.twin.parameters for v in layer]
        with torch.no_grad():
            params = [p for m in net for p in m.parameters()]
            for p, v in zip(params, leaves):
                p.copy_(torch.from_numpy(np.ascontiguousarray(v.T if p.ndim == 2 else v)).to(p.dtype))


_STEPS: Dict[tuple, object] = {}
"""Compiled first-order steps by (twin, simulate, loss, kind, hyperparameters): shared by methods and seeds."""


def _as_jax(value):
    """A torch tensor as a JAX array; tuples, lists and dicts of them likewise; anything else unchanged."""
    import jax.numpy as jnp
    import torch
    if isinstance(value, torch.Tensor):
        return jnp.asarray(value.detach().cpu().numpy())
    if isinstance(value, (tuple, list)):
        return type(value)(_as_jax(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_jax(v) for k, v in value.items()}
    return value


def _first_order_step(method, inputs, targets) -> float:
    """One jitted Adam / SGD step of the twin on the batch-mean loss through the experiment's JAX physics."""
    import jax
    trainer: JaxTrainer = method.optimizer
    checks.learning_rates(trainer.param_groups, f"{method.name}: ")
    trainer.bind(method.net)
    key = (id(trainer.twin), method.simulate, method.loss, trainer.kind, trainer.param_groups[0]['lr'],
           tuple(sorted((k, v) for k, v in trainer.hyper.items() if not isinstance(v, dict))))
    if key not in _STEPS:
        _, update, get_params = trainer.first_order()
        simulate, loss, twin, clip = method.simulate, method.loss, trainer.twin, method.clip

        def objective(params, x, t, conditions):
            from ..convert import Conditions
            from ..hig.jax_jacobian import call_with_parameters
            return loss(Conditions(conditions).call(simulate, call_with_parameters(twin, params, x)), t).mean()

        def step(i, state, x, t, conditions):
            value, grads = jax.value_and_grad(objective)(get_params(state), x, t, conditions)
            if clip is not None:
                from jax.example_libraries.optimizers import clip_grads
                grads = clip_grads(grads, clip)
            new = update(i, grads, state)
            return value, new, get_params(new)
        _STEPS[key] = jax.jit(step)
    value, new, params = _STEPS[key](trainer.count, trainer.state, _as_jax(inputs), _as_jax(targets),
                                     _as_jax(method.conditions(inputs, targets)))
    value = float(value)
    if not math.isfinite(value):
        raise NonFiniteStepError(f"{method.name}: the loss is not finite; the weights were left untouched")
    trainer.state, trainer.count = new, trainer.count + 1
    trainer.twin.parameters = params
    trainer.mirror(method.net)
    return value


def _half_inverse_step(method, inputs, targets) -> float:
    """One `phi_hig.hig_step` of the twin through the experiment's JAX physics; its diagnostics become
    ``method.last_info``."""
    from ..hig.optimizer import hig_step
    trainer: JaxTrainer = method.optimizer
    trainer.bind(method.net)
    trainer.state.param_groups[0]['lr'] = trainer.param_groups[0]['lr']
    method.last_info = hig_step(trainer.twin, trainer.state, _as_jax(inputs), _as_jax(targets), method.simulate,
                                method.loss, _as_jax(method.conditions(inputs, targets)))
    trainer.count += 1
    trainer.mirror(method.net)
    return method.last_info.loss


def jax_builders() -> dict:
    """``{kind: Builder}`` for `JAX_KINDS` (`phi_hig.training.kinds.add_builder` registers them)."""
    from .steps import Builder

    def build(kind):
        def make(params, hyper):
            return JaxTrainer(kind, hyper)
        return make
    return {k: Builder(build(k), _half_inverse_step if k in ('hig', 'gn') else _first_order_step) for k in JAX_KINDS}
