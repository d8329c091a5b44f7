"""What the dashboard shows of one held-out example: prediction next to ground truth, as plain NumPy data.

`example_view(experiment, net)` returns a view dict (no dash, no plotly)::

    {'mode': 'field' | 'vector' | 'curve',
     'truth': [(title, array), ...],          # shared by all methods
     'prediction': [(title, array), ...],     # this network
     'x': array or None}                      # abscissa in 'curve' mode

Arrays of rank 2 are drawn as images, rank 1 as lines, and arrays of shape (2, H, W) whose title contains
'velocity' as vector fields. An experiment can take over with a ``visualize(net, inputs, targets)`` attribute
(inputs and targets holding one example, batch size 1) returning ``{'truth': {title: array}, 'prediction':
{title: array}}`` (or lists of pairs). Without it:

* scalar inputs and at most 8 outputs per example (the toy problem): the simulated output of the whole
  held-out set against the targets, as curves over the input ('curve');
* outputs that are 2-D grids — torch ``(b, C, H, W)``, ``(b, H, W)``, ``(b, H·W)`` with H·W a square >= 16,
  PhiML tensors or PhiFlow grids with two spatial dims — as images ('field'); when the network output z is
  a grid of its own (SIP: the reconstructed state), it is shown as well;
* anything else as line plots over the component index ('vector').
"""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

__all__ = ['example_view', 'to_example_arrays', 'panels']

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


def _names(items) -> list:
    return list(items.names) if hasattr(items, 'names') else list(items)


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
        spatial_order = (spatial.names[1], spatial.names[0]) if spatial.rank == 2 else spatial.names
        order = tuple(other) + channel.names + spatial_order
        item_names = channel.item_names[0] if channel.rank == 1 and channel.item_names else None
        if spatial.rank == 2 and channel.rank == 1 and channel.size == 2 and item_names and \
                tuple(item_names) in (('x', 'y'), ('y', 'x')):
            suffix = 'velocity'
        arr = np.asarray(v.numpy(order), dtype=float)
        if spatial.rank == 2:  # (…, y, x) with y up -> image rows top-down
            arr = arr[..., ::-1, :]
        return [(suffix, arr)]
    return [('', np.asarray(v, dtype=float))]


def panels(title: str, arr: np.ndarray) -> List[Tuple[str, np.ndarray]]:
    """Split one example array into drawable panels: images (rank 2), lines (rank 1) or a vector field
    (shape (2, H, W), title containing 'velocity')."""
    a = np.asarray(arr, dtype=float)
    while a.ndim > 3:  # e.g. (C, T, H, W): first slice
        a = a[0]
    if a.ndim == 3:
        if a.shape[0] > 4 and a.shape[-1] <= 4:  # channels last
            a = np.moveaxis(a, -1, 0)
        if a.shape[0] == 2 and 'velocity' in title:
            return [(title, a)]
        if a.shape[0] == 1:
            return [(title, a[0])]
        return [(f'{title} [{c}]', a[c]) for c in range(min(a.shape[0], 4))]
    if a.ndim == 2:
        if min(a.shape) >= 4:
            return [(title, a)]
        if a.shape[0] <= 4 and a.shape[1] > 4:  # (C, n): a line per channel
            return [(f'{title} [{c}]', a[c]) for c in range(a.shape[0])]
        if a.shape[1] <= 4:  # (n, C): e.g. a trajectory of C components
            return [(f'{title} [{c}]', a[:, c]) for c in range(a.shape[1])] if a.shape[0] > 1 else [(title, a[0])]
        return [(title, a.reshape(-1))]
    if a.ndim == 1:
        s = math.isqrt(a.size)
        if s * s == a.size and a.size >= 16:
            return [(title, a.reshape(s, s))]
        return [(title, a)]
    return [(title, a.reshape(1))]


def _field_panels(title: str, value) -> List[Tuple[str, np.ndarray]]:
    out = []
    for suffix, arr in to_example_arrays(value):
        out += panels(f'{title} {suffix}'.strip(), arr)
    return out


def _normalize_hook(out) -> dict:
    view = {'mode': out.get('mode', 'field'), 'x': out.get('x')}
    for key in ('truth', 'prediction'):
        items = out.get(key, [])
        items = items.items() if isinstance(items, dict) else items
        view[key] = [(str(t), np.asarray(a, dtype=float)) for t, a in items]
    return view


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
        simulate = experiment.simulate
        if _is_torch(inputs) and _is_torch(targets) and inputs.ndim >= 1 and inputs[0].numel() == 1 \
                and 1 <= targets[0].numel() <= 8:
            x = inputs[:CURVE_POINTS]
            z = net(x.to(device) if device is not None else x)
            y = (simulate(z) if simulate is not None else z)
            xs = x.reshape(x.shape[0]).double().cpu().numpy()
            order = np.argsort(xs)
            ys = y.reshape(y.shape[0], -1).double().cpu().numpy()[order]
            ts = targets[:CURVE_POINTS].reshape(x.shape[0], -1).double().cpu().numpy()[order]
            return {'mode': 'curve', 'x': xs[order],
                    'truth': [(f'target y{i + 1}', ts[:, i]) for i in range(ts.shape[1])],
                    'prediction': [(f'y{i + 1}', ys[:, i]) for i in range(ys.shape[1])]}
        x0, t0 = _to(take(inputs, index), device), take(targets, index)
        z = net(x0)
        y = simulate(z) if simulate is not None else z
        truth = _field_panels('target', t0)
        prediction = _field_panels('prediction', y)
        if simulate is not None:
            z_panels = _field_panels('network output', z)
            if any(a.ndim >= 2 for _, a in z_panels):
                prediction = z_panels + prediction
        mode = 'field' if any(a.ndim >= 2 for _, a in truth + prediction) else 'vector'
        return {'mode': mode, 'x': None, 'truth': truth, 'prediction': prediction}
