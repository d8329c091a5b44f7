"""Command line: ``python -m phi_hig {list, run, sweep, bench, report, gui}``.

    python -m phi_hig list
    python -m phi_hig run toy --methods hig,adam --seconds 10 --seed 0 --out runs/toy
    python -m phi_hig run oscillators --methods hig,adam --steps 200 --hp hig.lr=0.5 --hp adam.batch_size=128
    python -m phi_hig sweep toy --method hig --kappa -1,-0.5,0,0.5,1 --beta -0.5,0 --steps 300 --out runs/sweep
    python -m phi_hig bench [ARGS]       # HIG step benchmark (benchmarks/hig_step.py)
    python -m phi_hig report DIR         # paper-style figures and a Markdown table from a run folder
    python -m phi_hig gui [EXPERIMENT]   # live training dashboard in the browser (needs phi_hig[gui])
"""
from __future__ import annotations

import argparse
import ast
import itertools
import os
import sys

from .errors import InvalidInputError


def _value(text: str):
    """Parse a command-line value: a Python literal if it is one (numbers, booleans), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _assignments(items, what: str) -> dict:
    out = {}
    for item in items or []:
        if '=' not in item:
            raise InvalidInputError(f"{what} must look like KEY=VALUE, got {item!r}")
        key, value = item.split('=', 1)
        out[key.strip()] = _value(value.strip())
    return out


def _floats(text: str, name: str) -> list:
    try:
        return [float(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise InvalidInputError(f"--{name} must be comma-separated numbers, got {text!r}") from None


def _budget_args(p):
    p.add_argument('--steps', type=int, help='step budget per method')
    p.add_argument('--seconds', type=float, help='training wall-clock budget per method (evaluation excluded)')
    p.add_argument('--seed', type=int, default=0, help='seed of the initial weights and the data stream')
    p.add_argument('--preset', default='paper', help="experiment size: 'paper' (default) or 'test' (tiny)")
    p.add_argument('--set', action='append', metavar='KEY=VALUE', help='experiment setting, e.g. gamma=1')
    p.add_argument('--eval-every', type=int, help='evaluation cadence in steps')
    p.add_argument('--threads', type=int, help='torch threads (default: the experiment\'s recommendation)')
    p.add_argument('--device', default='cpu', help="torch device, e.g. 'cuda'")
    p.add_argument('--out', help='output folder (metrics.csv, summary.json, curves.png)')
    p.add_argument('--quiet', action='store_true', help='no progress lines')


def _experiment(args):
    from .experiments import get
    return get(args.experiment, preset=args.preset, **_assignments(args.set, '--set'))


def cmd_list(args) -> int:
    from .experiments import NAMES, available, get
    ready = available()
    print(f"{'experiment':<16} methods")
    for name in NAMES:
        if name in ready:
            ex = get(name, preset='test')
            print(f"{name:<16} {', '.join(ex.methods)}")
        else:
            print(f"{name:<16} (planned)")
    return 0


def cmd_run(args) -> int:
    from . import train
    from .report import write_run
    experiment = _experiment(args)
    methods = [m.strip() for m in (args.methods or ','.join(experiment.methods)).split(',') if m.strip()]
    overrides = {m: {} for m in methods}
    for m in methods:
        if args.lr is not None:
            overrides[m]['lr'] = args.lr
        if args.batch_size is not None:
            overrides[m]['batch_size'] = args.batch_size
        if args.truncation is not None and m in ('hig', 'gn'):
            overrides[m]['truncation'] = args.truncation
    for key, value in _assignments(args.hp, '--hp').items():
        if '.' not in key:
            raise InvalidInputError(f"--hp needs METHOD.KEY=VALUE, got {key!r}")
        method, hp = key.split('.', 1)
        if method not in overrides:
            raise InvalidInputError(f"--hp names method {method!r}, which is not in --methods {args.methods}")
        overrides[method][hp] = value
    if args.steps is None and args.seconds is None:
        raise InvalidInputError("give a budget: --steps N or --seconds S")
    result = train(experiment, methods, steps=args.steps, seconds=args.seconds, seed=args.seed,
                   eval_every=args.eval_every, overrides={m: o for m, o in overrides.items() if o},
                   device=args.device, progress=not args.quiet, out=args.out,
                   checkpoint_every=args.checkpoint_every, resume=args.resume, threads=args.threads)
    print(f"{'method':<10} {'steps':>7} {'s/step':>9} {'test loss':>11}  status")
    for m, f in result.summary['final'].items():
        print(f"{m:<10} {f['steps']:>7} {f['seconds_per_step']:>9.2e} {f.get('test_loss', float('nan')):>11.3e}  {f['status']}")
    if args.out:
        write_run(result, args.out)
        print(f"wrote {args.out}/metrics.csv, summary.json, curves.png")
    return 0


def cmd_sweep(args) -> int:
    from . import train
    from .report import pyplot, write_metrics_csv
    experiment = _experiment(args)
    if args.method not in experiment.methods:
        raise InvalidInputError(f"experiment {experiment.name!r} has no method {args.method!r}")
    defaults = experiment.methods[args.method]
    kappas = _floats(args.kappa, 'kappa') if args.kappa else [defaults.get('kappa', -0.5)]
    betas = _floats(args.beta, 'beta') if args.beta else [defaults.get('beta', 0.0)]
    taus = _floats(args.truncation, 'truncation') if args.truncation else [defaults.get('truncation', 1e-6)]
    if args.steps is None and args.seconds is None:
        raise InvalidInputError("give a budget: --steps N or --seconds S")
    from .runner import train_variants
    grid = list(itertools.product(kappas, betas, taus))
    variants = [(f'kappa={k:g} beta={b:g} truncation={t:g}', args.method, dict(kappa=k, beta=b, truncation=t))
                for k, b, t in grid]
    results = train_variants(experiment, variants, steps=args.steps, seconds=args.seconds, seed=args.seed,
                             eval_every=args.eval_every, device=args.device, progress=not args.quiet,
                             threads=args.threads)
    rows, records = [], []
    for (kappa, beta, tau), result in zip(grid, results.values()):
        final = result.summary['final'][args.method]
        rows.append(dict(experiment=experiment.name, method=args.method, step=final['steps'],
                         wall_time=final['train_seconds'], train_loss=float('nan'),
                         test_loss=final.get('test_loss', float('nan')), kappa=kappa, beta=beta, truncation=tau,
                         status=final['status']))
        records += [dict(r, kappa=kappa, beta=beta, truncation=tau) for r in result.records]
    print(f"{'kappa':>7} {'beta':>6} {'truncation':>10} {'test loss':>11}")
    for r in rows:
        print(f"{r['kappa']:>7g} {r['beta']:>6g} {r['truncation']:>10g} {r['test_loss']:>11.3e}  {r['status']}")
    out = args.out or os.path.join('runs', f'sweep_{experiment.name}')
    os.makedirs(out, exist_ok=True)
    write_metrics_csv(rows, os.path.join(out, 'sweep.csv'))
    write_metrics_csv(records, os.path.join(out, 'metrics.csv'))
    _sweep_figure(rows, kappas, betas, taus, os.path.join(out, 'sweep.png'), experiment.name, args.method, pyplot())
    print(f"wrote {out}/sweep.csv, metrics.csv, sweep.png")
    return 0


def _sweep_figure(rows, kappas, betas, taus, path, name, method, plt):
    """Heat map of the final loss over (κ, β) for each truncation; a line over τ if only τ varies."""
    import numpy as np
    if len(kappas) == 1 and len(betas) == 1:
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.loglog([r['truncation'] for r in rows], [r['test_loss'] for r in rows], 'o-')
        ax.set(xlabel='truncation τ', ylabel='final test loss', title=f'{name}/{method}')
    else:
        fig, axes = plt.subplots(1, len(taus), figsize=(5 * len(taus), 4), squeeze=False)
        for ax, tau in zip(axes[0], taus):
            grid = np.full((len(betas), len(kappas)), np.nan)
            for r in rows:
                if r['truncation'] == tau:
                    grid[betas.index(r['beta']), kappas.index(r['kappa'])] = r['test_loss']
            im = ax.imshow(np.log10(grid), origin='lower', aspect='auto', cmap='viridis')
            ax.set_xticks(range(len(kappas)), [f'{k:g}' for k in kappas])
            ax.set_yticks(range(len(betas)), [f'{b:g}' for b in betas])
            ax.set(xlabel='κ', ylabel='β', title=f'{name}/{method}, τ = {tau:g}')
            fig.colorbar(im, ax=ax, label='log10 final test loss')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _delegate(module: str, argv: list) -> int:
    import importlib
    try:
        main = importlib.import_module(module).main
    except ModuleNotFoundError as err:
        print(f"phi_hig: {module} is not available ({err}); see README for its extra", file=sys.stderr)
        return 2
    return main(argv) or 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ('bench', 'report', 'gui'):
        target = {'bench': 'benchmarks.hig_step', 'report': 'phi_hig.report', 'gui': 'phi_hig.gui'}[argv[0]]
        if argv[0] == 'bench' and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        return _delegate(target, argv[1:])
    parser = argparse.ArgumentParser(prog='python -m phi_hig', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('list', help='experiments and the methods each supports')
    run = sub.add_parser('run', help='train methods on an experiment and compare them')
    run.add_argument('experiment')
    run.add_argument('--methods', help="comma-separated methods (default: all of the experiment's methods)")
    _budget_args(run)
    run.add_argument('--lr', type=float, help='learning rate for every method')
    run.add_argument('--batch-size', type=int, help='batch size for every method')
    run.add_argument('--truncation', type=float, help='HIG/GN truncation')
    run.add_argument('--hp', action='append', metavar='METHOD.KEY=VALUE', help='per-method hyperparameter')
    run.add_argument('--checkpoint-every', type=int, help='checkpoint cadence in steps (needs --out)')
    run.add_argument('--resume', action='store_true', help='continue from checkpoints in --out')
    sweep = sub.add_parser('sweep', help='grid over κ, β and truncation for HIG (paper appendix C)')
    sweep.add_argument('experiment')
    sweep.add_argument('--method', default='hig')
    sweep.add_argument('--kappa', help='comma-separated κ values in [-1, 1]')
    sweep.add_argument('--beta', help='comma-separated β values')
    sweep.add_argument('--truncation', help='comma-separated truncation values')
    _budget_args(sweep)
    # let comma lists of negative numbers follow their option: --kappa -1,-0.5 -> --kappa=-1,-0.5
    for i in range(len(argv) - 1, 0, -1):
        if argv[i - 1] in ('--kappa', '--beta', '--lr') and argv[i].startswith('-'):
            argv[i - 1:i + 1] = [f'{argv[i - 1]}={argv[i]}']
    args = parser.parse_args(argv)
    try:
        return {'list': cmd_list, 'run': cmd_run, 'sweep': cmd_sweep}[args.command](args)
    except InvalidInputError as err:
        print(f"phi_hig: error: {err}", file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
