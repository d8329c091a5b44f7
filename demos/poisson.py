"""Poisson's equation (Holl, Koltun & Thuerey 2021, §3.2): Adam and SGD through the solver vs SIP with the analytic
inverse ∇².

    python demos/poisson.py                                  # 64 × 64, batch 128, CG (the paper; slow on a CPU)
    python demos/poisson.py --steps 300 --batch 32 --solver dst   # the CPU study of the README's table
    python demos/poisson.py --gui

Writes metrics.csv, summary.json, curves.png (held-out loss), x_error.png (Σ|x − x*| per example against
iterations and wall time) and examples.png (y*, x of each method, x*) to runs/poisson/.
"""
import os

import phi_hig
from phi_hig import experiments, report
from phi_hig.demo import demo_parser


def examples(result, experiment, path, n=2):
    plt = report.pyplot()
    inputs, targets = experiment.test_set
    methods = list(result.nets)
    fig, ax = plt.subplots(n, len(methods) + 2, figsize=(2.6 * (len(methods) + 2), 2.6 * n), squeeze=False)
    for i in range(n):
        panels = [('y*', inputs[i, 0])] + [(m, result.nets[m].eval()(inputs[i:i + 1])[0, 0].detach())
                                            for m in methods] + [('x*', targets[i, -1])]
        for j, (title, image) in enumerate(panels):
            ax[i, j].imshow(image.float().numpy().T, origin='lower', cmap='RdBu_r' if title != 'y*' else 'viridis')
            ax[i, j].set_title(title)
            ax[i, j].axis('off')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None, name='poisson', default_methods='adam,sgd,sip', doc=__doc__):
    """Also the heat demo's: ``name='heat'`` (demos/heat.py)."""
    parser = demo_parser(doc, name, steps=None, seconds=None, methods=default_methods, seed=0)
    parser.add_argument('--resolution', type=int, default=64, help='cells per side (divisible by 8)')
    parser.add_argument('--batch', type=int, default=128, help='batch size')
    parser.add_argument('--solver', default=None, help="Poisson only: 'cg' (paper) or 'dst' (exact, fast)")
    parser.add_argument('--eval-every', type=int, default=20)
    args = parser.parse_args(argv)
    settings = dict(resolution=(args.resolution, args.resolution), batch_size=args.batch, n_test=32)
    if args.solver:
        settings['solver'] = args.solver
    experiment = experiments.get(name, **settings)
    result = phi_hig.train(experiment, args.methods, steps=args.steps if args.steps or args.seconds else 100,
                           seconds=args.seconds, seed=args.seed, eval_every=args.eval_every)
    report.write_run(result, args.out)
    report.plot_curves(result.records, os.path.join(args.out, 'x_error.png'), key='x_error_sum',
                       title=f'{name}: Σ|x − x*| per example')
    examples(result, experiment, os.path.join(args.out, 'examples.png'))
    for m, final in result.summary['final'].items():
        print(f"{m:10s} steps {final['steps']:5d}  Σ|x − x*| {final['x_error_sum']:9.2f}  "
              f"per cell {final['x_error_per_cell']:.4f}  {final['seconds_per_step']:.2f} s/step")
    return result


if __name__ == '__main__':
    main()
