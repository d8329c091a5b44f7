"""The toy example of Schnell, Holl & Thuerey 2022 (Figure 1): Adam vs Gauss–Newton vs HIG on y = (z1, γ·z2).

    python demos/toy.py                       # 10 s per method, γ = 1 and 0.01, figures in runs/toy/
    python demos/toy.py --seconds 60 --seeds 5 # the closing-note study: median and range over 5 seeds
    python demos/toy.py --gui                 # the same experiment in the live browser dashboard

For each γ it writes ``fig1_gamma_<γ>.png`` with the paper's three panels (loss against wall time, mean ±
std of the hidden activations over the data set, the y-space trajectory of one sample), the loss curves as
``toy_gamma_<γ>_seed<K>.csv``, and prints a table of final held-out losses. Every method starts from the
same weights and sees the same batches (``phi_hig.train``).
"""
import json
import os
import statistics

import phi_hig
from phi_hig.demo import demo_parser
from phi_hig.experiments import toy
from phi_hig.report import print_table, write_metrics_csv, pyplot

METHODS = ['adam', 'gn', 'hig']


def figure(result, experiment, path, gamma):
    plt = pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    target = experiment.test_set[1][0]
    for i, m in enumerate(METHODS):
        ev = [r for r in result.records if r['method'] == m and r.get('test_loss') == r.get('test_loss')
              and 'saturation' in r]
        ax[0].plot([r['wall_time'] for r in ev], [r['test_loss'] for r in ev], label=m, color=f'C{i}')
        last = ev[-1]
        n_hidden = sum(1 for k in last if k.endswith('_mean') and k.startswith('h'))
        xs = [j + (i - 1) * 0.25 for j in range(n_hidden)]
        ax[1].errorbar(xs, [last[f'h{j}_mean'] for j in range(n_hidden)],
                       yerr=[last[f'h{j}_std'] for j in range(n_hidden)], fmt='o', color=f'C{i}', capsize=3,
                       label=f"{m} (mean |h| = {last['saturation']:.2f})")
        ax[2].plot([r['sample_y1'] for r in ev], [r['sample_y2'] for r in ev], '.-', ms=2, color=f'C{i}', label=m)
    ax[2].plot(float(target[0]), float(target[1]), 'k*', ms=14, label='target')
    ax[0].set(xscale='linear', yscale='log', xlabel='training wall time [s]', ylabel='held-out loss',
              title=f'loss, γ = {gamma}')
    ax[1].set(xlabel='hidden neuron', ylabel='activation (mean ± std over the data)', ylim=(-1.1, 1.1),
              title='neuron saturation')
    ax[2].set(xlabel='y1', ylabel='y2', title='trajectory of one sample in y-space')
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = demo_parser(__doc__, 'toy', seconds=10.0, seeds=1, quiet=True)  # and --out, --gui: phi_hig/demo.py
    parser.add_argument('--gammas', default='1,0.01', help='comma-separated γ values')
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    table, notes = {}, []
    for gamma in [float(g) for g in args.gammas.split(',')]:
        experiment = toy(gamma=gamma)
        for seed in range(args.seeds):
            result = phi_hig.train(experiment, METHODS, seconds=args.seconds, seed=seed, progress=not args.quiet)
            write_metrics_csv(result.records, os.path.join(args.out, f'toy_gamma_{gamma:g}_seed{seed}.csv'))
            if seed == 0:
                figure(result, experiment, os.path.join(args.out, f'fig1_gamma_{gamma:g}.png'), gamma)
                notes += [f"{m} at γ = {gamma:g}: {note}" for m in METHODS
                          for note in result.summary['final'][m]['expected']]
            for m in METHODS:
                f = result.summary['final'][m]
                table.setdefault((gamma, m), []).append((f['test_loss'], f['saturation'], f['steps'] / f['train_seconds']))
    lines = [f"toy: {args.seconds:g} s per method, {args.seeds} seed(s); held-out loss median [min, max]",
             f"{'γ':>6} {'method':>6} {'median':>10} {'min':>10} {'max':>10} {'mean|h|':>8} {'steps/s':>8}"]
    for (gamma, m), rows in table.items():
        losses = [r[0] for r in rows]
        lines.append(f"{gamma:6g} {m:>6} {statistics.median(losses):10.3e} {min(losses):10.3e} {max(losses):10.3e} "
                     f"{statistics.median(r[1] for r in rows):8.3f} {statistics.median(r[2] for r in rows):8.0f}")
    print_table(lines + notes, os.path.join(args.out, 'table.txt'))
    with open(os.path.join(args.out, 'table.json'), 'w') as f:
        json.dump({f'{g:g}/{m}': rows for (g, m), rows in table.items()}, f, indent=1)
    print(f"figures and CSV files in {args.out}/")


if __name__ == '__main__':
    main()
