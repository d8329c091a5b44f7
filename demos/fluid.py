"""Navier–Stokes (Holl, Koltun & Thuerey 2021, §3.4): Adam through the simulation vs SIP with the reverse-simulation
inverse, and Table 1 of Holl, Koltun & Thuerey 2022 (inference time of the network vs the iterative inverse solver
at the same MAE of v₀).

    python demos/fluid.py --steps 200                      # 64 × 64, batch 64 (the paper; about an hour on 2 CPU cores)
    python demos/fluid.py --resolution 32 --batch 16 --steps 200 --n-test 64   # smaller and faster
    python demos/fluid.py --resolution 32 --n-test 64 --table-examples 8 --table-from DIR/checkpoint_sip.pt
    python demos/fluid.py --gui

The training set is generated once and cached in runs/cache/. Writes metrics.csv, summary.json, curves.png,
v_error.png and table1.json to runs/fluid/.
"""
import json
import os

import phi_hig
from phi_hig import experiments, report
from phi_hig.training.checkpoint import read_checkpoint
from phi_hig.demo import demo_parser
from phi_hig.report.tables import timing_table


def main(argv=None):
    parser = demo_parser(__doc__, 'fluid', steps=None, seconds=None, seed=0, methods='adam,sip', preset='paper')
    parser.add_argument('--resolution', type=int, default=64, help='cells per side (divisible by 16)')
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--n-train', type=int, default=1024)
    parser.add_argument('--n-test', type=int, default=16)
    parser.add_argument('--eval-every', type=int, default=10)
    parser.add_argument('--table-examples', type=int, default=2, help='examples for table 1 (0: skip)')
    parser.add_argument('--table-from', metavar='CHECKPOINT', default=None,
                        help="skip training: table 1 for the network of a runner checkpoint (checkpoint_sip.pt of "
                             "'python -m phi_hig run fluid --checkpoint-every N --out DIR' with the same settings)")
    args = parser.parse_args(argv)
    experiment = experiments.get('fluid', preset=args.preset, resolution=(args.resolution, args.resolution),
                                 batch_size=args.batch, n_train=args.n_train, n_test=args.n_test)
    print(experiment.description)
    if args.table_from:
        net = experiment.make_net()
        net.load_state_dict(read_checkpoint(args.table_from).net)  # weights_only: a checkpoint runs no code
        return _table(experiment, net, args)
    result = phi_hig.train(experiment, args.methods, steps=args.steps if args.steps or args.seconds else 20,
                           seconds=args.seconds, seed=args.seed, eval_every=args.eval_every)
    report.write_run(result, args.out)
    report.plot_curves(result.records, os.path.join(args.out, 'v_error.png'), key='v_error',
                       title='fluid: mean |v − v*| (x space)')
    for m, final in result.summary['final'].items():
        print(f"{m:6s} steps {final['steps']:4d}  loss {final['test_loss']:.4g}  |v − v*| {final['v_error']:.4f}  "
              f"{final['seconds_per_step']:.1f} s/step")
    if args.table_examples and 'sip' in result.nets:
        _table(experiment, result.nets['sip'], args)
    return result


def _table(experiment, net, args) -> dict:
    table = timing_table(experiment, net, n_examples=args.table_examples)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'table1.json'), 'w') as f:
        json.dump(table, f, indent=2)
    print(f"table 1 (equal MAE of v0, {len(table['examples'])} examples): network "
          f"{table['network_seconds_per_example'] * 1e3:.2f} ms/example, iterative solver "
          f"{table['solver_seconds_per_example']:.2f} s/example (median {table['solver_seconds_median']:.2f} s) in "
          f"{table['mean_iterations']:.1f} iterations (×{table['ratio']:.0f}, median ×{table['ratio_median']:.0f}; "
          f"reached by {sum(r['reached'] for r in table['examples'])} of {len(table['examples'])})")
    return table


if __name__ == '__main__':
    main()
