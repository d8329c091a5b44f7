"""SIP and Adam steps of the fluid experiment side by side, and where their time goes.

    python -m benchmarks.fluid_step                    # the SIP paper's size: 64 × 64, batch 64, 8 steps (~3 min)
    python -m benchmarks.fluid_step --profile          # + the time of each part of the two steps
    python -m benchmarks.fluid_step --profile --before ../fluid-before --rounds 2   # an older checkout, alternated
    python -m benchmarks.fluid_step --resolution 16 --batch 2 --sim-steps 2 --reps 1 --output ''   # smoke run

Each method trains its own copy of the same initial network (`torch.manual_seed(0)`, the experiment's Adam with
lr 0.005) on the same batches (the experiment's seed-0 `DataStream`), as the runner does; the steps alternate SIP,
Adam, so both see the same machine load. The first step of each is reported apart (it includes PhiML's tracing of
the jit-compiled simulations); the step time is the median of the `--reps` steps after it.

`--profile` then times the parts separately on one batch (median of `--reps` calls each; they overlap the steps
and do not add up to them exactly): drawing the batch, the network (forward and backward of the SIP proxy loss),
the SIP step's no-grad forward simulation, the reverse simulation, the rest of the inverse (fit and estimator),
Adam's differentiable forward simulation and its backward pass; and, with cProfile (which slows Python-heavy code
down), the seconds of the pressure solves (PhiML's linear solves, forward and adjoint) in Adam's step and in the
plain (not compiled) simulations.

`--before PATH` measures the package of another checkout (e.g. a `git worktree` of an older commit) with this
script too: each of `--rounds` rounds runs one measurement of that checkout and one of this one, each in a fresh
process (`PYTHONPATH` set to its root), one after the other; the report shows every round and the medians over
rounds. The script runs an older checkout as it is (one whose fluid network carries m₀ as a third output channel,
without `Experiment.conditions`, and whose inverse runs in NumPy float64). The variable OMP_WAIT_POLICY defaults to
PASSIVE (spinning OpenMP threads on shared cores make steps erratic).

Writes `benchmarks/results/fluid_step_cpu.md` (+ `.json`) unless `--output ''`.
"""
from __future__ import annotations

import argparse
import cProfile
import inspect
import json
import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # before torch starts its threads
import platform
import pstats
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from phiml import math
from phiml.backend import NUMPY
from phiml.backend.torch import TORCH
from phiml.math import extrapolation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, 'benchmarks', 'results')


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
    return experiments.get('fluid', resolution=(args.resolution, args.resolution), batch_size=args.batch,
                           n_train=max(args.batch, args.n_train), n_test=2, sim_steps=args.sim_steps,
                           cache_dir=args.cache_dir or None)


# An older checkout has no Experiment.conditions: its network's output z = (vx, vy, m0) carries the marker.

def _velocity_and_marker(ex, z, x):
    """`(v (b, 2, H, W), m0 (b, H, W))` of the network output `z` for the inputs `x`."""
    return (z, ex.conditions(x, None)) if hasattr(ex, 'conditions') else (z[:, :2], z[:, 2])


def _simulate(ex, v, m0):
    return ex.simulate(v, m0) if hasattr(ex, 'conditions') else ex.simulate(torch.cat([v, m0[:, None]], 1))


def _inverse(ex, v, m0, t):
    return ex.inverse(v, t, m0) if hasattr(ex, 'conditions') else ex.inverse(torch.cat([v, m0[:, None]], 1), t)


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
        conditions = (ex.conditions(x, t),) if hasattr(ex, 'conditions') else ()
        sip_step(nets['sip'], optimizers['sip'], x, t, (ex.simulate, ex.inverse), *conditions, loss=ex.loss)

    def adam():
        x, t = streams['adam'].next(args.batch)
        optimizers['adam'].zero_grad(set_to_none=True)
        z = nets['adam'](x)
        ex.loss(_simulate(ex, *_velocity_and_marker(ex, z, x)), t).mean().backward()
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
        v, m0 = (a.detach() for a in _velocity_and_marker(ex, net(x), x))
        _simulate(ex, v, m0)  # warm-up (traces the compiled simulation)
        result['SIP: no-grad forward simulation'] = _median_time(lambda: _simulate(ex, v, m0), reps)
        result['SIP:   of which pressure solves (cProfile; compiled: not seen)'] = _solve_seconds(
            lambda: _simulate(ex, v, m0))
        _simulate(ex, v, m0)
        _inverse(ex, v, m0, t)  # warm-up
        result['SIP: inverse (reusing the trajectory)'] = _median_time(lambda: _inverse(ex, v, m0, t), reps)
        options = ex.inverse.resolve() if hasattr(ex.inverse, 'resolve') else {}
        radius = options.get('radius', physics.VORTEX_RADIUS)
        if 'jit' in inspect.signature(physics.reverse_markers).parameters:  # as the inverse runs: its options
            backend, precision, jit = TORCH, options['precision'], {'jit': options['jit']}
        else:  # an older checkout: the inverse ran in NumPy float64
            backend, precision, jit = NUMPY, 64, {}
        with backend, math.precision(precision):
            grids = [_on(to_grid(a, periodic), backend, precision) for a in (v, m0, t[:, 0])]
            trajectory = physics.simulate(*grids[:2], steps=args.sim_steps, **jit)
            physics.reverse_markers(grids[2], trajectory[1], **jit)  # warm-up
            result['SIP:   of which reverse simulation'] = _median_time(
                lambda: physics.reverse_markers(grids[2], trajectory[1], **jit), reps)
            result['SIP:   of which fit of the prior'] = _median_time(
                lambda: physics.fit_translation_vortex(grids[0], radius), reps)

    def adam_forward():
        return ex.loss(_simulate(ex, v.clone().requires_grad_(True), m0), t).mean()
    result['Adam: differentiable forward simulation'] = _median_time(adam_forward, reps)

    def adam_backward():
        loss = adam_forward()
        t0 = time.perf_counter()
        loss.backward()
        return time.perf_counter() - t0
    result['Adam: backward through the simulation'] = statistics.median(adam_backward() for _ in range(reps))
    result['Adam:   pressure solves (forward + adjoint CG) in forward + backward (cProfile)'] = _solve_seconds(
        lambda: adam_forward().backward())
    with TORCH, math.precision(32):
        grids = [to_grid(a, periodic) for a in (v, m0)]
        result['plain torch float32 forward simulation (not compiled)'] = _median_time(
            lambda: physics.simulate(*grids, steps=args.sim_steps), reps)
        result['  of which pressure solves (cProfile)'] = _solve_seconds(
            lambda: physics.simulate(*grids, steps=args.sim_steps))
    return result


def _on(grid, backend, precision: int):
    """`grid` with its values on `backend` in float `precision`."""
    return grid.with_values(math.cast(math.convert(grid.values, backend), math.DType(float, precision)))


def measure(args) -> dict:
    """One measurement of the package this process imports: step times, parts (with `--profile`) and the load."""
    torch.set_num_threads(args.threads)
    ex = build(args)
    import phi_hig
    load = [os.getloadavg()[0]]
    step_times = steps(ex, args)
    part_times = parts(ex, args) if args.profile else {}
    load.append(os.getloadavg()[0])
    return dict(package=os.path.dirname(os.path.dirname(os.path.abspath(phi_hig.__file__))), steps=step_times,
                parts=part_times, load=load, threads=torch.get_num_threads())


def _in_process(root: str, args) -> dict:
    """`measure` in a fresh Python process that imports phi_hig from the checkout `root`."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, 'result.json')
        worker = [a for a in args.argv if a not in ('--before', args.before)] if args.before else list(args.argv)
        command = [sys.executable, os.path.abspath(__file__), *worker, '--output', '', '--worker-json', out,
                   '--cache-dir', os.path.abspath(args.cache_dir) if args.cache_dir else '']
        env = dict(os.environ, PYTHONPATH=root)
        subprocess.run(command, cwd=root, env=env, check=True)
        with open(out) as f:
            return json.load(f)


def _table(label: str, result: dict) -> list:
    sip, adam = result['steps']['sip'], result['steps']['adam']
    return [f"| {label} | {sip['first']:.2f} | {sip['median']:.2f} | {adam['first']:.2f} | {adam['median']:.2f} | "
            f"**{sip['median'] / adam['median']:.2f}×** | {result['load'][0]:.2f} / {result['load'][1]:.2f} |"]


def _commit(root: str) -> str:
    try:
        return subprocess.run(['git', 'describe', '--always', '--dirty'], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip() or '?'
    except (OSError, subprocess.SubprocessError):
        return '?'


def report(args, results: dict) -> str:
    """Markdown: per measured checkout (`results`: label -> list of `measure` results, one per round) the step
    times of every round and the medians over rounds, then the parts of each checkout (medians over rounds)."""
    lines = ["# Fluid SIP and Adam steps side by side (CPU)", '',
             f"Command: `python -m benchmarks.fluid_step {shlex.join(args.argv)}`; {args.resolution} × "
             f"{args.resolution}, batch {args.batch}, {args.sim_steps} steps of Δt = 0.25; {os.cpu_count()} cores "
             f"({platform.processor() or platform.machine()}), torch {torch.__version__}, {args.threads} torch "
             f"thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}. Seconds; SIP and Adam medians of "
             f"{args.reps} steps after the first; load average (1 min) before / after each measurement.", '',
             '| checkout (round) | SIP first step | SIP step | Adam first step | Adam step | SIP / Adam | load |',
             '|---|---:|---:|---:|---:|---:|---|']
    for label, rounds in results.items():
        for i, result in enumerate(rounds):
            lines += _table(f"{label} ({i + 1})", result)
        if len(rounds) > 1:
            sip = statistics.median(r['steps']['sip']['median'] for r in rounds)
            adam = statistics.median(r['steps']['adam']['median'] for r in rounds)
            lines.append(f"| {label}: median of the rounds | | {sip:.2f} | | {adam:.2f} | **{sip / adam:.2f}×** | |")
    lines += ['', 'Checkouts: ' + '; '.join(f"{label}: `{rounds[0]['package']}` ({_commit(rounds[0]['package'])})"
                                         for label, rounds in results.items()) + '.']
    names = [n for rounds in results.values() for n in rounds[0]['parts']]
    if names:
        labels = list(results)
        lines += ['', 'Parts (seconds, median of the rounds):', '', '| part | ' + ' | '.join(labels) + ' |',
                  '|---|' + '---:|' * len(labels)]
        for name in dict.fromkeys(names):
            cells = [statistics.median(r['parts'][name] for r in rounds) if name in rounds[0]['parts'] else None
                     for rounds in results.values()]
            lines.append(f"| {name} | " + ' | '.join('' if c is None else f"{c:.3f}" for c in cells) + ' |')
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
    parser.add_argument('--before', default=None, help='root of another checkout to measure too, in turn')
    parser.add_argument('--rounds', type=int, default=1, help='measurements per checkout (with --before)')
    parser.add_argument('--cache-dir', default='runs/cache', help="where the data set is cached ('' : not cached)")
    parser.add_argument('--output', default=os.path.join(RESULTS, 'fluid_step_cpu.md'),
                        help="Markdown file to write ('' : print only)")
    parser.add_argument('--worker-json', default=None, help=argparse.SUPPRESS)  # a measurement for --before
    args = parser.parse_args(argv)
    args.argv = argv
    if args.worker_json:
        result = measure(args)
        with open(args.worker_json, 'w') as f:
            json.dump(result, f)
        return result
    if args.before:
        results = {'before': [], 'after': []}
        for _ in range(args.rounds):
            results['before'].append(_in_process(os.path.abspath(args.before), args))
            results['after'].append(_in_process(ROOT, args))
    else:
        results = {'this checkout': [measure(args) for _ in range(args.rounds)]}
    text = report(args, results)
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, 'w') as f:
            f.write(text)
        with open(os.path.splitext(args.output)[0] + '.json', 'w') as f:
            json.dump(dict(argv=argv, results=results), f, indent=1)
    return results


if __name__ == '__main__':
    main()
