"""Command line: ``python -m phi_hig {list, run, sweep, report, gui, bench}``.

    python -m phi_hig list
    python -m phi_hig run toy --methods hig,adam --seconds 10 --seed 0 --out runs/toy
    python -m phi_hig run oscillators --methods hig,adam --steps 200 --hp hig.lr=0.5 --hp adam.batch_size=128
    python -m phi_hig run heat --methods sip --steps 100 --hp sip.inverse_options.noise=0.1 --set batch_size=32
    python -m phi_hig run poisson8 --methods hig --steps 100 --init-from runs/pretrain:adam --out runs/hig
    python -m phi_hig sweep toy --method hig --kappa -1,-0.5,0,0.5,1 --beta -0.5,0 --steps 300 --out runs/sweep
    python -m phi_hig sweep toy --method adam --hp lr=0.01,0.1,1 --hp batch_size=16,64 --steps 300
    python -m phi_hig report DIR         # paper-style figures and a Markdown table from a run folder
    python -m phi_hig gui [EXPERIMENT]   # live training dashboard in the browser (needs phi_hig[gui])
    python -m phi_hig bench [ARGS]       # HIG step benchmark (phi_hig/bench/hig_step.py)

Every bad value is refused before anything trains: exit code 2 and one line ``phi_hig: error: …``; so is an
``--out`` another run is writing to (naming its PID and command) or that holds another run's files (give
``--resume`` or ``--overwrite``). A file that cannot be written (a full disk, no permission) ends the command at once
with one such line naming it, exit code 1. Ctrl-C (SIGINT) or SIGTERM ends a run after its current step with its
files written and one line saying how to resume, exit code 130 / 143 (`phi_hig.cli.interrupts`).
"""
from __future__ import annotations

import argparse
import itertools
import os
import shlex
import sys

from .cli import EXIT_STATUS, Parser, interrupts, parse_assignments, parse_values, plain_warnings, report_error
from .errors import InvalidInputError, PhiHigError

_DELEGATED = {'report': ('phi_hig.report', 'figures and a Markdown table of a run folder (python -m phi_hig report DIR)'),
              'gui': ('phi_hig.gui', 'live training dashboard in the browser (needs phi_hig[gui])'),
              'bench': ('phi_hig.bench.hig_step', 'HIG step benchmark: time and memory of one step, side by side')}


def _budget_args(p):
    p.add_argument('--steps', type=int, help='step budget per method')
    p.add_argument('--seconds', type=float, help='training wall-clock budget per method (evaluation excluded)')
    p.add_argument('--seed', type=int, default=0, help='seed of the initial weights and the data stream')
    p.add_argument('--preset', default='paper', help="experiment size: 'paper' (default) or 'test' (tiny)")
    p.add_argument('--set', action='append', metavar='KEY=VALUE', help='experiment setting, e.g. gamma=1')
    p.add_argument('--eval-every', type=int, help='evaluation cadence in steps')
    p.add_argument('--threads', type=int, help="torch threads (default: the experiment's recommendation)")
    p.add_argument('--device', default='cpu', help="torch device, e.g. 'cuda'")
    p.add_argument('--backend', default='torch', choices=('torch', 'jax'),
                   help="train on torch (default) or on PhiML's JAX backend (toy, poisson8; one process, CPU)")
    p.add_argument('--out', help='output folder (metrics.csv, summary.json, curves.png)')
    p.add_argument('--init-from', metavar='RUN_DIR:METHOD',
                   help='start every method from the final weights of METHOD in the run folder RUN_DIR (a run made '
                        'with --checkpoint-every that finished), e.g. runs/pretrain:adam')
    p.add_argument('--quiet', action='store_true', help='no progress lines')


def _per_method(items, what: str) -> dict:
    """``--hp METHOD.KEY=VALUE`` items as ``{method: {key: value}}`` (KEY may be ``inverse_options.NAME``)."""
    out = {}
    for key, value in parse_assignments(items, what).items():
        method, dot, hp = key.partition('.')
        if not dot or not method or not hp:
            raise InvalidInputError(f"{what} needs METHOD.KEY=VALUE, got {key!r}")
        out.setdefault(method, {})[hp] = value
    return out


def cmd_list(args) -> int:
    """``list``: every registered experiment with its description, its settings at the paper preset (what ``--set``
    changes) and the methods it offers (those it defines and every registered method kind offered to it,
    `phi_hig.training.kinds.offered`), each with its batch size and cost per step at the paper preset: measured on
    the reference CPU (`phi_hig.training.costs`; nothing is trained here), and for HIG / GN the (b·|y|)² float64 Gram
    matrix its step forms. Returns the exit status 0."""
    from .checks import human_bytes
    from .experiments import NAMES, available, factory, get
    from .experiments.settings import parameters
    from .training.costs import human_seconds, reference_costs
    from .training.kinds import offered
    ready, reference = available(), reference_costs()
    measured = reference.get('experiments', {})
    for name in args.experiments or NAMES:
        factory(name)  # an unknown name is refused, naming the known ones
        if name not in ready:
            print(f"{name}  (planned)\n")
            continue
        small = get(name, preset='test')  # the offered methods, without the paper size's data
        entry = measured.get(name) or {}
        print(f"{name}: {entry.get('description') or small.description}")
        defaults = {k: v for k, (_, v) in parameters(factory(name)).items()}  # what --set changes
        built = entry.get('settings') or {}  # as the paper preset resolved them (e.g. a default of None)
        print('  settings: ' + ' '.join(f'{k}={built.get(k, v)!r}' for k, v in defaults.items()))
        if entry:
            print(f"  network: {entry['parameters']} parameters; |y| = {entry['outputs']} values per example")
        print(f"    {'method':<22} {'batch':>6} {'s/step':>9}  HIG / GN: the float64 matrix of a step")
        for method in offered(small):
            cost = entry.get('methods', {}).get(method) or {}
            gram = ''
            for what, nbytes in (cost.get('memory') or {}).items():
                rows, params = cost['batch_size'] * entry['outputs'], entry['parameters']
                gram = (f"b·|y| = {rows} rows > |θ| = {params}: the dual |θ|², {human_bytes(nbytes)}" if
                        params < rows and 'Gram' in what else f"b·|y| = {rows} rows: {what} "
                        f"{'(b·|y|)²' if 'Gram' in what else 'J'}, {human_bytes(nbytes)}")
            print(f"    {method:<22} {cost.get('batch_size', '?'):>6} "
                  f"{human_seconds(cost.get('seconds_per_step', float('nan'))):>9}  {gram}")
        print()
    if reference:
        machine = reference['machine']
        print(f"s/step: training seconds per step at the paper preset, measured by python -m benchmarks.step_costs "
              f"on {reference['date']} ({machine['cpu']}, {machine['cores']} cores, load average "
              f"{machine['load_before'][0]}); '–': not measured. Other sizes: python -m phi_hig run … --steps 3. "
              f"A HIG / GN step grows with (b·|y|)² in memory and up to (b·|y|)³ in time (README, 'The cost of a "
              f"HIG step').")
    else:
        print("s/step: no reference costs in this installation (phi_hig/training/step_costs.json).")
    return 0


def _spec(args, methods, overrides=None, common=None, experiment=None, **extra):
    """The `RunSpec` of the command line's arguments; ``experiment``: the one built from them already (a sweep
    builds it once for all its points); ``extra``: further `run_spec` arguments (``out`` replaces ``--out``)."""
    from .training.spec import run_spec
    if experiment is None:
        experiment, preset, settings = args.experiment, args.preset, parse_assignments(args.set, '--set')
    else:
        preset = settings = None
    extra.setdefault('out', args.out)
    return run_spec(experiment, methods, preset=preset, settings=settings,
                    overrides=overrides, common=common, steps=args.steps, seconds=args.seconds, seed=args.seed,
                    eval_every=args.eval_every, device=args.device, threads=args.threads, init_from=args.init_from,
                    backend=args.backend, **extra)


def _interrupted(control, where: str, wrote: str, then: str) -> int:
    """The one line of a command ended by a signal (``phi_hig: interrupted by SIGINT …``); its exit status."""
    sys.stderr.write(f"phi_hig: interrupted by {control.interrupted} {where}: {wrote}; {then}\n")
    return EXIT_STATUS[control.interrupted]


def _resume_command(args) -> str:
    """How to continue this run: the same command with ``--resume`` (and without ``--overwrite``)."""
    from . import processes
    if processes.launched():
        return "the same torchrun command with --resume"
    argv = [a for a in args.argv if a != '--overwrite']
    return shlex.join(['python', '-m', 'phi_hig'] + argv + ([] if '--resume' in argv else ['--resume']))


def cmd_run(args, control) -> int:
    """``run``: one process, or every process of a ``torchrun`` job (`phi_hig.processes`): the global batch of each
    method is split across the ranks; rank 0 prints, evaluates and writes (`phi_hig.report.write_run`, also when
    interrupted). Returns the exit status (2: refused; 130 / 143: interrupted, after one line saying how to resume)."""
    from . import processes
    from .report import write_run
    from .training.runner import run
    common = {k: v for k, v in dict(lr=args.lr, batch_size=args.batch_size, truncation=args.truncation).items()
              if v is not None}
    device = processes.init_from_environment(args.device)
    try:
        args.device = device
        spec = _spec(args, args.methods, overrides=_per_method(args.hp, '--hp'), common=common,
                     checkpoint_every=args.checkpoint_every, resume=args.resume, overwrite=args.overwrite,
                     world_size=processes.world_size())
        result = run(spec, progress=not args.quiet and processes.is_root(), control=control,
                     write=(lambda r: write_run(r, spec.out)) if spec.out else None)
        if not processes.is_root():
            return EXIT_STATUS.get(control.interrupted, 0)
        if result.records:
            print(f"{'method':<10} {'batch':>6} {'steps':>7} {'s/step':>9} {'test loss':>11}  status")
        for m, f in result.summary['final'].items():
            flags = f"  [{', '.join(f['flags'])}]" if f['flags'] else ''
            print(f"{m:<10} {f['batch_size']:>6} {f['steps']:>7} {f['seconds_per_step']:>9.2e} "
                  f"{f.get('test_loss', float('nan')):>11.3e}  {f['status']}{flags}")
        for m, f in result.summary['final'].items():  # a result the experiment expects, e.g. the toy's GN plateau
            for note in f.get('expected', []):
                print(f"{m}: {note}")
        wrote = f"wrote {args.out}/metrics.csv, summary.json, curves.png" if args.out and result.records else ''
        if control.interrupted is None:
            if wrote:
                print(wrote)
            return 0
        stopped = [f"{f['status']} of {m}" for m, f in result.summary['final'].items()
                   if f['status'].startswith('interrupted')]
        where = stopped[0].replace('interrupted ', '') if stopped else 'before training' if not result.records \
            else 'after training'
        if not args.out:
            return _interrupted(control, where, 'nothing written (no --out)', 'start a new run to train again')
        if not spec.checkpoint_every:
            return _interrupted(control, where, wrote or 'nothing written',
                                'no checkpoints to resume from (--checkpoint-every N makes a run resumable)')
        return _interrupted(control, where, (wrote or 'nothing written') + ', checkpoints kept',
                            f"continue with: {_resume_command(args)}")
    except InvalidInputError as err:  # every rank refuses alike; rank 0 says why
        return report_error(err) if processes.is_root() else 2
    finally:
        processes.shutdown()


def cmd_sweep(args, control) -> int:
    """``sweep``: one run of ``args.method`` per point of the grid of hyperparameter values (``--kappa``, ``--beta``,
    ``--truncation``, ``--hp KEY=V1,V2``; an old key name such as HIG's ``method`` warns and sweeps its new name),
    every point's `RunSpec` validated before the first trains. ``--out`` is claimed for the sweep
    (`phi_hig.rundir.claim`, ``--overwrite`` replaces an earlier sweep), each point runs in its own folder
    (`phi_hig.rundir.point_folder`: ``metrics.csv``, ``summary.json``; ``report`` draws it), and as each point ends its
    row is added to sweep.csv, metrics.csv and summary.json (every point, for ``report``); sweep.png at the end. A
    diverged point has no final value (drawn flagged). Returns the exit status 0, or 130 / 143 when interrupted (the
    points that ended kept); a refusal raises `InvalidInputError`."""
    from . import rundir
    from .report import sweep_figure, value_label, write_metrics_csv, write_run, write_summary
    from .training.methods import MethodDefinition
    from .training.spec import build_experiment
    from .training.runner import run
    grid = {}
    for key in ('kappa', 'beta', 'truncation'):
        if getattr(args, key) is not None:
            grid[key] = parse_values(getattr(args, key), f'--{key}')
    for item in args.hp or []:
        key, sep, text = item.partition('=')
        key = key.strip()
        if not sep or not key:
            raise InvalidInputError(f"--hp must look like KEY=V1,V2,..., got {item!r}")
        if key in grid:
            raise InvalidInputError(f"--hp {key}: {key} is swept twice")
        grid[key] = parse_values(text, f'--hp {key}')
    if not grid:
        raise InvalidInputError("nothing to sweep: give --kappa, --beta, --truncation or --hp KEY=V1,V2,...")
    out = args.out or os.path.join('runs', f'sweep_{args.experiment}')
    args.out = out
    experiment = build_experiment(args.experiment, args.preset, parse_assignments(args.set, '--set'))
    definition = MethodDefinition(experiment, args.method)
    grid = definition.kind.current_names(args.method, grid)  # each key under its current name (warned once)
    keys = list(grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*grid.values())]
    labels = [' '.join(f'{k}={value_label(v)}' for k, v in point.items()) for point in points]
    specs = [_spec(args, [args.method], overrides={args.method: point}, experiment=experiment,
                   out=os.path.join(out, rundir.point_folder(i, label)))
             for i, (point, label) in enumerate(zip(points, labels))]  # all refused first
    reserved = ('experiment', 'method', 'step', 'wall_time', 'train_loss', 'test_loss', 'status', 'flags')
    column = {k: f'hp_{k}' if k in reserved else k for k in keys}  # a hyperparameter named like a record column
    rows, records, finals, hypers = [], [], {}, {}
    metrics, summary_file = (os.path.join(out, name) for name in rundir.RESULT_FILES[:2])
    table, figure = (os.path.join(out, name) for name in rundir.SWEEP_FILES)
    with rundir.claim(out, overwrite=args.overwrite, what='sweep'):
        for point, label, spec in zip(points, labels, specs):
            if control.interrupted:
                break
            result = run(spec, progress=not args.quiet, control=control, label=label,
                         write=lambda r, folder=spec.out: write_run(r, folder, curves=False))
            if not result.records:  # interrupted before this point began
                break
            final = result.summary['final'][args.method]
            row = dict(experiment=spec.name, method=args.method, step=final['steps'],
                       wall_time=final['train_seconds'], train_loss=final.get('train_loss', float('nan')),
                       test_loss=final.get('test_loss', float('nan')), **{column[k]: v for k, v in point.items()})
            row.setdefault('batch_size', final['batch_size'])
            row['status'] = final['status']
            if final['flags']:  # a column only when some point is flagged: no empty columns
                row['flags'] = ' '.join(final['flags'])
            rows.append(row)
            records += [dict(r, method=label, **{column[k]: v for k, v in point.items()}) for r in result.records]
            finals[label], hypers[label] = final, result.summary['hyperparameters'][args.method]
            summary = {k: v for k, v in result.summary.items() if k not in ('methods', 'hyperparameters', 'final')}
            summary.update(sweep=dict(method=args.method, keys=keys, points=len(points)), methods=list(finals),
                           hyperparameters=hypers, final=finals)  # the points as the methods of one run (`report`)
            write_metrics_csv(rows, table)  # each point kept as it ends
            write_metrics_csv(records, metrics)
            write_summary(summary, summary_file)
        if rows:
            sweep_figure(rows, {column[k]: v for k, v in grid.items()}, figure, f'{specs[0].name}/{args.method}')
    if rows:
        print(' '.join(f'{k:>12}' for k in keys) + f" {'test loss':>11}  status")
    for r in rows:
        print(' '.join(f'{value_label(r[column[k]]):>12}' for k in keys) + f" {r['test_loss']:>11.3e}  {r['status']}"
              + (f" [{r['flags']}]" if r.get('flags') else ''))
    wrote = f"wrote {out}/sweep.csv, metrics.csv, summary.json, sweep.png" if rows else ''
    if control.interrupted is None:
        print(wrote)
        return 0
    ended = [r for r in rows if not r['status'].startswith('interrupted')]
    where = f"at {labels[len(rows) - 1]} ({rows[-1]['status']})" if rows and len(ended) < len(rows) else \
        'between points'
    return _interrupted(control, where, f"{wrote or 'nothing written'} ({len(ended)} point(s) ended"
                                        f"{', 1 interrupted' if len(ended) < len(rows) else ''})",
                        f"{len(points) - len(ended)} point(s) not done: sweep them again into another --out, or "
                        f"this one with --overwrite")


def _delegate(command: str, argv: list) -> int:
    import importlib
    module = _DELEGATED[command][0]
    try:
        main = importlib.import_module(module).main
    except ModuleNotFoundError as err:
        return report_error(f"{command}: {module} is not available ({err}); see the README for its extra")
    try:
        return main(argv) or 0
    except SystemExit as exit_:  # argparse of the delegate: --help (0) or a one-line error (2)
        return exit_.code if isinstance(exit_.code, int) else 2


def parser() -> Parser:
    """The parser of ``python -m phi_hig`` (every subcommand is listed in its help)."""
    from .training.runner import MIN_CHECKPOINT_INTERVAL
    p = Parser(prog='python -m phi_hig', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='command', required=True, metavar='{list,run,sweep,report,gui,bench}')
    listing = sub.add_parser('list', help='experiments, their settings, methods and cost per step (measured on the '
                                          'reference CPU; nothing is trained)')
    listing.add_argument('experiments', nargs='*', metavar='EXPERIMENT', help='only these (default: every one)')
    run = sub.add_parser('run', help='train methods on an experiment and compare them')
    run.add_argument('experiment')
    run.add_argument('--methods', help="comma-separated methods (default: all of the experiment's methods)")
    _budget_args(run)
    run.add_argument('--lr', type=float, help='learning rate of every method')
    run.add_argument('--batch-size', type=int, help='batch size of every method')
    run.add_argument('--truncation', type=float, help='truncation of every method that has one (HIG, GN)')
    run.add_argument('--hp', action='append', metavar='METHOD.KEY=VALUE',
                     help='per-method hyperparameter, e.g. hig.kappa=-1 or sip.inverse_options.noise=0.1')
    run.add_argument('--checkpoint-every', type=int,
                     help=f'checkpoint every N steps, at most every {MIN_CHECKPOINT_INTERVAL:g} s, and when a method '
                          f'ends (needs --out)')
    run.add_argument('--resume', action='store_true', help='continue from the checkpoints in --out')
    run.add_argument('--overwrite', action='store_true',
                     help="replace another run's files in --out (only files phi_hig writes; anything else there is "
                          "refused)")
    sweep = sub.add_parser('sweep', help='grid over any hyperparameters of one method (e.g. κ, β, τ of HIG: '
                                         'Schnell, Holl & Thuerey 2022, appendix C)')
    sweep.add_argument('experiment')
    sweep.add_argument('--method', default='hig')
    sweep.add_argument('--kappa', help='comma-separated κ values in [-1, 1] (short for --hp kappa=...)')
    sweep.add_argument('--beta', help='comma-separated β values (short for --hp beta=...)')
    sweep.add_argument('--truncation', help='comma-separated truncation values (short for --hp truncation=...)')
    sweep.add_argument('--hp', action='append', metavar='KEY=V1,V2,...', help='values of any hyperparameter')
    _budget_args(sweep)
    sweep.add_argument('--overwrite', action='store_true',
                       help="replace another sweep's files in --out (only files phi_hig writes)")
    for command, (_, text) in _DELEGATED.items():
        sub.add_parser(command, help=text, add_help=False)
    return p


def main(argv=None) -> int:
    """``python -m phi_hig ARGS`` (``argv``: the arguments, default ``sys.argv[1:]``); returns the exit status: 0, or
    2 after one line ``phi_hig: error: …`` for anything refused (library messages name the flags,
    `phi_hig.cli.as_flags`). Warnings of a run, and the deprecation of a renamed hyperparameter, print as one line
    ``phi_hig: warning: …`` each."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        return _delegate(argv[0], argv[1:])
    # let comma lists of negative numbers follow their option: --kappa -1,-0.5 -> --kappa=-1,-0.5
    for i in range(len(argv) - 1, 0, -1):
        if argv[i - 1] in ('--kappa', '--beta', '--truncation', '--lr') and argv[i].startswith('-'):
            argv[i - 1:i + 1] = [f'{argv[i - 1]}={argv[i]}']
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a one-line argparse error (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    from .training import WARNINGS
    from . import processes
    if processes.launched() and args.command != 'run':
        return report_error(f"{args.command} runs in one process; only 'run' splits its batches across torchrun's "
                            f"processes")
    if args.command == 'list':
        try:
            return cmd_list(args)
        except InvalidInputError as err:
            return report_error(err)
    from .training.runner import RunControl
    args.argv, control = argv, RunControl()
    try:
        with plain_warnings(*WARNINGS), interrupts(control):
            return {'run': cmd_run, 'sweep': cmd_sweep}[args.command](args, control)
    except InvalidInputError as err:
        return report_error(err)
    except OSError as err:  # a full disk, no permission: one line naming the file
        return report_error(str(err) if isinstance(err, PhiHigError) else
                            f"cannot write {err.filename}: {err.strerror or err}", code=1)
    except KeyboardInterrupt:  # a second Ctrl-C / SIGTERM: at once
        sys.stderr.write(f"phi_hig: interrupted again by {control.interrupted or 'SIGINT'}: stopped at once; the "
                         f"checkpoints written so far are kept\n")
        return EXIT_STATUS.get(control.interrupted, 130)


if __name__ == '__main__':
    sys.exit(main())
