"""HIG, Gauss–Newton and GD on PhiML's JAX networks: the optimizer state and the compiled training step.

``phi_hig.HIG(net, …)`` returns a `JaxHIG` when ``net`` is a PhiML JAX network (``StaxNet``) and
``phi_hig.hig_step(net, opt, inputs, targets, simulate, loss)`` runs `jax_hig_step`: the same API, settings,
diagnostics and spectral core (`phi_hig.hig.spectral.apply_half_inverse`) as on torch, JAX end to end (no torch
tensor is created). What is compiled, and when:

* the network + physics Jacobian pass and the loss gradient (`phi_hig.hig.jax_jacobian.jacobian_pass`): one
  ``jax.jit`` function per network structure, ``simulate``, ``loss`` and the kinds and static parts of inputs,
  targets and conditions (a Field's grid, a Tensor's shape) — a second step of the same shapes, a new batch of
  data and a changed learning rate reuse it (pass the same ``simulate`` and ``loss`` objects every step: a new
  lambda each step is a new function and compiles again);
* the float64 Gram matrix, ``Jᵀc`` and J (`phi_hig.hig.jax_jacobian.StaxStructure`), ``eigh`` and the kept-
  spectrum product (`phi_hig.hig.arrays.JaxOps`), and the update (the learning rate is an argument).

The path choice and the cut-off run on the host from a copy of the Gram eigenvalues. A step whose Gram matrix is
small (`phi_hig.hig.jax_fused.fusable`, e.g. the HIG paper's toy) is instead one compiled call, pass, spectral core
and update (`phi_hig.hig.jax_fused`; its `HIGStepInfo` counts the whole call as ``time_jacobian`` and
``time_linalg = 0``); whatever that call flags (an 'auto' fallback to the SVD, non-finite values) is discarded and
made by the staged step, which decides and raises as above.
`phi_hig.hig.arrays.TRACES` counts how often each compiled function was traced (a test hook).

**The x64 rule.** The Gram matrix, its eigendecomposition and the coefficients are float64, computed inside
``jax.enable_x64`` whatever JAX's global setting; a float32 network stays float32 (its pass, its update); the
global setting is never changed. **The StaxNet workaround.** PhiML 1.16 leaves ``net.parameters = None`` when a
network is built at precision 64 (``StaxNet.initialize`` only sets them below 64 bit): build it at the default
precision and cast the weights with `cast_parameters` (``jax_enable_x64`` must be set for float64 weights; PhiML's
JAX backend sets it when imported).
"""
from __future__ import annotations

import dataclasses
import time
import weakref
from typing import Callable, NamedTuple, Optional

import numpy as np
import jax
import jax.numpy as jnp

from .. import checks
from ..backend import is_jax_array, x64
from ..convert import BatchLayout, Conditions, NetworkCall
from ..errors import HIGUsageError, InvalidInputError, NonFiniteStepError
from .arrays import TRACES
from .jax_jacobian import JaxJacobian, StaxStructure, call_with_parameters, jacobian_pass
from .jacobian import DEFAULT_CHUNK_ROWS
from .jax_fused import call_fused, fusable, fused_result, fused_step
from .options import HIGStepInfo, reported_path, validated_arguments
from .spectral import AUTO, DEFAULT_MAX_BYTES, HalfInverse, apply_half_inverse, gram_path

__all__ = ['JaxHIG', 'jax_hig_step', 'jax_hig_direction', 'JaxDirection', 'cast_parameters', 'require_parameters',
           'SETTING_KEYS']

SETTING_KEYS = tuple(f.name for f in dataclasses.fields(HalfInverse))
"""The `HalfInverse` settings a `JaxHIG` keeps in ``param_groups[0]`` beside ``lr``."""
_CACHE_SIZE = 8
_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
"""Per network: its `StaxStructure` s and compiled passes by key, shared by every `JaxHIG` built on it (a new
optimizer on the same network, e.g. Gauss–Newton after HIG, compiles nothing again)."""


def require_parameters(net) -> list:
    """The leaves of ``net.parameters`` (flattened), refused unless they are floating-point JAX arrays.

    Raises:
        InvalidInputError: ``net.parameters`` is None (the StaxNet workaround: module docstring) or holds anything
            else than floating-point JAX arrays.
    """
    if getattr(net, 'parameters', None) is None:
        raise InvalidInputError(
            "net.parameters is None: PhiML 1.16 initializes a StaxNet's parameters only below 64-bit precision. "
            "Build the network at the default precision (math.precision 32) and, for float64 weights, cast them "
            "with phi_hig.hig.cast_parameters(net, 'float64') (with jax_enable_x64 set)")
    leaves = jax.tree_util.tree_leaves(net.parameters)
    if not leaves:
        raise InvalidInputError("HIG got no parameters: the network has none")
    for leaf in leaves:
        if not is_jax_array(leaf) or not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise InvalidInputError(f"the parameters of a JAX network must be floating-point JAX arrays, got "
                                    f"{type(leaf).__name__} {getattr(leaf, 'dtype', '')}")
    return leaves


def cast_parameters(net, dtype) -> None:
    """Cast every leaf of ``net.parameters`` to ``dtype`` (e.g. ``'float64'``), in place of the old pytree.

    Raises:
        InvalidInputError: the parameters are None or not JAX arrays, or JAX would truncate ``dtype`` (float64
            without ``jax_enable_x64``: the network would silently stay float32).
    """
    require_parameters(net)
    cast = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=dtype), net.parameters)
    got = jax.tree_util.tree_leaves(cast)[0].dtype
    if got != np.dtype(dtype):
        raise InvalidInputError(f"JAX made the parameters {got}, not {np.dtype(dtype)}: float64 needs "
                                f"jax.config.update('jax_enable_x64', True) (PhiML's JAX backend sets it)")
    net.parameters = cast


class JaxHIG:
    """Half-inverse gradients (κ = −1/2), Gauss–Newton (κ = −1) or GD (κ = +1) for a PhiML JAX network.

    Built by ``phi_hig.HIG(net, …)`` with the same arguments as the torch `phi_hig.hig.HIG`; the update is made by
    ``phi_hig.hig_step``. The learning rate and the settings live in ``param_groups[0]`` (validated at every step),
    so they may change between steps without compiling anything again. `state_dict` is plain numbers and strings
    (JSON, no pickle); the weights are the network's (``phiml.nn.save_state``).

    Args:
        net: a PhiML JAX network (``StaxNet``) with parameters (see `require_parameters`).
        learning_rate (or lr), truncation, kappa, beta, relative, path, max_bytes, structured, method: as for
            the torch `HIG` (``structured``: None: Dense / Conv layers as factors, other leaves as a dense block;
            False: every leaf in the dense block; True: refuse leaves outside such layers). ``chunk_rows`` is
            accepted and unused (the JAX pass is one vmapped backward pass).
    """

    def __init__(self, net, learning_rate: float = 1.0, truncation: float = 1e-6, kappa: float = -0.5,
                 beta: float = 0.0, relative: bool = True, path: str = AUTO,
                 max_bytes: Optional[float] = DEFAULT_MAX_BYTES, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 structured: Optional[bool] = None, *, lr: Optional[float] = None, method: Optional[str] = None):
        lr, settings, options = validated_arguments(learning_rate, truncation, kappa, beta, relative, path, max_bytes,
                                                    chunk_rows, structured, lr, method)
        require_parameters(net)
        self.param_groups = [dict(lr=lr, **{k: getattr(settings, k) for k in SETTING_KEYS})]
        self.max_bytes, self.structured = options['max_bytes'], options['structured']
        self._net = weakref.ref(net)
        self._n_out = None

    @property
    def settings(self) -> HalfInverse:
        """The validated `HalfInverse` settings read from ``param_groups[0]`` (validated again whenever they change)."""
        values = tuple((type(v), v) for v in (self.param_groups[0][k] for k in SETTING_KEYS))
        if getattr(self, '_validated', (None,))[0] != values:
            self._validated = (values, HalfInverse(**dict(zip(SETTING_KEYS, (v for _, v in values)))))
        return self._validated[1]

    def step(self, closure=None):
        """Not available: use ``phi_hig.hig_step(net, optimizer, inputs, targets, simulate, loss)``."""
        raise HIGUsageError(_USAGE)

    def zero_grad(self, *args, **kwargs):
        """What ``phiml.nn.update_weights`` calls when PhiML's default backend is torch: refused (`HIGUsageError`)."""
        raise HIGUsageError(_USAGE)

    def update(self, *args, **kwargs):
        """What ``phiml.nn.update_weights(net, optimizer, loss, …)`` calls: refused (`HIGUsageError`), because a
        summed scalar loss cannot give per-sample Jacobians; use ``phi_hig.hig_step``."""
        raise HIGUsageError(_USAGE)

    def state_dict(self) -> dict:
        """``{'param_groups': [{lr, settings…}], 'n_out': |y| or None}``: numbers, booleans and strings only."""
        return {'param_groups': [dict(g) for g in self.param_groups], 'n_out': self._n_out}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict` (validated first: all or nothing)."""
        groups = state.get('param_groups') if isinstance(state, dict) else None
        if not isinstance(groups, list) or len(groups) != 1 or set(groups[0]) != {'lr', *SETTING_KEYS}:
            raise InvalidInputError(f"state must be a JaxHIG.state_dict() with one parameter group holding lr and "
                                    f"{', '.join(SETTING_KEYS)}, got {state!r}")
        HalfInverse(**{k: groups[0][k] for k in SETTING_KEYS})
        checks.learning_rates(groups)
        n_out = state.get('n_out')
        self.param_groups = [dict(groups[0])]
        self._n_out = None if n_out is None else checks.integer('n_out', n_out, low=1)

    def structure(self, net, leaves: list, treedef, x) -> StaxStructure:
        """The network's `StaxStructure` for these parameter and input shapes (built on first use, then kept)."""
        structures = _compiled(net)['structures']
        key = (treedef, tuple((leaf.shape, leaf.dtype) for leaf in leaves), x.shape, x.dtype, self.structured)
        if key not in structures:
            ref = weakref.ref(net)  # the cache is keyed weakly by the network: hold it weakly here too

            def apply(values, inputs):
                return call_with_parameters(ref(), jax.tree_util.tree_unflatten(treedef, values), inputs)
            _remember(structures, key, StaxStructure(apply, leaves, x, self.structured))
        return structures[key]


_USAGE = ("HIG needs the per-sample Jacobian of network and physics, which a summed scalar loss cannot provide "
          "(phiml.nn.update_weights / optimizer.step). Make the update with phi_hig.hig_step(net, optimizer, inputs, "
          "targets, simulate, loss), where loss(y, targets) returns the loss per sample.")


def _compiled(net) -> dict:
    if net not in _COMPILED:
        _COMPILED[net] = {'structures': {}, 'passes': {}, 'fused': {}}
    return _COMPILED[net]


def _remember(cache: dict, key, value) -> None:
    while len(cache) >= _CACHE_SIZE:
        cache.pop(next(iter(cache)))
    cache[key] = value


# ------------------------------------------------------------------------- user values as natives + static recipes

class _Recipe:
    """How to rebuild a user value (array, PhiML tensor, Field, tuple / list / dict of them, or a static object)
    from its native arrays inside a trace; hashable on its static parts (a Field's grid and boundary, a Tensor's
    shape), so that equal recipes share one compiled function."""

    def __init__(self, value, name: str):
        from phi.field import Field
        from phiml import math
        self.natives, self.template = [], None
        if isinstance(value, Field):
            self.kind, values = 'field', value.values
            self.template, self.shape = value, values.shape
            self.key = (self.kind, values.shape, _hashable(value.geometry), _hashable(value.boundary))
            self.natives = [values.native(values.shape)]
        elif isinstance(value, math.Tensor):
            self.kind, self.shape, self.key = 'tensor', value.shape, ('tensor', value.shape)
            self.natives = [value.native(value.shape)]
        elif is_jax_array(value) or isinstance(value, np.ndarray):
            self.kind, self.key, self.natives = 'array', ('array',), [value]
        elif isinstance(value, (tuple, list, dict)):
            self.kind = type(value).__name__
            items = value.items() if isinstance(value, dict) else enumerate(value)
            self.items = {k: _Recipe(v, f'{name}[{k!r}]') for k, v in items}
            self.key = (self.kind, tuple((k, r.key) for k, r in self.items.items()))
            self.natives = [n for r in self.items.values() for n in r.natives]
        elif type(value).__module__.startswith('torch'):
            raise InvalidInputError(f"{name} is a torch tensor, but the network is a JAX network; pass JAX arrays, "
                                    f"PhiML tensors or Fields on the JAX backend")
        else:
            self.kind, self.value, self.key = 'static', value, ('static', _hashable(value))

    def rebuild(self, natives: list):
        """The value with its native arrays taken from ``natives`` (consumed from the front)."""
        from phiml import math
        if self.kind == 'static':
            return self.value
        if self.kind == 'array':
            return natives.pop(0)
        if self.kind in ('tensor', 'field'):
            values = math.wrap(natives.pop(0), self.shape)
            return values if self.kind == 'tensor' else self.template.with_values(values)
        items = {k: r.rebuild(natives) for k, r in self.items.items()}
        return items if self.kind == 'dict' else (list if self.kind == 'list' else tuple)(items.values())


def _hashable(value):
    try:
        hash(value)
        return value
    except TypeError:
        return ('id', id(value))


def _compiled_pass(net, structure: StaxStructure, simulate, loss, recipe: _Recipe, b: int) -> tuple:
    """``(key, run, jax.jit(run), out_shapes)`` of the network + physics pass for these values (cached per network;
    ``out_shapes`` holds the shape of y once known)."""
    key = (id(structure), simulate, loss, recipe.key)
    passes = _compiled(net)['passes']
    if key in passes:
        return passes[key]

    ref = weakref.ref(net)

    def run(leaves, natives):
        TRACES['pass'] += 1
        inputs, targets, conditions = recipe.rebuild(list(natives))
        call = NetworkCall(ref(), inputs)
        layouts = []

        def simulate_flat(z_native):
            z = call.wrap(z_native)
            y = z if simulate is None else Conditions(conditions).call(simulate, z)
            if not layouts:
                layouts.append(BatchLayout(y, b, call.batch, backend='jax'))
            return layouts[0].flatten(y)

        def objective(y_flat):
            return layouts[0].per_example(loss(layouts[0].unflatten(y_flat), targets)).mean()
        return jacobian_pass(structure, leaves, call.native_inputs, simulate_flat, objective)
    _remember(passes, key, (key, run, jax.jit(run), []))
    return passes[key]


def _compiled_fused(net, prepared: "_Prepared", path: str):
    """The jitted `phi_hig.hig.jax_fused.fused_step` of this pass, static settings and path (cached per network)."""
    relative, auto = prepared.settings.relative, prepared.settings.path == 'auto'
    key = (prepared.pass_key, relative, auto, path)
    fused = _compiled(net)['fused']
    if key not in fused:
        _remember(fused, key, jax.jit(fused_step(prepared.structure, prepared.run, relative, auto, path)))
    return fused[key]


def _updated(leaves: list, direction, lr):
    """``θ − (lr·d).astype(θ.dtype)`` per leaf and whether every cast update is finite (compiled; lr an argument)."""
    TRACES['update'] += 1
    new, finite, offset = [], jnp.array(True), 0
    for leaf in leaves:
        step = (lr * direction[offset:offset + leaf.size]).reshape(leaf.shape).astype(leaf.dtype)
        finite = finite & jnp.isfinite(step).all()
        new.append(leaf - step)
        offset += leaf.size
    return new, finite


_update = jax.jit(_updated)


class JaxDirection(NamedTuple):
    """What `jax_hig_direction` computed: the direction ``d`` (float64, over the flattened parameter leaves), the
    `phi_hig.hig.spectral.SpectralInfo`, the batch-mean loss, its gradient ``g`` with respect to the stacked outputs
    ``(b·|y|,)``, the Jacobian operator and the seconds of the Jacobian pass and of the spectral core."""
    direction: object
    info: object
    loss: float
    gradient: object
    operator: JaxJacobian
    time_jacobian: float
    time_linalg: float


class _Prepared(NamedTuple):
    """A step's validated values, the path it starts on (`phi_hig.hig.spectral.gram_path`) and its compiled pass
    (`_prepare`)."""
    settings: HalfInverse
    path: str
    leaves: list
    treedef: object
    b: int
    recipe: _Recipe
    structure: StaxStructure
    pass_key: tuple
    run: Callable
    compiled: Callable


def _prepare(net, optimizer, inputs, targets, simulate, loss, conditions, group) -> _Prepared:
    """Every refusal of `jax_hig_direction` that needs no pass, then the step's structure and compiled pass."""
    if group not in (None, False):
        raise InvalidInputError("group=: distributed HIG steps (torch.distributed) are supported for torch networks "
                                "only; run the JAX step in one process")
    if not isinstance(optimizer, JaxHIG):
        raise InvalidInputError(f"optimizer must be phi_hig.HIG(net, ...) built on this JAX network, got "
                                f"{type(optimizer).__name__}")
    if optimizer._net() is not net:
        raise InvalidInputError("optimizer was built on another network: build phi_hig.HIG(net, ...) on this one")
    if not callable(loss):
        raise InvalidInputError(f"loss must be a callable loss(y, targets) -> per-example values, got "
                                f"{type(loss).__name__}")
    if simulate is not None and not callable(simulate):
        raise InvalidInputError(f"simulate must be None or a callable z -> y, got {type(simulate).__name__}")
    settings = optimizer.settings
    require_parameters(net)
    leaves, treedef = jax.tree_util.tree_flatten(net.parameters)
    call = NetworkCall(net, inputs)
    x = call.native_inputs
    if x.ndim == 0 or x.shape[0] == 0:
        raise InvalidInputError(f"inputs must hold at least one example, got a batch of shape {tuple(x.shape)}")
    b = int(x.shape[0])
    if optimizer._n_out:  # |y| known from the last step: refuse a too large Gram before any pass
        gram_path(settings, b * optimizer._n_out, sum(int(leaf.size) for leaf in leaves), optimizer.max_bytes)
    Conditions(conditions)  # the form (a dict's keys are names), refused before anything runs
    recipe = _Recipe((call.inputs, targets, conditions), 'inputs, targets, conditions')
    structure = optimizer.structure(net, leaves, treedef, x)
    pass_key, run, compiled, out_shapes = _compiled_pass(net, structure, simulate, loss, recipe, b)
    if not out_shapes:  # traced once, not run; the compiled pass finds this trace again
        out_shapes.append(jax.eval_shape(compiled, leaves, recipe.natives)[0].shape)
    optimizer._n_out = int(out_shapes[0][1])
    path = gram_path(settings, b * optimizer._n_out, structure.n_params, optimizer.max_bytes)
    return _Prepared(settings, path, leaves, treedef, b, recipe, structure, pass_key, run, compiled)


def jax_hig_direction(net, optimizer: JaxHIG, inputs, targets, simulate: Optional[Callable], loss: Callable, *,
                      conditions=None, group=None) -> JaxDirection:
    """The HIG / Gauss–Newton direction ``d = max(σ)^β·V Λ^κ Uᵀ g`` of one `jax_hig_step`, without changing the
    weights (arguments and refusals as there): the step is ``θ ← θ − lr·d``. Always staged (never
    `phi_hig.hig.jax_fused`): the pass, then `phi_hig.hig.spectral.apply_half_inverse`."""
    t0 = time.perf_counter()
    return _direction(optimizer, _prepare(net, optimizer, inputs, targets, simulate, loss, conditions, group), t0)


def _direction(optimizer: JaxHIG, prepared: _Prepared, t0: float) -> JaxDirection:
    y, layer_inputs, deltas, block, value, g = jax.block_until_ready(
        prepared.compiled(prepared.leaves, prepared.recipe.natives))
    mean_loss = float(value)
    if not np.isfinite(mean_loss):
        raise NonFiniteStepError("the loss is not finite (NaN or Inf); the weights were left untouched")
    if not np.isfinite(np.asarray(g)).all():
        raise NonFiniteStepError("the loss gradient g is not finite (NaN or Inf); the weights were left untouched")
    operator = JaxJacobian(prepared.structure, y, layer_inputs, deltas, block, optimizer.max_bytes)
    t1 = time.perf_counter()
    d, info = apply_half_inverse(prepared.settings, operator, g, max_bytes=optimizer.max_bytes)
    jax.block_until_ready(d)
    return JaxDirection(d, info, mean_loss, g, operator, t1 - t0, time.perf_counter() - t1)


def _fused(net, optimizer: JaxHIG, prepared: _Prepared, lr: float, t0: float) -> Optional[HIGStepInfo]:
    """The step as one compiled call (`phi_hig.hig.jax_fused`) when its path is fusable; None (nothing changed) when
    it is not or when the fused step flags a case the staged step must decide."""
    n_rows, n_params, path = prepared.b * optimizer._n_out, prepared.structure.n_params, prepared.path
    if not fusable(path, n_rows, n_params):
        return None
    if path == 'gram':
        prepared.structure.check_blocks(n_rows, optimizer.max_bytes)
    else:
        checks.check_size("The Jacobian J (float64)", (n_rows, n_params), 8, optimizer.max_bytes)
    new, report = call_fused(_compiled_fused(net, prepared, path), prepared.leaves, prepared.recipe.natives, lr,
                             prepared.settings)
    done = fused_result(report, path)
    if done is None:
        return None
    net.parameters = jax.tree_util.tree_unflatten(prepared.treedef, new)
    loss, info = done
    elapsed = time.perf_counter() - t0
    return HIGStepInfo(loss, info.singular_values, info.rank, info.sigma_max,
                       _reported_path(info.path, prepared.structure), elapsed, 0.0, elapsed)


def _reported_path(path: str, structure: StaxStructure) -> str:
    """`phi_hig.hig.options.reported_path` for this structure (no leaf in the dense block: structured)."""
    return reported_path(path, not structure.rest, bool(structure.rest and structure.layers))


def jax_hig_step(net, optimizer: JaxHIG, inputs, targets, simulate: Optional[Callable], loss: Callable, *,
                 conditions=None, group=None) -> HIGStepInfo:
    """One HIG / Gauss–Newton update of a PhiML JAX network's parameters: `phi_hig.hig_step` on JAX.

    ``y = simulate(net(inputs), *conditions)`` (Fields, PhiML tensors on the JAX backend, or batch-first JAX
    arrays; the network called like ``field.native_call`` / ``math.native_call``), ``g`` = gradient of the
    batch-mean of ``loss(y, targets)``, and ``θ ← θ − lr·max(σ)^β·V Λ^κ Uᵀ g`` from the float64 spectral core
    (`jax_hig_direction`). ``net.parameters`` is replaced by the updated pytree, as ``phiml.nn.update_weights``
    does. Invariant: the whole update is applied or, on error, none of it.

    Args:
        conditions: per-example (or shared) inputs of the physics: a tuple (``simulate(z, *conditions)``), a dict
            (``simulate(z, **conditions)``) or a single value (``simulate(z, conditions)``), the rule of
            `phi_hig.convert.Conditions`. The physics runs on the whole batch, so batched values are passed as they
            are, aligned with z.
        group: must be None or False: distributed HIG on JAX is not supported.

    Raises:
        InvalidInputError, NonFiniteStepError, JacobianTooLargeError: as `phi_hig.hig_step`.
    """
    if isinstance(optimizer, JaxHIG):  # a bad learning rate is refused before any work (else: refused below)
        checks.learning_rates(optimizer.param_groups)
    t0 = time.perf_counter()
    prepared = _prepare(net, optimizer, inputs, targets, simulate, loss, conditions, group)
    lr, = checks.learning_rates(optimizer.param_groups)
    fused = _fused(net, optimizer, prepared, lr, t0)
    if fused is not None:
        return fused
    found = _direction(optimizer, prepared, t0)
    t2 = time.perf_counter()
    leaves, treedef = jax.tree_util.tree_flatten(net.parameters)
    with x64():
        new, finite = _update(leaves, found.direction, lr)
        if not bool(finite):
            raise NonFiniteStepError("the update lr·d is not finite in the parameters' dtype (it overflows); the "
                                     "weights were left untouched")
    net.parameters = jax.tree_util.tree_unflatten(treedef, jax.block_until_ready(new))
    info = found.info
    time_linalg = found.time_linalg + time.perf_counter() - t2
    return HIGStepInfo(found.loss, info.singular_values, info.rank, info.sigma_max,
                       _reported_path(info.path, prepared.structure), found.time_jacobian, time_linalg,
                       found.time_jacobian + time_linalg)
