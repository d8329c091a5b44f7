"""SIP in a plain PhiFlow script: infer the initial temperature of a diffused field with `physics.heat.inverse`.

y* is x* diffused for t·ν = 8 on a periodic grid (exact Fourier diffusion, `phi_hig.physics.heat.forward`). SIP
(Holl, Koltun & Thuerey 2022, §3.2) trains the network x = NN(y*) on the proxy loss ½‖x − (x + Δx)‖² with Δx from
one step of the Bayesian-damped inverse solver; Adam trains a twin from the same weights through the simulation.

    python demos/sip_heat.py                  # 60 steps each, batch 8 on 32 × 32 cells (~1 min on a CPU)

Prints the error Σ|x − x*| per example of both; writes loss.csv (method, step, x_error) to --out.
"""
import argparse
import os

from phi.torch.flow import *  # noqa: F401,F403
import numpy as np
import phi_hig
from phi_hig.nets import unet

heat = phi_hig.physics.heat
CONDITIONS = dict(diffusivity=8., dt=1.)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=60)
    parser.add_argument('--resolution', type=int, default=32)
    parser.add_argument('--out', default='runs/sip_heat')
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net, twin = unet(1, 1), unet(1, 1)                    # periodic U-nets (Holl et al. 2021, appendix B.3)
    twin.load_state_dict(net.state_dict())
    sip_opt, adam_opt = torch.optim.Adam(net.parameters(), 1e-3), torch.optim.Adam(twin.parameters(), 1e-3)
    rows = []
    for step in range(args.steps):
        x_star = heat.hot_rectangles(spatial(x=args.resolution, y=args.resolution), batch(b=8), rng)
        x_star = x_star.with_values(math.convert(x_star.values))                 # NumPy → torch
        y_star = heat.forward(x_star, **CONDITIONS)
        phi_hig.sip_step(net, sip_opt, y_star, y_star, heat, CONDITIONS)          # one inverse step, proxy loss
        adam_opt.zero_grad()                                                     # Adam through the simulation
        y = heat.forward(field.native_call(twin, y_star), **CONDITIONS)
        math.mean(phi_hig.sip.l2_loss(y, y_star), 'b').native().backward()
        adam_opt.step()
        errors = [float(math.mean(math.sum(abs(field.native_call(n, y_star) - x_star).values, spatial), 'b'))
                  for n in (net, twin)]
        rows += [dict(method=m, step=step, x_error=e) for m, e in zip(('sip', 'adam'), errors)]
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  Σ|x − x*|: SIP {errors[0]:8.2f}  Adam {errors[1]:8.2f}")
    os.makedirs(args.out, exist_ok=True)
    phi_hig.report.write_metrics_csv(rows, os.path.join(args.out, 'loss.csv'))


if __name__ == '__main__':
    main()
