"""Navier–Stokes (seed 003 §3.4): Adam through the simulation vs SIP with the reverse-simulation inverse, and the
paper's table 1 (inference time of the network vs the iterative inverse solver at the same MAE of v₀).

    python demos/fluid.py                                   # 64 × 64, batch 64 (the paper; very slow on a CPU)
    python demos/fluid.py --resolution 32 --batch 8 --n-train 64 --steps 40   # a CPU-sized run
    python demos/fluid.py --gui

The training set is generated once and cached in runs/cache/. Writes metrics.csv, summary.json, curves.png,
v_error.png and table1.json to runs/fluid/.
"""
import argparse
import json
import os

import phi_hig
from phi_hig import experiments, report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=None)
    parser.add_argument('--seconds', type=float, default=None)
    parser.add_argument('--resolution', type=int, default=64, help='cells per side (divisible by 16)')
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--n-train', type=int, default=1024)
    parser.add_argument('--n-test', type=int, default=16)
    parser.add_argument('--methods', default='adam,sip')
    parser.add_argument('--eval-every', type=int, default=10)
    parser.add_argument('--table-examples', type=int, default=2, help='examples for table 1 (0: skip)')
    parser.add_argument('--out', default='runs/fluid')
    parser.add_argument('--gui', action='store_true')
    args = parser.parse_args(argv)
    if args.gui:
        from phi_hig.gui import launch
        return launch('fluid')
    experiment = experiments.get('fluid', resolution=(args.resolution, args.resolution), batch_size=args.batch,
                                 n_train=args.n_train, n_test=args.n_test)
    result = phi_hig.train(experiment, args.methods, steps=args.steps if args.steps or args.seconds else 20,
                           seconds=args.seconds, eval_every=args.eval_every)
    report.write_run(result, args.out)
    report.plot_curves(result.records, os.path.join(args.out, 'v_error.png'), key='v_error',
                       title='fluid: mean |v − v*|')
    for m, final in result.summary['final'].items():
        print(f"{m:6s} steps {final['steps']:4d}  loss {final['test_loss']:.4g}  |v − v*| {final['v_error']:.4f}  "
              f"{final['seconds_per_step']:.1f} s/step")
    if args.table_examples and 'sip' in result.nets:
        from phi_hig.experiments.fluid import timing_table
        table = timing_table(experiment, result.nets['sip'], n_examples=args.table_examples)
        with open(os.path.join(args.out, 'table1.json'), 'w') as f:
            json.dump(table, f, indent=2)
        print(f"table 1 (equal MAE of v0): network {table['network_seconds_per_example'] * 1e3:.2f} ms/example, "
              f"iterative solver {table['solver_seconds_per_example']:.2f} s/example in {table['mean_iterations']:.1f} "
              f"iterations (×{table['ratio']:.0f}; all reached: {table['all_reached']})")
    return result


if __name__ == '__main__':
    main()
