"""P(x) = eˣ (Holl, Koltun & Thuerey 2022, Fig. 2): SGD and Adam through the physics vs SIP (Newton) vs the rescaled gradient.

    python demos/exp.py                 # 3000 steps per method
    python demos/exp.py --gui

Writes metrics.csv, summary.json, curves.png and fig2.png (predicted vs true x per method) to runs/exp/.
"""
import os

import torch

import phi_hig
from phi_hig import experiments, report
from phi_hig.demo import demo_parser


def figure2(result, experiment, path):
    plt = report.pyplot()
    inputs, targets = experiment.test_set
    methods = list(result.nets)
    fig, ax = plt.subplots(1, len(methods), figsize=(3.4 * len(methods), 3.4), squeeze=False)
    for a, m in zip(ax[0], methods):
        with torch.no_grad():
            x = result.nets[m](inputs)[:, 0]
        a.plot(targets[:, 1], x, '.', ms=2)
        a.plot([-12, 0], [-12, 0], 'k--', lw=0.8)
        a.set(title=m, xlabel='true x*', ylabel='predicted x', xlim=(-12.5, 0.5), ylim=(-14, 2))
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = demo_parser(__doc__, 'exp', steps=3000, seconds=None, methods='sgd,adam,sip,rescaled')
    parser.add_argument('--network-input', default='log', help="'log' (log y*) or 'y'")
    args = parser.parse_args(argv)
    experiment = experiments.get('exp', network_input=args.network_input)
    result = phi_hig.train(experiment, args.methods, steps=args.steps, seconds=args.seconds, progress=False,
                           eval_every=max(1, args.steps // 30))
    report.write_run(result, args.out)
    figure2(result, experiment, os.path.join(args.out, 'fig2.png'))
    for m, f in result.summary['final'].items():
        print(f"{m:9s} |x − x*|: all {f['x_error']:.3f}  x* < −6 {f['x_error_small_y']:.3f}  "
              f"x* ≥ −6 {f['x_error_large_y']:.3f}")


if __name__ == '__main__':
    main()
