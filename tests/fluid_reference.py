"""An independent NumPy float64 reference of the fluid inverse's estimator (steps 1 and 4–6 of
`phi_hig.physics.fluid.inverse`), for tests only.

It is the per-example formulation the package used before the estimator was batched in PhiML: explicit loops over
the examples and over the candidate centres of the vortex search, `np.linalg.qr` for the projection and
`np.linalg.lstsq` for the least squares. The package's estimator computes the same quantities with batched tensor
operations (separable sums for the search, an SVD for the least squares), so an agreement to round-off checks
both the algebra of that reformulation and the port.
"""
import numpy as np


def fit(values, lower, dx, kernel):
    """`fit_translation_vortex` for centred velocities `(n, X, Y, 2)`; `kernel` is the unit vortex `(X, Y, 2)`
    centred on the first cell. Returns (translation (n, 2), strength (n,), centre (n, 2))."""
    translation = values.mean(axis=(1, 2))
    norm2 = float((kernel ** 2).sum())
    spectrum = np.conj(np.fft.fft2(kernel, axes=(0, 1)))
    strengths, centres = [], []
    for b in range(values.shape[0]):
        corr = np.real(np.fft.ifft2(np.fft.fft2(values[b] - translation[b], axes=(0, 1)) * spectrum, axes=(0, 1))).sum(-1)
        i, j = np.unravel_index(np.argmax(np.abs(corr)), corr.shape)
        n, m = corr.shape
        offsets = [_parabola_peak(corr[(i - 1) % n, j], corr[i, j], corr[(i + 1) % n, j]),
                   _parabola_peak(corr[i, (j - 1) % m], corr[i, j], corr[i, (j + 1) % m])]
        centres.append(lower + (np.array([i, j]) + 0.5 + np.array(offsets)) * dx)
        strengths.append(corr[i, j] / norm2)
    return translation, np.array(strengths), np.array(centres)


def _parabola_peak(left, centre, right) -> float:
    curvature = left - 2 * centre + right
    return 0. if curvature == 0 else float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def corrected_prior(fwd, rev, tau, s, p, dt, dx, lower, size, radius, max_shift, max_relative_change, search_below):
    """Steps 4–5 for markers `fwd`, `rev` of shape `(n, time, X, Y)` and the fitted prior; returns the corrected
    (translation, strength, centre)."""
    steps = fwd.shape[1] - 1
    times = dt * np.arange(steps + 1)
    d_tau, d_s, d_p = np.zeros_like(tau), np.zeros_like(s), np.zeros_like(p)
    for b in range(fwd.shape[0]):
        d_tau[b], d_s[b], d_p[b] = _estimate(fwd[b], rev[b], tau[b], s[b], p[b], times, dt * steps, dx, lower, size,
                                             radius, search_below)
        if abs(s[b]) >= search_below:
            shift = np.linalg.norm(d_p[b])
            if shift > max_shift:
                d_p[b] *= max_shift / shift
            d_s[b] = np.clip(d_s[b], -max_relative_change * abs(s[b]), max_relative_change * abs(s[b]))
    return tau + d_tau, s + d_s, p + d_p


def _estimate(fwd, rev, tau, s, p, times, total_time, dx, lower, size, radius, search_below):
    coords = [lower[d] + (np.arange(fwd.shape[1 + d]) + 0.5) * dx[d] for d in range(2)]
    X, Y = np.meshgrid(*coords, indexing='ij')
    com_f = np.array([_centre_of_mass(f, X, Y) for f in fwd])
    com_r = np.array([_centre_of_mass(r, X, Y) for r in rev])
    d_tau0 = np.mean(com_r - com_f, axis=0) / total_time
    rev = np.stack([_fourier_shift(r, -d_tau0 * total_time, dx) for r in rev])
    mean = 0.5 * (fwd + rev)
    grad = [(np.roll(mean, -1, 1 + d) - np.roll(mean, 1, 1 + d)) / (2 * dx[d]) for d in range(2)]
    rhs = -(rev - fwd).reshape(-1)
    drift = (tau + d_tau0)[:, None] * times[None, :]

    def columns(centre, with_centre):
        ddx = (X[None] - centre[0] - drift[0][:, None, None] + size[0] / 2) % size[0] - size[0] / 2
        ddy = (Y[None] - centre[1] - drift[1][:, None, None] + size[1] / 2) % size[1] - size[1] / 2
        g = np.exp(-(ddx ** 2 + ddy ** 2) / (2 * radius ** 2)) / radius
        basis = [(1., 0.), (0., 1.), (-ddy * g, ddx * g)]
        if with_centre:
            basis += [(s * (-ddy * g * ddx / radius ** 2), s * (-g + ddx ** 2 * g / radius ** 2)),
                      (s * (g - ddy ** 2 * g / radius ** 2), s * (ddx * g * ddy / radius ** 2))]
        return np.stack([(total_time * (bu * grad[0] + bv * grad[1])).reshape(-1) for bu, bv in basis], -1)

    if abs(s) < search_below:
        candidates = [lower + np.array([i, j]) * radius / 2 for i in np.arange(0, size[0] / (radius / 2))
                      for j in np.arange(0, size[1] / (radius / 2))]
        q, _ = np.linalg.qr(columns(p, False)[:, :2])
        r_perp = rhs - q @ (q.T @ rhs)
        best, best_gain = candidates[0], -1.
        for c in candidates:
            v = columns(c, False)[:, 2]
            v_perp = v - q @ (q.T @ v)
            norm2 = np.sum(v_perp * v_perp)
            gain = np.sum(v_perp * r_perp) ** 2 / norm2 if norm2 > 0 else 0.
            if gain > best_gain:
                best, best_gain = c, gain
        theta = _least_squares(columns(best, False), rhs)
        return d_tau0 + theta[:2], theta[2], best - p
    theta = _least_squares(columns(p, True), rhs)
    return d_tau0 + theta[:2], theta[2], theta[3:]


def _least_squares(a, r):
    scale = np.linalg.norm(a, axis=0)
    active = scale > 1e-12 * max(scale.max(), 1e-300)
    theta = np.zeros(a.shape[1])
    if active.any():
        theta[active] = np.linalg.lstsq(a[:, active] / scale[active], r, rcond=1e-10)[0] / scale[active]
    return theta


def _centre_of_mass(m, X, Y):
    total = m.sum()
    return np.zeros(2) if total == 0 else np.array([(m * X).sum(), (m * Y).sum()]) / total


def _fourier_shift(m, shift, dx):
    kx = np.fft.fftfreq(m.shape[0], d=dx[0])[:, None]
    ky = np.fft.fftfreq(m.shape[1], d=dx[1])[None, :]
    phase = np.exp(-2j * np.pi * (kx * shift[0] + ky * shift[1]))
    return np.real(np.fft.ifft2(np.fft.fft2(m) * phase))
