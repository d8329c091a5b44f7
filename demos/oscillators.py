"""Nonlinear oscillators (Schnell, Holl & Thuerey 2022, Figure 2): a network learns the control u(t) that returns
two coupled nonlinear oscillators to their initial state after 96 RK4 steps.

    python demos/oscillators.py                          # Adam vs GN vs HIG, 60 s each (Fig. 2b), runs/oscillators/
    python demos/oscillators.py --methods all            # the seven optimizers of Table 2
    python demos/oscillators.py --study batch            # Fig. 2c: Adam b=256/512/1024, GN and HIG b=32/64/128
    python demos/oscillators.py --study kappa-beta       # appendix C: HIG with κ ∈ {1, 0.5, 0, −0.5, −1}, β ∈ {0, −0.5}
    python demos/oscillators.py --gui                    # the live dashboard instead

Every method starts from the same weights and sees the same batches (``phi_hig.train``); the budget is
training wall time per method (evaluation excluded). Writes ``metrics_<study>_seed<K>.csv``, the figures
and ``table_<study>.txt``.
"""
import os
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')  # SciPy's eigh in HIG: one BLAS thread is fastest for these
os.environ.setdefault('OMP_NUM_THREADS', '1')       # sizes on a small, shared CPU (set before NumPy loads)

import torch

import phi_hig
from phi_hig.demo import demo_parser
from phi_hig.experiments.oscillators import oscillators
from phi_hig.physics.oscillators import chain_rhs, rk4
from phi_hig.report import pyplot, seed_table, write_metrics_csv
from phi_hig.training.runner import train_variants

TABLE2 = ['adam', 'gn', 'hig', 'sgd', 'adagrad', 'adadelta', 'rmsprop']


def runs_for(study, methods):
    """``[(label, method, overrides)]`` of one study."""
    if study == 'methods':
        return [(m, m, None) for m in methods]
    if study == 'batch':
        return ([(f'adam b={b}', 'adam', dict(batch_size=b)) for b in (256, 512, 1024)] +
                [(f'gn b={b}', 'gn', dict(batch_size=b)) for b in (32, 64, 128)] +
                [(f'hig b={b}', 'hig', dict(batch_size=b)) for b in (32, 64, 128)])
    if study == 'kappa-beta':
        return [(f'κ={k:g} β={b:g}', 'hig', dict(kappa=k, beta=b))
                for k in (1.0, 0.5, 0.0, -0.5, -1.0) for b in (0.0, -0.5)]
    raise ValueError(study)


def run_study(experiment, study, methods, seconds, seed, quiet, extra=None):
    """Train every run of the study; returns ``{label: (records, final values, trained net)}``."""
    variants = [(label, method, dict((extra or {}).get(method, {}), **(overrides or {})))
                for label, method, overrides in runs_for(study, methods)]
    results = train_variants(experiment, variants, seconds=seconds, seed=seed, progress=not quiet)
    return {label: (r.records, r.summary['final'][method], r.nets[method])
            for (label, method, _), r in zip(variants, results.values())}


def trajectory(experiment, net, sample):
    """States of one held-out sample over time under the network's control, and the control itself."""
    steps, dt = experiment.settings['steps'], experiment.settings['dt']
    f = chain_rhs(experiment.settings['cubic'], experiment.settings['control'])
    s = experiment.test_set[0][sample:sample + 1]
    with torch.no_grad():
        u = net(s)  # the controls; the initial state s is the physics' condition
        states = [s]
        for t in range(steps):
            states.append(rk4(f, states[-1], u[:, t], dt))
    return torch.cat(states).numpy(), u[0].numpy()


def figure(experiment, curves, path, title):
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(13, 4.5))
    for i, (label, (records, final, net)) in enumerate(curves.items()):
        ev = [r for r in records if r['test_loss'] == r['test_loss']]
        ax[0].plot([r['wall_time'] for r in ev], [r['test_loss'] for r in ev], label=label, color=f'C{i % 10}',
                   ls='-' if i < 10 else '--')
    ax[0].set(yscale='log', xlabel='training wall time [s]', ylabel='test loss (Σ squared error, mean)', title=title)
    ax[0].grid(alpha=0.3, which='both')
    ax[0].legend(fontsize=7)
    best = min(curves, key=lambda k: curves[k][1]['test_loss'] if curves[k][1]['test_loss'] == curves[k][1]['test_loss'] else 1e9)
    states, u = trajectory(experiment, curves[best][2], 0)
    dt = experiment.settings['dt']
    t = [k * dt for k in range(len(states))]
    n = states.shape[1] // 2
    for j in range(n):
        ax[1].plot(t, states[:, j], label=f'x{j + 1}')
    ax[1].plot([k * dt for k in range(len(u))], u, color='tab:blue', alpha=0.3, lw=3, label='control u')
    ax[1].plot([t[-1]] * n, states[0, :n], 'k*', ms=10, label='target')
    ax[1].set(xlabel='t', title=f'one held-out sample controlled by {best}')
    ax[1].grid(alpha=0.3)
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = demo_parser(__doc__, 'oscillators', seeds=1, preset='paper', quiet=True)
    parser.add_argument('--seconds', type=float, default=60.0, help='training wall-clock budget per run')
    parser.add_argument('--methods', default='adam,gn,hig', help="comma-separated methods, or 'all' (Table 2)")
    parser.add_argument('--study', default='methods', choices=['methods', 'batch', 'kappa-beta'])
    parser.add_argument('--alpha', type=float, default=None, help="paper text's α (cubic coefficient 4α); default: the authors' code, coefficient 1")
    parser.add_argument('--gn-truncation', type=float, default=None,
                        help='τ of every GN run (Table 2: 1e-6, which diverges at once in our float64 implementation)')
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    methods = TABLE2 if args.methods == 'all' else [m.strip() for m in args.methods.split(',')]
    experiment = oscillators(preset=args.preset, alpha=args.alpha)
    print(experiment.description)
    table = {}
    for seed in range(args.seeds):
        extra = {'gn': dict(truncation=args.gn_truncation)} if args.gn_truncation else None
        curves = run_study(experiment, args.study, methods, args.seconds, seed, args.quiet, extra)
        write_metrics_csv([r for c in curves.values() for r in c[0]],
                          os.path.join(args.out, f'metrics_{args.study}_seed{seed}.csv'))
        if seed == 0:
            figure(experiment, curves, os.path.join(args.out, f'fig_{args.study}.png'),
                   f'oscillators: {args.study}, {args.seconds:g} s per run')
        for label, (_, final, _) in curves.items():
            table.setdefault(label, []).append(final)
    seed_table(f"oscillators, study {args.study}: {args.seconds:g} s per run, {args.seeds} seed(s)", table,
               os.path.join(args.out, f'table_{args.study}.txt'))


if __name__ == '__main__':
    main()
