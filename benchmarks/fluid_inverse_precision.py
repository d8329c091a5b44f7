"""The fluid inverse in float32 against float64: the update Δv₀ of the same estimates, example by example.

    python -m benchmarks.fluid_inverse_precision       # the paper's size: 64 × 64, 8 steps, 256 examples (~2 min)
    python -m benchmarks.fluid_inverse_precision --resolution 16 --examples 8 --steps 2 --output ''   # smoke run

`phi_hig.physics.fluid.inverse(..., precision=32)` and `precision=64` on torch, from the same estimates: random
examples (`random_example`, seed 11; at other resolutions than 64 the vortex radius and the marker smoothness scale
with the grid) whose prior parameters are perturbed as a network in training might get them wrong — translation
off by N(0, 0.3²) per component, vortex strength scaled by U(0.3, 1.7), centre off by N(0, (radius/3)²) per
component — and one in five with (almost) no vortex (strength × 0.02, the centre search). The observation is the
float32 simulation of the true v₀ (both precisions estimate from the same observation). Prints the relative
difference ‖Δv₀(float32) − Δv₀(float64)‖ / ‖Δv₀(float64)‖
per example (largest, 99 % quantile, median; 0 where both are exactly zero, e.g. an empty marker) and the time
of each precision (jit-compiled simulations, as the experiment runs them; the first call of each traces and is not
timed).
Writes `benchmarks/results/fluid_inverse_precision.md` unless `--output ''`.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

import numpy as np
import torch
from phiml import math
from phiml.backend.torch import TORCH
from phiml.math import batch, channel, spatial

from phi_hig.physics import fluid

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def estimates(resolution: int, n: int, steps: int, seed: int = 11):
    """`(estimate, m_target, m0, radius)` on torch: `n` perturbed estimates (float64) of random examples and the
    observation of each example's true v₀ (see the module docstring)."""
    vec = channel(vector='x,y')
    rng = np.random.default_rng(seed)
    radius = fluid.VORTEX_RADIUS * resolution / 64
    with TORCH, math.precision(64):
        example = fluid.random_example(spatial(x=resolution, y=resolution), batch(examples=n), seed, radius=radius,
                                       marker_smoothness=3. * resolution / 64)
        with math.precision(32):  # the observation (its precision does not matter here: both runs see the same)
            v0, m0 = (f.with_values(math.to_float(f.values)) for f in (example.v0, example.m0))
            m_target = fluid.simulate(v0, m0, steps=steps)[0].time[-1]
        scale = np.where(rng.random(n) < 0.2, 0.02, rng.uniform(0.3, 1.7, n))
        def noise(sigma):
            return math.tensor(rng.normal(0, sigma, (n, 2)), batch('examples'), vec)
        estimate = fluid.translation_vortex(example.v0, example.translation + noise(0.3),
                                            example.strength * math.tensor(scale, batch('examples')),
                                            example.centre + noise(radius / 3), radius=radius)
    return estimate, m_target, example.m0, radius


def relative_differences(resolution: int, n: int, steps: int, jit: bool = False, seed: int = 11) -> dict:
    """Per example, the relative difference of the float32 update from the float64 one, and the seconds of each."""
    estimate, m_target, m0, radius = estimates(resolution, n, steps, seed)
    updates, seconds = {}, {}
    for precision in (64, 32):
        if jit:  # the first call traces
            fluid.inverse(estimate, m_target, m0, steps=steps, radius=radius, precision=precision, jit=True)
        t0 = time.perf_counter()
        update = fluid.inverse(estimate, m_target, m0, steps=steps, radius=radius, precision=precision, jit=jit)
        seconds[precision] = time.perf_counter() - t0
        updates[precision] = update.values.numpy(['examples', 'x', 'y', 'vector']).reshape(n, -1)
    difference, size = np.linalg.norm(updates[32] - updates[64], axis=1), np.linalg.norm(updates[64], axis=1)
    relative = np.where(size > 0, difference / np.where(size > 0, size, 1), np.where(difference == 0, 0, np.inf))
    return dict(relative=relative, seconds=seconds, radius=radius)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--resolution', type=int, default=64)
    parser.add_argument('--examples', type=int, default=256)
    parser.add_argument('--steps', type=int, default=fluid.STEPS)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--output', default=os.path.join(RESULTS, 'fluid_inverse_precision.md'))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    result = relative_differences(args.resolution, args.examples, args.steps, jit=True)
    rel = result['relative']
    text = '\n'.join([
        "# The fluid inverse's update in float32 against float64", '',
        f"Command: `python -m benchmarks.fluid_inverse_precision {shlex.join(argv)}`; {args.resolution} × "
        f"{args.resolution}, "
        f"{args.steps} steps, radius {result['radius']:g}, {args.examples} examples; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s); load average before/after {load:.2f}/{os.getloadavg()[0]:.2f}.", '',
        '| ‖Δv₀(32) − Δv₀(64)‖ / ‖Δv₀(64)‖ | largest | 99 % quantile | median |', '|---|---|---|---|',
        f"| over {len(rel)} examples | {rel.max():.2e} | {np.quantile(rel, 0.99):.2e} | {np.median(rel):.2e} |", '',
        f"Inverse of all {len(rel)} examples at once (jit-compiled simulations, after the tracing call): float64 "
        f"{result['seconds'][64]:.2f} s, float32 {result['seconds'][32]:.2f} s.", ''])
    print(text)
    if args.output:
        with open(args.output, 'w') as f:
            f.write(text)
    return result


if __name__ == '__main__':
    main()
