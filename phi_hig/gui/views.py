"""What the dashboard shows of one held-out example: prediction next to ground truth, as plain NumPy data.

`example_view(experiment, net)` returns a view dict (no dash, no plotly)::

    {'mode': 'field' | 'vector' | 'curve',
     'truth': [(title, array), ...],          # shared by all methods
     'prediction': [(title, array), ...],     # this network
     'x': array or None}                      # abscissa in 'curve' mode

Display arrays: rank 2 = an image indexed (y, x), drawn with y up; rank 1 = a line; (2, y, x) = a vector field.

Grids follow PhiFlow's index order ``(x, y)`` (what ``tensor.numpy('x,y')`` gives and what the experiments
store in torch tensors) and are drawn PhiFlow-style: x to the right, y up.

An experiment takes over with a ``visualize(net, inputs, targets)`` attribute (inputs and targets hold one
example, batch size 1; called without gradients) returning ``{'truth': {title: array}, 'prediction':
{title: array}}`` (or lists of (title, array) pairs), arrays as the data (channel-first, ``(x, y)``): each
goes through `panels`, so ``(2, x, y)`` titled '... velocity ...' becomes arrows on the speed. Registered
experiments without one may have a view here in `VIEWS` (the fluid: marker and velocity). Otherwise:

* scalar inputs and at most 8 outputs per example (the toy problem): the simulated output of the whole
  held-out set against the targets, as curves over the input ('curve');
* grids — torch ``(b, C, x, y)``, ``(b, x, y)``, ``(b, x·y)`` with x·y a square >= 64, PhiML tensors or
  PhiFlow grids with two spatial dims — as images ('field'); when the network output z is a grid of its own
  (SIP: the reconstructed state), it is shown too, and target channels are lined up with it by shape;
* anything else as line plots over the component index ('vector').
"""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

__all__ = ['example_view', 'to_example_arrays', 'panels', 'image', 'forward', 'VIEWS']

CURVE_POINTS = 400


def _is_torch(v) -> bool:
    return type(v).__module__.startswith('torch') and hasattr(v, 'detach')


def _is_field(v) -> bool:
    return type(v).__name__ == 'Field' and type(v).__module__.startswith('phi.')


def _is_phiml(v) -> bool:
    return type(v).__module__.startswith('phiml') and hasattr(v, 'shape') and hasattr(v.shape, 'batch')


def take(v, index: int = 0, n: int = 1):
    """Examples ``index .. index+n`` of a batch: torch (first dim), PhiML tensor / PhiFlow field (first batch
    dim), or a tuple / list of these."""
    if isinstance(v, (tuple, list)):
        return type(v)(take(e, index, n) for e in v)
    if _is_torch(v):
        return v[index:index + n]
    if _is_phiml(v) or _is_field(v):
        b = v.shape.batch
        return v[{b.names[0]: slice(index, index + n)}] if b else v
    if isinstance(v, np.ndarray):
        return v[index:index + n]
    return v


def to_example_arrays(v) -> List[Tuple[str, np.ndarray]]:
    """The first example of a batched value as NumPy arrays without the batch dimension.

    Returns a list of (suffix, array): one entry for a tensor or field, one per element for tuples.
    PhiML tensors come out channel-first ``(C, *spatial)``; staggered PhiFlow grids are sampled at the cell
    centres first. A PhiML channel dim with item names x, y on a 2-D grid gets the suffix 'velocity'.
    """
    if isinstance(v, (tuple, list)):
        out = []
        for i, e in enumerate(v):
            out += [((f'{i}' + (f' {s}' if s else '')), a) for s, a in to_example_arrays(e)]
        return out
    if _is_torch(v):
        return [('', v.detach().cpu().double().numpy()[0] if v.ndim else v.detach().cpu().double().numpy())]
    if isinstance(v, np.ndarray):
        return [('', np.asarray(v, dtype=float)[0] if v.ndim else np.asarray(v, dtype=float))]
    suffix = ''
    if _is_field(v):
        if getattr(v, 'is_staggered', False):
            v = v.at_centers()
        v = v.values
    if _is_phiml(v):
        for dim in v.shape.batch.names:
            v = v[{dim: 0}]
        shape = v.shape
        channel, spatial = shape.channel, shape.spatial
        other = [n for n in shape.names if n not in channel.names + spatial.names]
        order = tuple(other) + channel.names + spatial.names
        item_names = channel.item_names[0] if channel.rank == 1 and channel.item_names else None
        if spatial.rank == 2 and channel.rank == 1 and channel.size == 2 and item_names and \
                tuple(item_names) in (('x', 'y'), ('y', 'x')):
            suffix = 'velocity'
        arr = np.asarray(v.numpy(order), dtype=float)
        return [(suffix, arr)]
    return [('', np.asarray(v, dtype=float))]


def image(a: np.ndarray) -> np.ndarray:
    """A grid indexed ``(x, y)`` (PhiFlow's order, as ``tensor.numpy('x,y')``) as an image indexed ``(y, x)``
    (drawn with y up, x to the right)."""
    return np.ascontiguousarray(np.asarray(a, dtype=float).T)


def panels(title: str, arr: np.ndarray) -> List[Tuple[str, np.ndarray]]:
    """Split one example array into drawable panels.

    Grids are read in PhiFlow's index order ``(x, y)`` and returned as display images (`image`): rank-2
    arrays, channel-first ``(C, x, y)`` (a panel per channel, at most 4; channels-last when the first axis is
    long and the last short) and flat vectors whose length is a square >= 64 (``x·y``). ``(2, x, y)`` with
    'velocity' in the title becomes a vector field ``(2, y, x)``.
    Everything else becomes lines: ``(C, n)`` or ``(n, C)`` a line per component, ``(n,)`` one line.
    """
    a = np.asarray(arr, dtype=float)
    while a.ndim > 3:  # e.g. (C, T, x, y): first slice
        a = a[0]
    if a.ndim == 3:
        if a.shape[0] > 4 and a.shape[-1] <= 4:  # channels last
            a = np.moveaxis(a, -1, 0)
        if a.shape[0] == 2 and 'velocity' in title:
            return [(title, np.stack([image(a[0]), image(a[1])]))]
        if a.shape[0] == 1:
            return [(title, image(a[0]))]
        return [(f'{title} [{c}]', image(a[c])) for c in range(min(a.shape[0], 4))]
    if a.ndim == 2:
        if min(a.shape) >= 4:
            return [(title, image(a))]
        if a.shape[0] <= 4 and a.shape[1] > 4:  # (C, n): each channel on its own (a flat grid or a line)
            return [p for c in range(a.shape[0]) for p in panels(f'{title} [{c}]', a[c])]
        if a.shape[1] <= 4:  # (n, C): e.g. a trajectory of C components
            return [(f'{title} [{c}]', a[:, c]) for c in range(a.shape[1])] if a.shape[0] > 1 else [(title, a[0])]
        return [(title, a.reshape(-1))]
    if a.ndim == 1:
        s = math.isqrt(a.size)
        if s * s == a.size and a.size >= 64:
            return [(title, image(a.reshape(s, s)))]
        return [(title, a)]
    return [(title, a.reshape(1))]


def _field_panels(title: str, value) -> List[Tuple[str, np.ndarray]]:
    out = []
    for suffix, arr in to_example_arrays(value):
        out += panels(f'{title} {suffix}'.strip(), arr)
    return out


def _normalize_hook(out) -> dict:
    view = {'x': out.get('x')}
    for key in ('truth', 'prediction'):
        items = out.get(key, [])
        items = items.items() if isinstance(items, dict) else items
        view[key] = [p for t, a in items for p in panels(str(t), _array(a))]
    view['mode'] = out.get('mode') or ('field' if any(a.ndim >= 2 for _, a in view['truth'] + view['prediction'])
                                       else 'vector')
    return view


def _array(a) -> np.ndarray:
    if _is_torch(a):
        return a.detach().cpu().double().numpy()
    if _is_phiml(a):
        return np.asarray(a.numpy(a.shape.channel.names + a.shape.spatial.names), dtype=float)
    return np.asarray(a, dtype=float)


def _has_batchnorm(net) -> bool:
    from torch import nn
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in net.modules())


def forward(net, inputs, index: int = 0, n: int = 8):
    """``(net output, inputs used)`` for held-out examples starting at ``index``, without side effects on the
    network: one example normally; up to ``n`` examples through a copy of the network when it has batch
    normalization in training mode (a single example cannot be normalized over the batch, and running the
    original would update its running statistics)."""
    x = _to(take(inputs, index, _forwarded(net, n)), _device(net))
    if _has_batchnorm(net):
        import copy
        return copy.deepcopy(net)(x), x
    return net(x), x


def _forwarded(net, n: int = 8) -> int:
    """How many examples `forward` runs through ``net``: ``n`` with batch normalization in training mode, else 1."""
    return n if _has_batchnorm(net) else 1


def _device(net):
    try:
        return next(net.parameters()).device
    except (StopIteration, AttributeError):
        return None


def _to(v, device):
    if device is None:
        return v
    if isinstance(v, (tuple, list)):
        return type(v)(_to(e, device) for e in v)
    return v.to(device) if _is_torch(v) else v


def example_view(experiment, net, index: int = 0) -> dict:
    """The view of held-out example ``index`` under ``net`` (see the module docstring for the format)."""
    import torch
    inputs, targets = experiment.test_set
    device = _device(net)
    with torch.no_grad():
        hook = getattr(experiment, 'visualize', None)
        if callable(hook):
            return _normalize_hook(hook(net, _to(take(inputs, index), device), take(targets, index)))
        builtin = VIEWS.get(getattr(experiment, 'name', None))
        if builtin is not None:
            return _normalize_hook(builtin(experiment, net, take(inputs, index), take(targets, index)))
        from ..experiments.base import identity, no_conditions
        simulate = None if experiment.simulate is identity else experiment.simulate  # None: no physics to show
        if _is_torch(inputs) and _is_torch(targets) and inputs.ndim >= 1 and inputs[0].numel() == 1 \
                and 1 <= targets[0].numel() <= 8:
            x = _to(inputs[:CURVE_POINTS], device)
            z = net(x)
            y = experiment.simulate_batch(z, x, _to(targets[:CURVE_POINTS], device)) if simulate is not None else z
            xs = x.reshape(x.shape[0]).double().cpu().numpy()
            order = np.argsort(xs)
            ys = y.reshape(y.shape[0], -1).double().cpu().numpy()[order]
            ts = targets[:CURVE_POINTS].reshape(x.shape[0], -1).double().cpu().numpy()[order]
            prediction = [(f'y{i + 1}', ys[:, i]) for i in range(ys.shape[1])]
            zs = z.reshape(z.shape[0], -1).double().cpu().numpy()[order]
            if simulate is not None and ts.shape[1] == ys.shape[1] + zs.shape[1] and \
                    experiment.conditions is no_conditions:
                # targets packed as (y*, x*): show the network output next to x* (with conditions, the targets'
                # rest may be the conditions, e.g. sin(a/x)'s (y*, a))
                prediction += [(f'network output z{i + 1}', zs[:, i]) for i in range(zs.shape[1])]
            return {'mode': 'curve', 'x': xs[order],
                    'truth': [(f'target y{i + 1}', ts[:, i]) for i in range(ts.shape[1])], 'prediction': prediction}
        z, x = forward(net, inputs, index)
        y = experiment.simulate_batch(z, x, _to(take(targets, index, _forwarded(net)), device)) \
            if simulate is not None else z
        truth = _field_panels('target', take(targets, index))
        prediction = _field_panels('prediction', y)
        if simulate is not None:
            z_panels = _field_panels('network output', z)
            if any(a.ndim >= 2 for _, a in z_panels):
                prediction = z_panels + prediction
                truth = _align(truth, prediction)
        mode = 'field' if any(a.ndim >= 2 for _, a in truth + prediction) else 'vector'
        return {'mode': mode, 'x': None, 'truth': truth, 'prediction': prediction}


def _align(truth, prediction):
    """Order the target panels like the prediction row (network output z, then simulated y) by shape. Targets
    packed as channels (y*, x*) — the convention of the SIP experiments — then line up as (x*, y*) under
    (z, y): for the network output the last target of matching shape is taken, for the rest the first."""
    rest, ordered = list(truth), []
    for i, (_, a) in enumerate(prediction):
        candidates = [p for p in rest if p[1].shape == a.shape]
        if candidates:
            match = candidates[-1] if i == 0 else candidates[0]
            rest.remove(match)
            ordered.append(match)
    return ordered + rest


def fluid_view(experiment, net, inputs, targets) -> dict:
    """The fluid experiment: final marker m_t and initial velocity v₀ (arrows on |v₀|), predicted and true.

    Tensors as in `phi_hig.experiments.fluid`: inputs (b, 2, x, y) = (m₀, m_t), targets (b, 4, x, y) =
    (m_t, m₀, v₀ˣ, v₀ʸ), network output z = (vˣ, vʸ, m₀).
    """
    z, _ = forward(net, experiment.test_set[0])  # the U-net's batch norm needs more than one example
    t = targets[0].detach().cpu().double().numpy()
    y = experiment.simulate(z[:1])
    return {'truth': [('marker m_t', t[0]), ('velocity v0', t[2:4]), ('marker m0', t[1])],
            'prediction': [('marker m_t', y[0, 0].detach().cpu().double().numpy()),
                           ('velocity v0', z[0, :2].detach().cpu().double().numpy())]}


VIEWS = {'fluid': fluid_view}
"""Views for registered experiments that have no ``visualize`` attribute, by experiment name:
``view(experiment, net, inputs, targets) -> {'truth': ..., 'prediction': ...}`` (one example, batch 1)."""
