"""SIP and Adam steps of the fluid experiment side by side, and where their time goes.

    python -m benchmarks.fluid_step                    # the SIP paper's size: 64 × 64, batch 64, 8 steps (~3 min)
    python -m benchmarks.fluid_step --profile          # + the time of each part of the two steps
    python -m benchmarks.fluid_step --resolution 16 --batch 2 --sim-steps 2 --reps 1 --output ''   # smoke run

Each method trains its own copy of the same initial network (`torch.manual_seed(0)`, the experiment's Adam with
lr 0.005) on the same batches (the experiment's seed-0 `DataStream`), as the runner does; the steps alternate SIP,
Adam, so both see the same machine load. The first step of each is reported apart (it includes PhiML's tracing of
the jit-compiled simulations); the step time is the median of the `--reps` steps after it.

`--profile` then times the parts separately on one batch (median of `--reps` calls each; they overlap the steps
and do not add up to them exactly): drawing the batch, the network (forward and backward of the SIP proxy loss),
the SIP step's no-grad forward simulation, the reverse simulation, the rest of the inverse (fit and estimator),
Adam's differentiable forward simulation and its backward pass; and, with cProfile, the share of the pressure
solves (PhiML's linear solves, forward and adjoint) in the plain (not compiled) simulations. The same script
measures an older checkout of the package (one without the `jit` option) as it is.

Writes `benchmarks/results/fluid_step_cpu.md` (+ `.json`) unless `--output ''`.
"""
from __future__ import annotations

import argparse
import cProfile
import inspect
import json
import os
import platform
import pstats
import shlex
import statistics
import sys
import time

import torch
from phiml import math
from phiml.backend import NUMPY
from phiml.backend.torch import TORCH
from phiml.math import extrapolation

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _solve_seconds(fn) -> float:
    """Seconds spent in PhiML's linear solves (forward and adjoint) while `fn()` runs, by cProfile."""
    profile = cProfile.Profile()
    profile.runcall(fn)
    stats = pstats.Stats(profile).stats
    return sum(v[3] for k, v in stats.items() if k[2] == '_linear_solve_forward' and 'phiml' in k[0])


def build(args):
    from phi_hig import experiments
    ex = experiments.get('fluid', resolution=(args.resolution, args.resolution), batch_size=args.batch,
                         n_train=max(args.batch, args.n_train), n_test=2, sim_steps=args.sim_steps,
                         cache_dir=args.cache_dir or None)
    return ex


def steps(ex, args) -> dict:
    """Alternating SIP and Adam steps; the first of each apart, then the median."""
    from phi_hig import sip_step
    from phi_hig.experiments import DataStream
    nets, optimizers = {}, {}
    for method in ('sip', 'adam'):
        torch.manual_seed(0)
        nets[method] = ex.make_net()
        optimizers[method] = torch.optim.Adam(nets[method].parameters(), lr=ex.methods[method]['lr'])
    streams = {m: DataStream(ex, 0) for m in nets}

    def sip():
        x, t = streams['sip'].next(args.batch)
        sip_step(nets['sip'], optimizers['sip'], x, t, (ex.simulate, ex.inverse), loss=ex.loss)

    def adam():
        x, t = streams['adam'].next(args.batch)
        optimizers['adam'].zero_grad(set_to_none=True)
        ex.loss(ex.simulate(nets['adam'](x)), t).mean().backward()
        optimizers['adam'].step()

    times = {'sip': [], 'adam': []}
    for _ in range(args.reps + 1):
        for method, fn in (('sip', sip), ('adam', adam)):
            t0 = time.perf_counter()
            fn()
            times[method].append(time.perf_counter() - t0)
            print(f"  {method} step {len(times[method])}: {times[method][-1]:.2f} s", flush=True)
    return {m: dict(first=v[0], median=statistics.median(v[1:]), all=v) for m, v in times.items()}


def parts(ex, args) -> dict:
    """The parts of the two steps, timed one by one on the first batch."""
    from phi_hig.experiments import DataStream
    from phi_hig.physics import fluid as physics
    from phi_hig.physics.grids import to_grid
    periodic = extrapolation.PERIODIC
    reps = args.reps
    torch.manual_seed(0)
    net = ex.make_net()
    x, t = DataStream(ex, 0).next(args.batch)
    result = {'data: one batch from the DataStream': _median_time(lambda: DataStream(ex, 0).next(args.batch), reps)}

    def network():
        z = net(x)
        (0.5 * (z ** 2).sum()).backward()
    result['network: forward + backward'] = _median_time(network, reps)
    with torch.no_grad():
        z = net(x).detach()
        ex.simulate(z)  # warm-up (traces the compiled simulation)
        result['SIP: no-grad forward simulation'] = _median_time(lambda: ex.simulate(z), reps)
        ex.simulate(z)
        ex.inverse(z, t)  # warm-up
        result['SIP: inverse (reusing the trajectory)'] = _median_time(lambda: ex.inverse(z, t), reps)
        options = ex.inverse.resolve() if hasattr(ex.inverse, 'resolve') else {}
        radius = options.get('radius', physics.VORTEX_RADIUS)
        if 'jit' in inspect.signature(physics.reverse_markers).parameters:  # as the inverse runs: its options
            backend, precision, jit = TORCH, options['precision'], {'jit': options['jit']}
        else:  # an older checkout: the inverse ran in NumPy float64
            backend, precision, jit = NUMPY, 64, {}
        with backend, math.precision(precision):
            v, m0, mt = (_on(to_grid(a, periodic), backend, precision) for a in (z[:, :2], z[:, 2], t[:, 0]))
            trajectory = physics.simulate(v, m0, steps=args.sim_steps, **jit)
            physics.reverse_markers(mt, trajectory[1], **jit)  # warm-up
            result['SIP: reverse simulation (in the inverse)'] = _median_time(
                lambda: physics.reverse_markers(mt, trajectory[1], **jit), reps)
            result['SIP: fit of the prior (in the inverse)'] = _median_time(
                lambda: physics.fit_translation_vortex(v, radius), reps)

    def adam_forward():
        return ex.loss(ex.simulate(z.clone().requires_grad_(True)), t).mean()
    result['Adam: differentiable forward simulation'] = _median_time(adam_forward, reps)

    def adam_backward():
        loss = adam_forward()
        t0 = time.perf_counter()
        loss.backward()
        return time.perf_counter() - t0
    result['Adam: backward through the simulation'] = statistics.median(adam_backward() for _ in range(reps))
    result['Adam: pressure solves (forward + adjoint CG) in forward + backward'] = _solve_seconds(
        lambda: adam_forward().backward())
    with TORCH, math.precision(32):
        v, m0 = to_grid(z[:, :2], periodic), to_grid(z[:, 2], periodic)
        result['plain torch float32 forward simulation (not compiled)'] = _median_time(
            lambda: physics.simulate(v, m0, steps=args.sim_steps), reps)
        result['  of which pressure solves'] = _solve_seconds(lambda: physics.simulate(v, m0, steps=args.sim_steps))
    return result


def _on(grid, backend, precision: int):
    """`grid` with its values on `backend` in float `precision`."""
    return grid.with_values(math.cast(math.convert(grid.values, backend), math.DType(float, precision)))


def report(args, step_times, part_times, load) -> str:
    sip, adam = step_times['sip'], step_times['adam']
    lines = ["# Fluid SIP and Adam steps side by side (CPU)", '',
             f"Command: `python -m benchmarks.fluid_step {shlex.join(args.argv)}`; {args.resolution} × {args.resolution}, "
             f"batch {args.batch}, {args.sim_steps} steps of Δt = 0.25; {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
             f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s); load average (1 min) before/after "
             f"{load[0]:.2f}/{load[1]:.2f}.", '',
             '| step | first step (traces) | median of the next | steps timed |', '|---|---|---|---|',
             f"| SIP | {sip['first']:.2f} s | {sip['median']:.2f} s | {len(sip['all']) - 1} |",
             f"| Adam | {adam['first']:.2f} s | {adam['median']:.2f} s | {len(adam['all']) - 1} |", '',
             f"SIP / Adam: **{sip['median'] / adam['median']:.2f}×** (medians).", '']
    if part_times:
        lines += ['| part | seconds (median) |', '|---|---|']
        lines += [f"| {name} | {seconds:.3f} |" for name, seconds in part_times.items()]
    return '\n'.join(lines) + '\n'


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--resolution', type=int, default=64, help='cells per side (a multiple of 16)')
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--sim-steps', type=int, default=8)
    parser.add_argument('--n-train', type=int, default=256, help='size of the (cached) training set')
    parser.add_argument('--reps', type=int, default=4, help='timed steps after the first, per method')
    parser.add_argument('--threads', type=int, default=2, help='torch threads')
    parser.add_argument('--profile', action='store_true', help='also time the parts of the steps')
    parser.add_argument('--cache-dir', default='runs/cache', help="where the data set is cached ('' : not cached)")
    parser.add_argument('--output', default=os.path.join(RESULTS, 'fluid_step_cpu.md'),
                        help="Markdown file to write ('' : print only)")
    args = parser.parse_args(argv)
    args.argv = argv
    torch.set_num_threads(args.threads)
    ex = build(args)
    before = os.getloadavg()[0]
    step_times = steps(ex, args)
    part_times = parts(ex, args) if args.profile else {}
    text = report(args, step_times, part_times, (before, os.getloadavg()[0]))
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, 'w') as f:
            f.write(text)
        with open(os.path.splitext(args.output)[0] + '.json', 'w') as f:
            json.dump(dict(argv=argv, steps=step_times, parts=part_times), f, indent=1)
    return step_times, part_times


if __name__ == '__main__':
    main()
