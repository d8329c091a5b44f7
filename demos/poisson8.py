"""8×8 Poisson problem (Schnell, Holl & Thuerey 2022, Figs. 3 and 7): Adam vs HIG per iteration, and the pre-training protocol.

    python demos/poisson8.py                        # all three parts below; runs/poisson8/
    python demos/poisson8.py --hig-steps 20 --adam-steps 4000 --network code
    python demos/poisson8.py --gui

1. Per iteration (Fig. 7a): from the same initial weights, Adam for ``--adam-steps`` and HIG for
   ``--hig-steps`` updates; the loss against the update count.
2. HIG after Adam (Fig. 3c): the Adam network of part 1 continues with HIG (``--hig-steps``) and, for
   reference, with Adam (``--adam-steps``).
3. Adam after HIG (Fig. 7b): the network HIG reached in part 2 continues with Adam (``--adam-steps``); the paper
   finds that Adam soon loses the HIG progress.

A HIG step at the paper size (b = 64, |y| = 64: a 4096 × 4096 float64 eigendecomposition) takes about a minute
on a loaded 2-core CPU, against ~0.05 s for Adam, so the step budgets are small by default.

Writes ``poisson8_<network>.csv`` (every part's records), ``fig_poisson8_<network>.png`` (the three parts) and
``table_<network>.txt``.

Starting from a trained network uses the runner unchanged: the experiment is copied with a ``make_net`` that
returns the trained weights (`from_network`), so every part still goes through ``phi_hig.train``.
"""
import os
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')  # SciPy's eigh: one BLAS thread on a shared 2-core CPU
os.environ.setdefault('OMP_NUM_THREADS', '1')
import copy
import dataclasses

import phi_hig
from phi_hig.demo import demo_parser
from phi_hig.experiments.poisson8 import poisson8
from phi_hig.report import print_table, write_metrics_csv, pyplot


def from_network(experiment, net):
    """The experiment, but every run starts from a copy of ``net`` instead of fresh weights."""
    return dataclasses.replace(experiment, make_net=lambda: copy.deepcopy(net))


def evaluated(records, method=None):
    return [r for r in records if (method is None or r['method'] == method) and r['test_loss'] == r['test_loss']]


def main(argv=None):
    parser = demo_parser(__doc__, 'poisson8', seed=0, preset='paper', quiet=True)
    parser.add_argument('--adam-steps', type=int, default=2000)
    parser.add_argument('--hig-steps', type=int, default=4)
    parser.add_argument('--network', default='paper', choices=['paper', 'code'])
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    experiment = poisson8(preset=args.preset, network=args.network)
    print(experiment.description)
    train = dict(seed=args.seed, progress=not args.quiet)

    # 1. per iteration, same initial weights
    adam = phi_hig.train(experiment, ['adam'], steps=args.adam_steps, eval_every=max(1, args.adam_steps // 100), **train)
    hig = phi_hig.train(experiment, ['hig'], steps=args.hig_steps, eval_every=1, **train)
    adam_first = phi_hig.train(experiment, ['adam'], steps=max(16, args.hig_steps), eval_every=1, **train)  # = adam's start
    # 2. HIG (and Adam) continued from the Adam network; new data (seed + 1)
    pre_adam = from_network(experiment, adam.nets['adam'])
    hig_after_adam = phi_hig.train(pre_adam, ['hig'], steps=args.hig_steps, eval_every=1, **dict(train, seed=args.seed + 1))
    adam_after_adam = phi_hig.train(pre_adam, ['adam'], steps=args.adam_steps, eval_every=max(1, args.adam_steps // 100),
                                    **dict(train, seed=args.seed + 1))
    # 3. Adam from the HIG-improved network
    pre_hig = from_network(experiment, hig_after_adam.nets['hig'])
    adam_after_hig = phi_hig.train(pre_hig, ['adam'], steps=args.adam_steps, eval_every=max(1, args.adam_steps // 100),
                                   **dict(train, seed=args.seed + 2))

    parts = {'adam': adam, 'hig': hig, 'hig after adam': hig_after_adam, 'adam after adam': adam_after_adam,
             'adam after hig': adam_after_hig}
    records = [dict(r, method=label) for label, res in parts.items() for r in res.records]
    write_metrics_csv(records, os.path.join(args.out, f'poisson8_{args.network}.csv'))

    plt = pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.3))
    for label, color in (('adam', 'C0'), ('hig', 'C1')):
        ev = evaluated(records, label)
        ax[0].plot([max(r['step'], 0.5) for r in ev], [r['test_loss'] for r in ev], color=color, marker='.', label=label)
    ax[0].set(xscale='log', yscale='log', xlabel='update', ylabel='test loss ½‖Δφ − ρ‖²', title='per iteration (Fig. 7a)')
    n_pre = adam.summary['final']['adam']['steps']
    ev = evaluated(records, 'adam')
    ax[1].plot([r['step'] for r in ev], [r['test_loss'] for r in ev], color='C0', label='adam (pre-training)')
    for label, color in (('hig after adam', 'C1'), ('adam after adam', 'C0')):
        ev = evaluated(records, label)
        ax[1].plot([n_pre + r['step'] for r in ev], [r['test_loss'] for r in ev], color=color,
                   ls='-' if 'hig' in label else ':', marker='.' if 'hig' in label else None, label=label)
    ax[1].set(yscale='log', xlabel='update', title='HIG after Adam pre-training (Fig. 3c)')
    ev = evaluated(records, 'adam after hig')
    ax[2].plot([r['step'] for r in ev], [r['test_loss'] for r in ev], color='C0', label='adam after hig')
    ax[2].axhline(hig_after_adam.summary['final']['hig']['test_loss'], color='C1', ls='--', label='start (hig after adam)')
    ax[2].axhline(adam_after_adam.summary['final']['adam']['test_loss'], color='C0', ls=':', label='adam after adam (end)')
    ax[2].set(yscale='log', xlabel='update', title='Adam after HIG (Fig. 7b)')
    for a in ax:
        a.grid(alpha=0.3, which='both')
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, f'fig_poisson8_{args.network}.png'), dpi=100)
    plt.close(fig)

    def line(label, res, method):
        f = res.summary['final'][method]
        first = evaluated(res.records)[0]['test_loss']
        return (f"{label:>16} {first:12.4e} {f['test_loss']:12.4e} {f['steps']:6d} {f['train_seconds']:8.1f} "
                f"{f['phi_error']:10.4f}")
    lines = [f"poisson8 ({args.network}): Adam {args.adam_steps} steps, HIG {args.hig_steps} steps per part",
             f"{'run':>16} {'start loss':>12} {'end loss':>12} {'steps':>6} {'seconds':>8} {'|φ−φ*|':>10}",
             line('adam', adam, 'adam'), line('hig', hig, 'hig'), line('hig after adam', hig_after_adam, 'hig'),
             line('adam after adam', adam_after_adam, 'adam'), line('adam after hig', adam_after_hig, 'adam')]
    for k in sorted({1, 2, 4, 8, 16, args.hig_steps}):
        a = [r['test_loss'] for r in evaluated(adam_first.records) if r['step'] == k]
        h = [r['test_loss'] for r in evaluated(hig.records) if r['step'] == k]
        if a and h:
            lines.append(f"after {k:3d} updates: adam {a[0]:.4e}  hig {h[0]:.4e}")
    print_table(lines, os.path.join(args.out, f'table_{args.network}.txt'))


if __name__ == '__main__':
    main()
