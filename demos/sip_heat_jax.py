"""SIP on PhiFlow's JAX backend: infer the initial temperature of a diffused field with `physics.heat.inverse`.

The JAX twin of demos/sip_heat.py: y* is x* diffused for t·ν = 8 on a periodic grid (`phi_hig.physics.heat`). SIP
(Holl, Koltun & Thuerey 2022, §3.2) trains x = NN(y*) on the proxy loss ½‖x − (x + Δx)‖² with Δx from one step of
the Bayesian-damped inverse solver; `phi_hig.sip_step` takes the PhiML JAX network and a PhiML JAX optimizer. Adam
trains a twin from the same weights through the simulation (PhiML's `update_weights`, JAX gradients).

    python demos/sip_heat_jax.py              # 60 steps each, batch 8 on 32 × 32 cells

Prints the error Σ|x − x*| per example of both; writes loss.csv (method, step, x_error) to --out.
"""
import argparse
import os

from phi.jax.flow import *  # noqa: F401,F403
from phiml.nn import u_net, adam, update_weights
import numpy as np
import phi_hig

heat = phi_hig.physics.heat
CONDITIONS = dict(diffusivity=8., dt=1.)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=60)
    parser.add_argument('--resolution', type=int, default=32)
    parser.add_argument('--out', default='runs/sip_heat_jax')
    args = parser.parse_args(argv)
    math.seed(0)
    rng = np.random.default_rng(0)
    net, twin = (u_net(1, 1, levels=3, batch_norm=False, periodic=True) for _ in range(2))  # periodic U-nets
    twin.parameters = net.parameters
    sip_opt, adam_opt = adam(net, 1e-3), adam(twin, 1e-3)
    adam_loss = lambda y: math.mean(  # noqa: E731  (not jit_compile'd: PhiML 1.16's compiled update is stale)
        phi_hig.sip.l2_loss(heat.forward(field.native_call(twin, y), **CONDITIONS), y), 'b')
    rows = []
    for step in range(args.steps):
        x_star = heat.hot_rectangles(spatial(x=args.resolution, y=args.resolution), batch(b=8), rng)
        y_star = heat.forward(x_star.with_values(math.convert(x_star.values)), **CONDITIONS)   # NumPy → JAX
        phi_hig.sip_step(net, sip_opt, y_star, y_star, heat, CONDITIONS)          # one inverse step, proxy loss
        update_weights(twin, adam_opt, adam_loss, y_star)                        # Adam through the simulation
        errors = [float(math.mean(math.sum(abs(field.native_call(n, y_star) - x_star).values, spatial), 'b'))
                  for n in (net, twin)]
        rows += [dict(method=m, step=step, x_error=e) for m, e in zip(('sip', 'adam'), errors)]
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  Σ|x − x*|: SIP {errors[0]:8.2f}  Adam {errors[1]:8.2f}")
    os.makedirs(args.out, exist_ok=True)
    phi_hig.report.write_metrics_csv(rows, os.path.join(args.out, 'loss.csv'))


if __name__ == '__main__':
    main()
