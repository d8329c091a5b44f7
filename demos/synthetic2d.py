"""Synthetic 2-D process (Holl, Koltun & Thuerey 2022, §3.4, Fig. 5d/e): final accuracy of SGD, Adam, Adagrad, Adadelta, RMSprop and
SIP (saddle-free Newton) over the conditioning ξ (φ = 0) and the coupling φ (ξ = 32).

    python demos/synthetic2d.py                       # 20 s per method and point
    python demos/synthetic2d.py --seconds 60 --variant code
    python demos/synthetic2d.py --gui

Writes sweep.csv and fig5de.png (final ‖P(x) − y*‖ and ‖x − x*‖ against ξ and φ) to runs/synthetic2d/.
"""
import csv
import os

import phi_hig
from phi_hig import experiments, report
from phi_hig.demo import demo_parser

METHODS = 'sgd,adam,adagrad,adadelta,rmsprop,sip'


def main(argv=None):
    parser = demo_parser(__doc__, 'synthetic2d', seconds=20., steps=None, methods=METHODS)
    parser.add_argument('--xis', default='1,2,4,8,16,32')
    parser.add_argument('--phis', default='0,10,20,30,40,45')
    parser.add_argument('--variant', default='paper', help="'paper' or 'code'")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    points = [('xi', float(v), dict(xi=float(v), phi=0.)) for v in args.xis.split(',')]
    points += [('phi', float(v), dict(xi=32., phi=float(v))) for v in args.phis.split(',')]
    for sweep, value, settings in points:
        experiment = experiments.get('synthetic2d', variant=args.variant, **settings)
        result = phi_hig.train(experiment, args.methods, steps=args.steps, seconds=args.seconds, progress=False,
                               eval_every=10 ** 9)
        for m, f in result.summary['final'].items():
            rows.append(dict(sweep=sweep, value=value, method=m, steps=f['steps'], y_error=f['y_error'],
                             x_error=f['x_error']))
        print(f"{sweep} = {value:g}: " + '  '.join(f"{m} {f['y_error']:.2e}" for m, f in result.summary['final'].items()),
              flush=True)
    with open(os.path.join(args.out, 'sweep.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plt = report.pyplot()
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    for col, sweep in enumerate(['xi', 'phi']):
        for row, key in enumerate(['y_error', 'x_error']):
            for m in args.methods.split(','):
                pts = [(r['value'], r[key]) for r in rows if r['sweep'] == sweep and r['method'] == m]
                ax[row, col].plot(*zip(*pts), 'o-', label=m)
            ax[row, col].set(yscale='log', xscale='log' if sweep == 'xi' else 'linear', ylabel=key.replace('_', ' '),
                             xlabel='ξ (φ = 0)' if sweep == 'xi' else 'φ [degrees] (ξ = 32)')
            ax[row, col].grid(alpha=0.3, which='both')
            ax[row, col].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, 'fig5de.png'), dpi=100)
    plt.close(fig)


if __name__ == '__main__':
    main()
