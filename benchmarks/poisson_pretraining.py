"""HIG continuing from Adam-pre-trained weights on the 8×8 Poisson problem (Schnell, Holl & Thuerey 2022, §3.2,
Fig. 3c, and appendix Fig. 7b): the paper's protocol, at a size the flags choose.

    python -m benchmarks.poisson_pretraining --out runs/pp     # the paper's size (days on a 2-core CPU)
    python -m benchmarks.poisson_pretraining --out runs/pp --pretrain-cap 20000 --sweep 0.005,0.02,0.05 \\
        --sweep-steps 2 --steps 10 --adam-steps 3000 --seeds 0 --reverse-steps 2000    # the size of results/

1. **Pre-training**: Adam (η = 1e-4, the experiment's own, batch 64, the paper network of 41,408 parameters) from the
   seeded initialization until its held-out loss plateaus: the run is extended by ``--window`` steps at a time
   (`phi_hig.train` with ``resume``), and it has plateaued when the best held-out loss of the last window is less
   than ``--plateau`` (relative, default 2 %) below the best before it, or at ``--pretrain-cap`` steps.
2. **η of HIG**: a sweep of HIG's η over ``--sweep`` (in the paper's convention, the summed loss: η 0.005–0.05; the
   runner's HIG takes the gradient of the batch-mean loss, so its lr is η·64), each ``--sweep-steps`` steps from the
   pre-trained weights; the η with the lowest held-out loss is chosen.
3. **Continuation**: Adam (η = 1e-4, fresh moments), HIG (the chosen η) and Gauss–Newton (HIG with κ = −1, the
   same η and τ) each continue from the same pre-trained weights for ``--steps`` steps (Adam also for
   ``--adam-steps``, which costs little), for each seed of ``--seeds`` (the seed draws the data stream; the
   weights are the same).
4. **Reverse** (appendix Fig. 7b): Adam (η = 1e-4) continuing from the HIG-trained weights of the first seed for
   ``--reverse-steps`` steps.

Every phase is one `phi_hig.train` call with ``init_from='RUN_DIR:METHOD'`` (the runner's one training loop); the
run folders go to ``--out``/runs. Writes ``poisson_pretraining.json``, ``.md`` and ``.png`` to ``--out``, with the
command, the wall time of each phase and the machine's load. ``--pretrained RUN_DIR:METHOD`` skips phase 1; a
pre-training left in ``--out`` by an earlier call (its last final checkpoint) is continued, not repeated.
"""
from __future__ import annotations

import argparse
import json
import math
import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # spinning OpenMP threads on shared cores: 5-50x slower, erratic
import re
import shlex
import sys
import time

import phi_hig
from phi_hig.bench.machine import cpu_name, load_average
from phi_hig.cli import parse_assignments
from phi_hig.files import atomic_write
from phi_hig.training.checkpoint import read_checkpoint, checkpoint_path
from phi_hig.training.spec import build_experiment

NAME = 'poisson_pretraining'


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def curve(result, method: str) -> list:
    """``[(step, held-out loss), ...]`` of ``method``'s evaluated records."""
    return [(r['step'], r['test_loss']) for r in result.records
            if r['method'] == method and _finite(r.get('test_loss'))]


def thinned(points: list, keep: int = 400) -> list:
    """At most ``keep`` of ``points``, evenly spaced, the first and the last kept (for the result file)."""
    if len(points) <= keep:
        return points
    return [points[round(i * (len(points) - 1) / (keep - 1))] for i in range(keep)]


def dump(results: dict) -> str:
    """The results as JSON, indented, with each ``[step, value]`` pair of a curve on one line."""
    return re.sub(r'\[\s+(-?\d+),\s+([^\s,\]]+)\s+\]', r'[\1, \2]', json.dumps(results, indent=1)) + '\n'


def plateaued(points: list, window: int, threshold: float) -> bool:
    """Whether the best held-out loss of the last ``window`` steps is less than ``threshold`` (relative) below the
    best before them (False while fewer than two windows were trained)."""
    if not points or points[-1][0] < 2 * window:
        return False
    last = points[-1][0]
    before = min(v for s, v in points if s <= last - window)
    within = min(v for s, v in points if s > last - window)
    return (before - within) / before < threshold


class Protocol:
    """The phases of the protocol (module docstring), each recorded in ``self.results``."""

    def __init__(self, args):
        self.args = args
        self.runs = os.path.join(args.out, 'runs')
        self.experiment = build_experiment('poisson8', args.preset, parse_assignments(args.set, '--set'))
        self.batch = self.experiment.methods['hig']['batch_size']
        self.results = dict(command=shlex.join(['python', '-m', f'benchmarks.{NAME}'] + args.argv),
                            machine=dict(cpu=cpu_name(), cores=os.cpu_count(), load_before=load_average()),
                            settings=dict(self.experiment.settings), seeds=args.seeds, phases={})

    def train(self, folder: str, method: str, steps: int, **kw):
        """One `phi_hig.train` of ``method`` into ``runs/folder`` (checkpointed: its final weights are kept)."""
        return phi_hig.train(self.experiment, [method], steps=steps, out=os.path.join(self.runs, folder),
                             checkpoint_every=max(steps, 1), progress=not self.args.quiet, threads=self.args.threads,
                             **kw)

    def say(self, text: str) -> None:
        print(f"[{NAME} {time.strftime('%H:%M:%S')}] {text}", flush=True)

    def phase(self, name: str, started: float, **values) -> None:
        self.results['phases'][name] = dict(wall_seconds=round(time.perf_counter() - started, 1), **values)
        self.say(f"{name} done in {self.results['phases'][name]['wall_seconds']} s")

    def pretrain(self) -> str:
        args = self.args
        if args.pretrained:
            folder, method = args.pretrained.rsplit(':', 1)
            ck = read_checkpoint(checkpoint_path(folder, method))
            self.results['phases']['pretrain'] = dict(source=args.pretrained, steps=ck.step, wall_seconds=0.0)
            return args.pretrained
        started, points = time.perf_counter(), []
        path = checkpoint_path(os.path.join(self.runs, 'pretrain'), 'adam')
        steps = read_checkpoint(path).step if os.path.exists(path) and read_checkpoint(path).final else 0
        if steps:
            self.say(f"pre-training: continuing the one in {os.path.dirname(path)} from step {steps}")
        while steps < args.pretrain_cap and not plateaued(points, args.window, args.plateau):
            steps = min(steps + args.window, args.pretrain_cap)
            extend = os.path.exists(path) and read_checkpoint(path).final
            result = self.train('pretrain', 'adam', steps, resume=extend, overwrite=not extend, seed=1000)
            points = curve(result, 'adam')
            self.say(f"pre-training: step {steps}, held-out loss {points[-1][1]:.4g}")
        self.phase('pretrain', started, steps=steps, plateau=plateaued(points, args.window, args.plateau),
                   final=points[-1][1], curve=thinned(points))
        return os.path.join(self.runs, 'pretrain') + ':adam'

    def sweep(self, source: str) -> float:
        args, started, points = self.args, time.perf_counter(), {}
        for eta in args.sweep:
            result = self.train(f'sweep_eta{eta:g}', 'hig', args.sweep_steps, init_from=source, eval_every=1,
                                overrides={'hig': {'lr': eta * self.batch}})
            points[eta] = dict(final=result.final('hig'), status=result.summary['final']['hig']['status'],
                               curve=curve(result, 'hig'))
            self.say(f"sweep: η {eta:g} (lr {eta * self.batch:g}): held-out loss {points[eta]['final']:.4g}")
        usable = {eta: p['final'] for eta, p in points.items() if _finite(p['final']) and p['status'] == 'ok'}
        chosen = min(usable, key=usable.get) if usable else args.sweep[0]
        self.phase('sweep', started, points={f'{eta:g}': p for eta, p in points.items()}, chosen=chosen)
        return chosen

    def continue_from(self, source: str, eta: float) -> None:
        args, started, runs = self.args, time.perf_counter(), {}
        variants = [('adam', 'adam', max(args.steps, args.adam_steps), None),
                    ('hig', 'hig', args.steps, {'lr': eta * self.batch}),
                    ('gn', 'hig', args.steps, {'lr': eta * self.batch, 'kappa': -1.0})]
        for seed in args.seeds:
            for label, method, steps, hyper in variants:
                result = self.train(f'{label}_seed{seed}', method, steps, init_from=source, seed=seed,
                                    eval_every=1 if method == 'hig' else min(20, args.steps),
                                    overrides={method: hyper} if hyper else None)
                final = result.summary['final'][method]
                runs.setdefault(label, {})[seed] = dict(
                    curve=curve(result, method), status=final['status'], steps=final['steps'],
                    seconds_per_step=final['seconds_per_step'], source=result.summary['init_from'])
                self.say(f"{label} seed {seed}: {final['steps']} steps, held-out loss "
                         f"{result.final(method):.4g} ({final['status']})")
        self.phase('continue', started, eta=eta, runs=runs)

    def reverse(self) -> None:
        args, started = self.args, time.perf_counter()
        source = os.path.join(self.runs, f'hig_seed{args.seeds[0]}') + ':hig'
        result = self.train('reverse_adam', 'adam', args.reverse_steps, init_from=source, seed=args.seeds[0])
        self.phase('reverse', started, source=result.summary['init_from'], curve=curve(result, 'adam'),
                   status=result.summary['final']['adam']['status'])

    def run(self) -> dict:
        started = time.perf_counter()
        source = self.pretrain()
        eta = self.sweep(source)
        self.continue_from(source, eta)
        if self.args.reverse_steps:
            self.reverse()
        self.results.update(wall_seconds=round(time.perf_counter() - started, 1))
        self.results['machine']['load_after'] = load_average()
        return self.results


def _at(points: list, step: int) -> float:
    """The held-out loss evaluated at ``step`` (NaN if not evaluated there)."""
    return next((v for s, v in points if s == step), float('nan'))


def markdown(results: dict) -> str:
    """The results as a Markdown page: the command, the machine, each phase's numbers."""
    phases, machine = results['phases'], results['machine']
    pre, sweep, cont = phases['pretrain'], phases['sweep'], phases['continue']
    lines = ["# Poisson pre-training (Schnell, Holl & Thuerey 2022, §3.2, Fig. 3c / 7b)", '',
             f"`{results['command']}`", '',
             f"Wall time {results['wall_seconds']:.0f} s on {machine['cpu']} ({machine['cores']} cores), load average "
             f"{machine['load_before']} before, {machine.get('load_after')} after. Settings: "
             + ', '.join(f"{k}={v}" for k, v in results['settings'].items()) + '.', '',
             "## Pre-training (Adam, η = 1e-4)", '']
    if 'source' in pre:
        lines.append(f"From `{pre['source']}` ({pre['steps']} steps).")
    else:
        lines.append(f"{pre['steps']} steps, held-out loss {pre['final']:.4g} "
                     f"({'plateaued' if pre['plateau'] else 'stopped at the cap, not plateaued'}); "
                     f"{pre['wall_seconds']:.0f} s.")
    lines += ['', f"## η of HIG (each {len(next(iter(sweep['points'].values()))['curve']) - 1} steps from the "
                  f"pre-trained weights)", '', '| η (summed loss) | lr (batch mean) | held-out loss | status |',
              '|---:|---:|---:|---|']
    batch = results['settings'].get('batch_size', 64)
    for eta, p in sweep['points'].items():
        lines.append(f"| {eta} | {float(eta) * batch:g} | {p['final']:.4g} | {p['status']} |")
    lines += ['', f"Chosen: η = {sweep['chosen']:g}. {sweep['wall_seconds']:.0f} s.", '',
              "## Continuation from the same pre-trained weights", '']
    steps = max(len(r['curve']) and r['curve'][-1][0] for runs in cont['runs'].values() for r in runs.values())
    n = min(r['steps'] for label in ('hig', 'gn') for r in cont['runs'].get(label, {}).values())
    lines += [f"| method | seed | s/step | held-out loss at step 0 | at step {n} | last step | at last step | status |",
              '|---|---:|---:|---:|---:|---:|---:|---|']
    for label, runs in cont['runs'].items():
        for seed, r in runs.items():
            lines.append(f"| {label} | {seed} | {r['seconds_per_step']:.3g} | {_at(r['curve'], 0):.4g} | "
                         f"{_at(r['curve'], n):.4g} | {r['steps']} | {r['curve'][-1][1]:.4g} | {r['status']} |")
    lines += ['', f"{cont['wall_seconds']:.0f} s (up to step {steps})."]
    if 'reverse' in phases:
        rev = phases['reverse']
        lines += ['', "## Reverse: Adam (η = 1e-4) from the HIG-trained weights", '',
                  f"From `{rev['source']['run']}` (step {rev['source']['step']}): held-out loss "
                  f"{_at(rev['curve'], 0):.4g} at step 0, {rev['curve'][-1][1]:.4g} at step {rev['curve'][-1][0]} "
                  f"({rev['status']}); {rev['wall_seconds']:.0f} s."]
    return '\n'.join(lines + [''] + varied(results)) + '\n'


def varied(results: dict) -> list:
    """What this call varied from the paper's protocol (the defaults of `parser`), read from its command."""
    given = parser().parse_args(shlex.split(results['command'])[3:])
    paper = parser().parse_args([])
    pre = results['phases']['pretrain']
    out = ["## Varied from the paper's protocol", '']
    if 'source' in pre:
        out.append(f"- Pre-training: given (`--pretrained {pre['source']}`).")
    elif not pre['plateau']:
        out.append(f"- Pre-training: stopped at the cap of {given.pretrain_cap} steps before the plateau criterion "
                   f"(best held-out loss of the last {given.window} steps < {given.plateau:.0%} below the best "
                   f"before) was met: the Adam model is not converged, unlike the paper's best Adam model.")
    for key, what in (('sweep', 'η values of the HIG sweep'), ('sweep_steps', 'steps per sweep point'),
                      ('steps', 'continuation steps of HIG and GN'), ('adam_steps', 'continuation steps of Adam'),
                      ('seeds', 'seeds'), ('reverse_steps', 'steps of Adam from the HIG weights')):
        if getattr(given, key) != getattr(paper, key):
            default = 'as HIG' if key == 'adam_steps' else getattr(paper, key)
            out.append(f"- {what}: {getattr(given, key)} (the protocol: {default}).")
    settings = [f'{s}' for s in (given.set or [])] + ([f'preset={given.preset}'] if given.preset != 'paper' else [])
    if settings:
        out.append(f"- settings: {', '.join(settings)}.")
    s = results['settings']
    out.append(f"- As in the paper: the {s.get('network')} network ({s.get('parameters')} parameters), batch "
               f"{s.get('batch_size')}, Adam η = 1e-4 (fresh moments at each continuation), HIG τ = 1e-5, "
               f"κ = −0.5. Not stated by the paper, chosen here: GN is HIG with κ = −1 at HIG's chosen η; the "
               f"pre-training draws its data with seed 1000, the continuations with their own seeds.")
    return out


def figure(results: dict, path: str) -> None:
    """Held-out loss over steps: (a) pre-training, (b) the continuations, (c) the reverse."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    phases = results['phases']
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    pre = phases['pretrain']
    if 'curve' in pre:
        axes[0].plot(*zip(*pre['curve']), color='k', label='Adam η=1e-4')
        axes[0].legend()
    axes[0].set(title='(a) pre-training', xlabel='step', ylabel='held-out loss', yscale='log')
    axes[0].xaxis.set_major_locator(MaxNLocator(5, integer=True))
    colors = dict(adam='tab:orange', hig='tab:blue', gn='tab:green')
    runs = phases['continue']['runs']
    for label, by_seed in runs.items():
        for i, (seed, r) in enumerate(by_seed.items()):
            axes[1].plot(*zip(*r['curve']), color=colors[label], alpha=1 if i == 0 else 0.5,
                         label=f"{label}" if i == 0 else None, marker='.' if len(r['curve']) < 60 else None)
    axes[1].set(title=f"(b) from the Adam weights (HIG / GN η = {phases['continue']['eta']:g})",
                xlabel='steps after the pre-training', yscale='log')
    axes[1].legend()
    if 'reverse' in phases:
        hig = next(iter(runs['hig'].values()))['curve']
        adam = next(iter(runs['adam'].values()))['curve']
        offset = hig[-1][0]
        axes[2].plot(*zip(*adam), color='tab:orange', ls='--', label='Adam from the Adam weights')
        axes[2].plot(*zip(*hig), color='tab:blue', marker='.', label='HIG from the Adam weights')
        axes[2].plot([s + offset for s, _ in phases['reverse']['curve']], [v for _, v in phases['reverse']['curve']],
                     color='tab:red', label=f'Adam from the HIG weights (from step {offset})')
        axes[2].legend()
    axes[2].set(title='(c) Adam continuing from the HIG weights', xlabel='steps after the pre-training',
                yscale='log')
    for ax in axes[1:]:
        ax.set_xscale('symlog', linthresh=10)
        ax.set_xlim(left=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f'python -m benchmarks.{NAME}', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default=os.path.join('runs', NAME), help='folder of the run folders and the results')
    p.add_argument('--preset', default='paper')
    p.add_argument('--set', action='append', metavar='KEY=VALUE', help='poisson8 setting, e.g. network=code')
    p.add_argument('--pretrained', metavar='RUN_DIR:METHOD', help='skip the pre-training: start from these weights')
    p.add_argument('--window', type=int, default=2000, help='steps per plateau check of the pre-training')
    p.add_argument('--plateau', type=float, default=0.02,
                   help='plateau: the last window improved the best held-out loss by less than this (relative)')
    p.add_argument('--pretrain-cap', type=int, default=200_000, help='most pre-training steps')
    p.add_argument('--sweep', default='0.005,0.01,0.02,0.05', help="HIG's η values (summed-loss convention)")
    p.add_argument('--sweep-steps', type=int, default=200, help='steps of each sweep point')
    p.add_argument('--steps', type=int, default=2000, help='continuation steps of HIG and GN (and Adam)')
    p.add_argument('--adam-steps', type=int, default=0, help='continuation steps of Adam, if more than --steps')
    p.add_argument('--seeds', default='0,1,2', help='seeds of the continuation (the data stream)')
    p.add_argument('--reverse-steps', type=int, default=2000, help='steps of Adam from the HIG weights (0: none)')
    p.add_argument('--threads', type=int, help="torch threads (default: the experiment's)")
    p.add_argument('--quiet', action='store_true', help="no runner progress lines")
    p.add_argument('--render', action='store_true', help="only write the .md and .png again from --out's .json")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv
    args.sweep = [float(v) for v in args.sweep.split(',') if v.strip()]
    args.seeds = [int(v) for v in args.seeds.split(',') if v.strip()]
    if not args.sweep or not args.seeds or min(args.window, args.pretrain_cap, args.sweep_steps, args.steps) < 1:
        parser().error('--sweep and --seeds need values; --window, --pretrain-cap, --sweep-steps, --steps >= 1')
    base = os.path.join(args.out, NAME)
    if args.render:
        with open(base + '.json') as f:
            results = json.load(f)
    else:
        os.makedirs(args.out, exist_ok=True)
        results = Protocol(args).run()
        atomic_write(base + '.json', dump(results))
    atomic_write(base + '.md', markdown(results))
    figure(results, base + '.png')
    print(f"wrote {base}.{'' if args.render else 'json, .'}md, .png")
    return 0


if __name__ == '__main__':
    sys.exit(main())
