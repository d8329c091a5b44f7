"""The low-dimensional prior of the fluid inverse: a uniform translation plus one Gaussian vortex of known radius.

`phi_hig.physics.fluid.inverse` (Holl, Koltun & Thuerey 2021, appendix B.4; the data of §3.4 is drawn from this prior
plus small-scale structure) estimates only these five numbers per example. This module holds the prior itself
(`translation_vortex`), its projection of a velocity field (`fit_translation_vortex`) and the estimator's correction
of the prior from a forward and a reverse marker simulation (`prior_correction`); the simulations are in
`phi_hig.physics.fluid`, which re-exports the public names of this module.

All functions treat batch dims other than `time` as independent examples and refuse bad arguments with
`phi_hig.errors.InvalidInputError` naming the argument.
"""
from typing import NamedTuple

import numpy as np
from phi import field
from phi.field import CenteredGrid, StaggeredGrid, Field
from phiml import math
from phiml.math import Tensor, spatial, channel, instance, batch, extrapolation

from ._checks import (require_grid, require_vector_grid, require_batch_compatible, require_periodic, require_number,
                      require_vector)
from ..errors import InvalidInputError

__all__ = ['VORTEX_RADIUS', 'translation_vortex', 'VortexFit', 'fit_translation_vortex', 'prior_correction',
           'centre_of_mass']

VORTEX_RADIUS = 8.


def translation_vortex(template: Field, translation: Tensor, strength: Tensor, centre: Tensor,
                       radius: float = VORTEX_RADIUS) -> Field:
    """Uniform velocity plus a Gaussian vortex, sampled like `template` (centred or staggered, periodic).

    `v(r) = translation + strength · ẑ×d/radius · exp(−|d|²/(2 radius²))` with `d = r − centre` taken to the nearest
    periodic image. The vortex speed peaks at `|d| = radius` with `strength·e^{−1/2}`; `strength > 0` is
    counter-clockwise. It is divergence-free in the continuum and has zero mean, so `translation` is the mean.

    Args:
        template: 2D grid whose type, resolution and bounds the result takes.
        translation: Vector `Tensor` (channel `vector` with the template's axes), optionally with batch dims.
        strength: Finite number or `Tensor` with batch dims only.
        centre: Position `Tensor` (channel `vector`), optionally with batch dims.
        radius: Vortex radius in physical units, a finite number > 0.
    """
    require_grid('template', template)
    if template.spatial_rank != 2:
        raise InvalidInputError(f"template must be a 2D grid but has resolution {template.resolution}")
    translation = require_vector('translation', translation, template)
    strength = require_number('strength', strength, batch_like=('template', template))
    centre = require_vector('centre', centre, template)
    radius = require_number('radius', radius, positive=True, tensor=False)
    for (name_a, a), (name_b, b) in [(('translation', translation), ('strength', strength)),
                                     (('translation', translation), ('centre', centre)), (('strength', strength), ('centre', centre))]:
        require_batch_compatible(name_a, a, name_b, b)
    return _vortex(template, translation, strength, centre, radius)


def _vortex(template: Field, translation, strength, centre, radius: float) -> Field:
    """`translation_vortex` without the argument checks."""
    size = template.bounds.size

    def velocity(position):
        d = (position - centre + size / 2) % size - size / 2
        swirl = math.stack([-d.vector['y'], d.vector['x']], channel(vector='x,y'))
        return translation + strength * swirl / radius * math.exp(-math.squared_norm(d) / (2 * radius ** 2))
    if template.is_staggered:
        return StaggeredGrid(velocity, extrapolation.PERIODIC, template.bounds, template.resolution)
    return CenteredGrid(velocity, extrapolation.PERIODIC, template.bounds, template.resolution)


class VortexFit(NamedTuple):
    """Low-dimensional description of a velocity field: mean translation and the best-fitting vortex."""
    translation: Tensor
    strength: Tensor
    centre: Tensor


def fit_translation_vortex(v: Field, radius: float = VORTEX_RADIUS) -> VortexFit:
    """Projects `v` onto the prior: translation = mean velocity; vortex centre = argmax of the matched filter.

    The matched filter correlates `v − translation` with the unit vortex at every cell centre (by FFT, periodic),
    picks the cell with the largest |correlation|, refines it to sub-cell accuracy with a parabola per axis, and
    sets the strength to correlation / ‖unit vortex‖². Exact for `v = translation_vortex(...)` up to
    discretization; other structure of `v` (small vortices) biases it only through its overlap with the vortex.
    All examples at once, on the backend and in the dtype of `v`; no gradient flows.

    Args:
        v: Periodic 2D velocity, centred or staggered.
        radius: Radius of the fitted vortex, a finite number > 0.
    """
    require_vector_grid('v', v)
    require_periodic('v', v)
    with v.values.backend:
        return _fit(v, require_number('radius', radius, positive=True, tensor=False))


def _fit(v: Field, radius: float) -> VortexFit:
    """`fit_translation_vortex` without the argument checks."""
    centred = field.resample(v, CenteredGrid(0, extrapolation.PERIODIC, v.bounds, v.resolution)) if v.is_staggered else v
    values = math.stop_gradient(centred.values)
    translation = math.mean(values, spatial)
    origin = CenteredGrid(0, extrapolation.PERIODIC, centred.bounds, centred.resolution)
    kernel = _vortex(origin, 0, 1., centred.bounds.lower + centred.dx / 2, radius).values
    spectrum = math.conjugate(math.fft(kernel, spatial))
    corr = math.sum(math.real(math.ifft(math.fft(values - translation, spatial) * spectrum, spatial)), 'vector')
    index = math.argmax(abs(corr), spatial)
    peak = math.gather(corr, index)
    offsets = []
    for dim in centred.resolution.names:  # a parabola through the peak and its periodic neighbours, per axis
        left, right = (math.gather(neighbour, index) for neighbour in
                       math.shift(corr, (-1, 1), dim, padding=extrapolation.PERIODIC, stack_dim=None))
        curvature = left - 2 * peak + right
        offset = math.clip(0.5 * (left - right) / math.where(curvature == 0, 1, curvature), -0.5, 0.5)
        offsets.append(math.where(curvature == 0, 0, offset))
    offsets = math.stack(offsets, channel(vector=centred.resolution.names))
    cell = math.rename_dims(index, 'index', channel(vector=centred.resolution.names))
    centre = centred.bounds.lower + (cell + 0.5 + offsets) * centred.dx
    return VortexFit(translation, peak / math.sum(kernel ** 2), centre)


def prior_correction(v0: Field, markers: Field, reverse: Field, dt: float, radius: float, max_shift: float,
                     max_relative_change: float, search_below: float) -> Field:
    """Steps 1 and 4–6 of `phi_hig.physics.fluid.inverse` for all examples at once: the prior fitted to ``v0``
    (`fit_translation_vortex`), corrected from the forward markers ``markers`` and the reverse-simulated markers
    ``reverse`` (both with a ``time`` dim of the same frames), returned as the difference of the two priors sampled
    like ``v0``. No gradient flows.

    The arguments are those `inverse` has validated and converted (same backend and precision for all three grids,
    ``dt``, ``radius`` > 0, the caps ≥ 0: ``max_shift`` of the centre, ``max_relative_change`` of the strength; below
    ``search_below`` the centre is searched instead of linearized); call `inverse` unless you reuse its steps.
    """
    fit = _fit(v0, radius)
    new = _corrected_prior(markers, reverse, fit, dt, radius, max_shift, max_relative_change, search_below)
    return _vortex(v0, *new, radius) - _vortex(v0, *fit, radius)


def _corrected_prior(markers: Field, reverse: Field, fit: VortexFit, dt: float, radius: float, max_shift: float,
                     max_relative_change: float, search_below: float) -> VortexFit:
    """Steps 4–5 of `inverse` for all examples at once: the prior parameters after one correction."""
    total_time = dt * (markers.shape.get_size('time') - 1)
    fwd, rev, points = markers.values, reverse.values, markers.points
    d_tau0 = math.mean(centre_of_mass(rev, points) - centre_of_mass(fwd, points), 'time') / total_time
    rev = _fourier_shift(rev, -d_tau0 * total_time, markers.dx)
    grad = math.spatial_gradient(0.5 * (fwd + rev), markers.dx, 'central', extrapolation.PERIODIC,
                                 stack_dim=channel(vector='x,y'))
    rhs = fwd - rev
    tau, s, p = fit.translation + d_tau0, fit.strength, fit.centre
    drift = tau * dt * math.range(batch(time=markers.shape.get_size('time')))  # the vortex moves with the translation
    size = markers.bounds.size

    def columns(centre, with_centre: bool) -> Tensor:  # ∂(m^rev − m)/∂(τ, s[, p]) to first order, channel 'column'
        d = (points - centre - drift + size / 2) % size - size / 2
        ddx, ddy = d.vector['x'], d.vector['y']
        g = math.exp(-(ddx ** 2 + ddy ** 2) / (2 * radius ** 2)) / radius
        basis = [(1, 0), (0, 1), (-ddy * g, ddx * g)]  # translation x, y; unit vortex
        if with_centre:  # ∂/∂p_x and ∂/∂p_y of s·G(r − p)
            basis += [(s * (-ddy * g * ddx / radius ** 2), s * (-g + ddx ** 2 * g / radius ** 2)),
                      (s * (g - ddy ** 2 * g / radius ** 2), s * (ddx * g * ddy / radius ** 2))]
        return math.stack([total_time * (bu * grad.vector['x'] + bv * grad.vector['y']) for bu, bv in basis],
                          channel('column'))

    rows = rhs.shape.only('time') & spatial(rhs)
    searching = abs(s) < search_below
    d_tau, d_s, d_p = 0, 0, 0
    if (~searching).any:
        theta = _least_squares(columns(p, True), rhs, rows)
        shift = math.sqrt(math.sum(theta.column[3:5] ** 2, 'column'))
        d_p = math.rename_dims(theta.column[3:5], 'column', channel(vector='x,y'))
        d_p = d_p * math.where(shift > max_shift, max_shift / math.where(shift > 0, shift, 1), 1)
        d_s = math.clip(theta.column[2], -max_relative_change * abs(s), max_relative_change * abs(s))
        d_tau = math.rename_dims(theta.column[:2], 'column', channel(vector='x,y'))
    if searching.any:  # no vortex to linearize about: place it where it explains the data best
        best = _best_centre(grad, rhs, points, drift, size, markers.bounds.lower, radius, total_time)
        theta = _least_squares(columns(best, False), rhs, rows)
        d_tau = math.where(searching, math.rename_dims(theta.column[:2], 'column', channel(vector='x,y')), d_tau)
        d_s = math.where(searching, theta.column[2], d_s)
        d_p = math.where(searching, best - p, d_p)
    return VortexFit(tau + d_tau, s + d_s, p + d_p)


def _best_centre(grad: Tensor, rhs: Tensor, points: Tensor, drift: Tensor, size: Tensor, lower: Tensor, radius: float,
                 total_time: float) -> Tensor:
    """The vortex search of `inverse` (step 5): per example, the candidate centre (grid of spacing `radius/2`) whose
    unit-vortex column `v` explains most of the residual left by the translation columns `a`,
    `argmax (v·r⊥)² / ‖v⊥‖²` (`⊥`: projected off `a`), i.e. the smallest residual of the fit of `(δτ, δs)`.

    The unit vortex at `c` is separable, `G(r − c) ∝ e_x(x − c_x)·e_y(y − c_y)`, so every inner product with a
    column over all candidates is a product of small matrices: `Σ_k E_x[c_x, x] w_k[x, y] E_y[c_y, y]`."""
    gx, gy = grad.vector['x'], grad.vector['y']
    axes = []
    for dim, other in (('x', 'y'), ('y', 'x')):  # per axis: offsets of the cell centres from every candidate
        count = int(np.ceil(float(size.vector[dim]) / (radius / 2)))
        candidates = lower.vector[dim] + math.range(instance(**{f'c{dim}': count})) * (radius / 2)
        length = size.vector[dim]
        d = (points.vector[dim][{other: 0}] - candidates - drift.vector[dim] + length / 2) % length - length / 2
        e = math.exp(-d ** 2 / (2 * radius ** 2))
        axes.append((candidates, e, d * e))
    (cx, ex, dex), (cy, ey, dey) = axes

    def total(a_x, w, a_y):  # Σ over steps and cells of a_x(c_x, x)·w(x, y)·a_y(c_y, y), for every candidate
        return math.sum(math.dot(math.dot(a_x, 'x', w, 'x'), 'y', a_y, 'y'), 'time')

    def dot_vortex(w):  # v·w with v = T·(−d_y·G·∂_x m̄ + d_x·G·∂_y m̄)
        return total_time / radius * (total(dex, gy * w, ey) - total(ex, gx * w, dey))

    def dot(a, b):
        return math.sum(a * b, rhs.shape.only('time') & spatial(rhs))

    # the translation columns a = T·∂m̄: Gram matrix, its inverse (2×2), r⊥ = r − a·G⁻¹aᵀr
    g11, g12, g22 = total_time ** 2 * dot(gx, gx), total_time ** 2 * dot(gx, gy), total_time ** 2 * dot(gy, gy)
    det = g11 * g22 - g12 ** 2
    det = math.where(det > 0, det, math.inf)
    r1, r2 = total_time * dot(gx, rhs), total_time * dot(gy, rhs)
    r_perp = rhs - total_time * (gx * (g22 * r1 - g12 * r2) + gy * (g11 * r2 - g12 * r1)) / det
    v1, v2 = total_time * dot_vortex(gx), total_time * dot_vortex(gy)
    vv = (total_time / radius) ** 2 * (total(ex ** 2, gx ** 2, dey ** 2) - 2 * total(ex * dex, gx * gy, ey * dey)
                                       + total(dex ** 2, gy ** 2, ey ** 2))
    norm2 = vv - (g22 * v1 ** 2 - 2 * g12 * v1 * v2 + g11 * v2 ** 2) / det
    gain = math.where(norm2 > 0, dot_vortex(r_perp) ** 2 / math.where(norm2 > 0, norm2, 1), 0)
    index = math.argmax(math.pack_dims(gain, 'cx,cy', instance('candidate')), 'candidate').index[0]
    count_y = cy.shape.get_size('cy')
    return math.stack([cx.cx[index // count_y], cy.cy[index % count_y]], channel(vector='x,y'))


def _least_squares(a: Tensor, r: Tensor, rows) -> Tensor:
    """Per example `argmin_θ ‖aθ − r‖` over `rows`, `a` with channel dim `column`: the columns scaled to unit norm,
    directions with singular values below 1e-7 of the largest dropped; columns without signal get θ = 0.

    Solved by the normal equations, formed in float64 whatever the precision of `a` (products of float32 numbers are
    exact in float64) and decomposed by an SVD of the small `column × column` matrix: a batched SVD of the tall `a`
    itself takes seconds at the paper's size. The cut-off 1e-7 lies above the float64 round-off of the squared
    singular values (about 1e-8 of the largest singular value) and below any conditioning the estimator meets."""
    dtype = r.dtype
    scale = math.sqrt(math.sum(a ** 2, rows))
    active = scale > 1e-12 * math.max(scale, 'column')
    scale = math.where(active, scale, 1)
    with math.precision(64):
        a = math.cast(math.where(active, a / scale, 0), math.DType(float, 64))
        gram = math.dot(a, rows, math.rename_dims(a, 'column', channel('row')), rows)
        _, squared, v = math.svd(gram, feature_dim='column', list_dim='row')  # v: (~singular, column)
        kept = squared > 1e-14 * math.max(squared, 'singular')
        projected = math.rename_dims(math.dot(v, 'column', math.dot(a, rows, math.cast(r, a.dtype), rows), 'column'),
                                     '~singular', channel('singular'))
        coefficients = math.where(kept, projected / math.where(kept, squared, 1), 0)
        theta = math.dot(math.rename_dims(coefficients, 'singular', v.shape.only('~singular')), '~singular', v, '~singular')
        return math.cast(math.where(active, theta / scale, 0), dtype)


def centre_of_mass(m: Tensor, points: Tensor) -> Tensor:
    """Centre of mass of the marker values `m` over the cell centres `points`; zero where the marker is empty."""
    total = math.sum(m, spatial)
    return math.where(total == 0, 0, math.sum(m * points, spatial) / math.where(total == 0, 1, total))


def _fourier_shift(m: Tensor, shift: Tensor, dx: Tensor) -> Tensor:
    """`m` translated by `shift` (periodic, exact for band-limited values)."""
    k = math.fftfreq(spatial(m), dx)
    return math.real(math.ifft(math.fft(m, spatial) * math.exp(-2j * np.pi * math.sum(k * shift, 'vector')), spatial))
