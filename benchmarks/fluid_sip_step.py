"""One SIP step of the fluid experiment with and without reuse of the step's own simulation, side by side.

    python -m benchmarks.fluid_sip_step              # 32 × 32, batch 16, one thread, 5 steps each (about 40 s)
    python -m benchmarks.fluid_sip_step --resolution 64 --batch 64 --threads 2
    python -m benchmarks.fluid_sip_step --resolution 16 --batch 2 --steps 2 --sim-steps 2 --cache-dir ''   # smoke run

'reuse' is the experiment's inverse: `phi_hig.physics.fluid.inverse` is given the trajectory of the no-grad
simulation that `sip_step` runs for its physics loss. 'simulate again' calls the same inverse without it, so
it runs the forward simulation of the same prediction a second time. Both use the experiment's inverse options
(`Inverse.resolve()`: float32, jit-compiled simulations) and its loss. Steps alternate between the two; the median
after the first pair is printed (the first includes PhiML's tracing of the compiled simulations).
"""
import argparse
import statistics
import time

import torch
from phiml.math import extrapolation

from phi_hig import experiments
from phi_hig.physics.grids import to_grid, from_grid
from phi_hig.physics import fluid as physics
from phi_hig.sip import sip_step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--resolution', type=int, default=32)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--sim-steps', type=int, default=physics.STEPS, help='time steps of the simulation')
    parser.add_argument('--cache-dir', default='runs/cache', help="where the data set is cached ('': not cached)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = args.batch * args.steps
    ex = experiments.get('fluid', resolution=(args.resolution, args.resolution), batch_size=args.batch,
                         n_train=n, n_test=2, sim_steps=args.sim_steps, cache_dir=args.cache_dir or None)
    options = ex.inverse.resolve()
    inputs, targets = ex.train_set
    net = ex.make_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.005)
    periodic = extrapolation.PERIODIC

    def simulate_again(v, y_target, m0, *, y=None):
        dv = physics.inverse(to_grid(v, periodic), to_grid(y_target[:, 0], periodic), to_grid(m0, periodic),
                             steps=ex.settings['sim_steps'], **options)
        return from_grid(dv, vector=True)

    times = {'reuse': [], 'simulate again': []}
    for i in range(args.steps):
        batch = slice(i * args.batch, (i + 1) * args.batch)
        for mode, inverse in (('reuse', ex.inverse), ('simulate again', simulate_again)):
            t0 = time.perf_counter()
            x, t = inputs[batch], targets[batch]
            sip_step(net, optimizer, x, t, (ex.simulate, inverse), ex.conditions(x, t), loss=ex.loss)
            times[mode].append(time.perf_counter() - t0)
    medians = {m: statistics.median(v[1:] or v) for m, v in times.items()}
    print(f"fluid SIP step, {args.resolution}×{args.resolution}, batch {args.batch}, {args.threads} thread(s):")
    for m, v in medians.items():
        print(f"  {m:15s} {v:6.2f} s/step")
    print(f"  speed-up {medians['simulate again'] / medians['reuse']:.2f}×")
    return medians


if __name__ == '__main__':
    main()
