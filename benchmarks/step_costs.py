"""Seconds per training step of every experiment's methods at its paper preset: the reference costs that
``python -m phi_hig list`` shows and ``python -m phi_hig run`` checks a time budget against before training
(`phi_hig.training.costs`).

    python -m benchmarks.step_costs                    # every experiment (~15 min on the 2-core CPU)
    python -m benchmarks.step_costs --experiments toy heat
    python -m benchmarks.step_costs --experiments toy --preset test --steps 2 --output-dir /tmp/costs   # smoke run

Each method trains a few steps with `phi_hig.train` (the runner the command line uses, so the step is the one a
run makes) from the experiment's defaults; the cost is the median of the steps after the first (the first pays
for one-time set-up: it is recorded too), or the first step's time where one step takes longer than
``--cap`` / 2 seconds. Writes ``phi_hig/training/step_costs.json`` (read by the package) and
``benchmarks/results/step_costs.md``; the header records the machine, torch's threads and the load average
before and after, since shared cores change the numbers.
"""
import argparse
import json
import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # spinning OpenMP threads on shared cores: 5-50x slower, erratic
import shlex
import statistics
import subprocess
import sys
import time

import torch

from phi_hig.bench.machine import cpu_name
from phi_hig.errors import InvalidInputError
from phi_hig.experiments import available, get
from phi_hig.training.costs import REFERENCE_FILE
from phi_hig.training.kinds import ProblemSizes, offered
from phi_hig.training.runner import run
from phi_hig.training.spec import run_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def simulated_values(experiment) -> int:
    """|y|: the values the physics returns for one example (what a HIG step's Jacobian has rows for; the targets
    may hold more, e.g. poisson8's (ρ, φ*))."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        inputs = experiment.test_set[0]
        y = experiment.simulate(experiment.make_net()(inputs[:2]))
    return sum(t[0].numel() for t in (y if isinstance(y, (tuple, list)) else [y]))


def measure(name: str, steps: int, cap: float, sizes_only: dict = None, preset: str = 'paper') -> dict:
    """The sizes of experiment ``name`` at ``preset`` and, per method, its batch size and measured step times
    (``sizes_only``: an earlier measurement whose times are kept, only the sizes computed again)."""
    experiment = get(name, preset=preset)
    sizes = ProblemSizes(experiment)
    sizes.target_values = simulated_values(experiment)
    out = dict(description=experiment.description, settings=experiment.settings, parameters=sizes.params,
               outputs=sizes.target_values, methods={})
    for method in offered(experiment):
        spec = run_spec(experiment, [method], steps=steps, seconds=cap, eval_every=10 ** 6)
        hyper = spec.hyperparameters[method]
        need = [n for n in spec.kind(method).memory(hyper, sizes)]
        if sizes_only is not None:
            out['methods'][method] = dict(sizes_only['methods'][method], batch_size=hyper['batch_size'],
                                          **({'memory': {n.what: n.nbytes for n in need}} if need else {}))
            continue
        try:
            result = run(spec, progress=False)
        except InvalidInputError as err:  # e.g. weights a step made non-finite, refused by the physics: fewer steps
            print(f"{name:>15} {method:>22}  {steps} steps failed ({err}); timing 2", flush=True)
            result = run(run_spec(experiment, [method], steps=2, seconds=cap, eval_every=10 ** 6), progress=False)
        times = [r['wall_time'] for r in result.records if r['method'] == method]
        per_step = [b - a for a, b in zip(times, times[1:])]
        out['methods'][method] = dict(
            batch_size=hyper['batch_size'], steps_timed=len(per_step),
            first_step=per_step[0] if per_step else float('nan'),
            seconds_per_step=statistics.median(per_step[1:]) if len(per_step) > 1 else
            (per_step[0] if per_step else float('nan')),
            **({'memory': {n.what: n.nbytes for n in need}} if need else {}))
        print(f"{name:>15} {method:>22}  b={hyper['batch_size']:<5} {out['methods'][method]['seconds_per_step']:.3g} "
              f"s/step (first {out['methods'][method]['first_step']:.3g} s, {len(per_step)} steps)", flush=True)
    return out


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--experiments', nargs='*', help='default: every available experiment')
    parser.add_argument('--steps', type=int, default=4, help='steps per method (default 4)')
    parser.add_argument('--cap', type=float, default=60.0, help='training seconds per method at most (default 60)')
    parser.add_argument('--sizes-only', action='store_true',
                        help='recompute the sizes (|θ|, |y|, memory) of the stored measurements, keep their times')
    parser.add_argument('--preset', default='paper', help="the experiments' preset (the package's costs: paper)")
    parser.add_argument('--output-dir', default=None,
                        help="write step_costs.json and step_costs.md there instead of the package's reference file "
                             "and benchmarks/results")
    args = parser.parse_args(argv)
    names = args.experiments or available()
    reference = os.path.join(args.output_dir, 'step_costs.json') if args.output_dir else REFERENCE_FILE
    path = os.path.join(args.output_dir or os.path.join(ROOT, 'benchmarks', 'results'), 'step_costs.md')
    load_before = os.getloadavg()
    started = time.time()
    try:  # the code measured: the commit at the start (and whether the tree had changes)
        commit = subprocess.run(['git', 'describe', '--always', '--dirty'], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ''
    previous = {}
    if os.path.exists(reference):
        with open(reference) as f:
            previous = json.load(f).get('experiments', {})
    experiments = dict(previous)
    if args.sizes_only:
        with open(reference) as f:
            kept = json.load(f)
        for name in names:
            kept['experiments'][name] = measure(name, args.steps, args.cap, sizes_only=kept['experiments'][name],
                                                preset=args.preset)
        with open(reference, 'w') as f:
            json.dump(kept, f, indent=1, default=float)
            f.write('\n')
        print(f"updated the sizes in {reference}")
        return
    for name in names:
        experiments[name] = measure(name, args.steps, args.cap, preset=args.preset)
    machine = dict(cpu=cpu_name(), cores=os.cpu_count(), torch=torch.__version__, torch_threads=torch.get_num_threads(),
                   load_before=[round(x, 2) for x in load_before],
                   load_after=[round(x, 2) for x in os.getloadavg()])
    data = dict(date=time.strftime('%Y-%m-%d'), commit=commit, machine=machine, seconds=round(time.time() - started),
                experiments={n: experiments[n] for n in available() if n in experiments})
    with open(reference, 'w') as f:
        json.dump(data, f, indent=1, default=float)
        f.write('\n')
    lines = [f'# Seconds per training step at the {args.preset} preset', '',
             f"`{shlex.join(['python', '-m', 'benchmarks.step_costs', *argv])}` ({data['date']}, commit "
             f"{commit or '?'}): {machine['cpu']}, "
             f"{machine['cores']} cores, torch {machine['torch']} with {machine['torch_threads']} threads (each "
             f"experiment may set its own), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average "
             f"{machine['load_before'][0]} before and {machine['load_after'][0]} after ({data['seconds']} s). Median "
             f"of the steps after the first.", '',
             '| experiment | method | batch | s / step | first step [s] |', '|---|---|---:|---:|---:|']
    for name, e in data['experiments'].items():
        for method, m in e['methods'].items():
            lines.append(f"| {name} | {method} | {m['batch_size']} | {m['seconds_per_step']:.3g} | "
                         f"{m['first_step']:.3g} |")
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print(f"wrote {reference} and {path}")


if __name__ == '__main__':
    main()
