"""Single-parameter optimization sin(a/x) = −1 (Holl, Koltun & Thuerey 2021, §3.1, Fig. 2): supervised, Adam with clipped physics
gradient, SIP with clipped Newton, SIP with the inverse gradient, SIP with the analytic closest minimum.

    python demos/sine.py                   # 5000 steps per method, batch 1000
    python demos/sine.py --steps 20000 --seeds 4
    python demos/sine.py --gui

Writes metrics.csv, summary.json, curves.png and sine.png (mean sin(a/x) + 1 on the held-out set, log scale) to
runs/sine/seed<K>/.
"""
import os

import phi_hig
from phi_hig import experiments, report
from phi_hig.demo import demo_parser


def main(argv=None):
    parser = demo_parser(__doc__, 'sine', steps=5000, seconds=None, seeds=1,
                         methods='supervised,adam,sip_newton,sip_inverse_gradient,sip')
    parser.add_argument('--batch', type=int, default=1000)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    experiment = experiments.get('sine', batch_size=args.batch)
    for seed in range(args.seeds):
        result = phi_hig.train(experiment, args.methods, steps=args.steps, seconds=args.seconds, seed=seed,
                               eval_every=max(1, args.steps // 50), progress=False)
        out = os.path.join(args.out, f'seed{seed}')
        report.write_run(result, out)
        report.plot_curves(result.records, os.path.join(out, 'sine.png'), key='sin_plus_one',
                           title=f'sin(a/x) + 1, seed {seed}')
        print(f"seed {seed}: " + '  '.join(f"{m} {f['sin_plus_one']:.2e}" for m, f in result.summary['final'].items()))


if __name__ == '__main__':
    main()
