"""HIG on PhiFlow's JAX backend: a network learns to solve Poisson's equation ∇²φ = ρ, written with Fields only.

The JAX twin of demos/hig_fields.py. `phi_hig.HIG(net)` on a PhiML JAX network and `phi_hig.hig_step` with Fields:
the network + physics Jacobian pass is compiled once (`jax.jit`), the Gram matrix, its eigh and the update are
float64. Adam (PhiML's `update_weights`) trains a twin from the same initial weights, for comparison.

    python demos/hig_fields_jax.py            # 100 steps of both, batch 8 on an 8 × 8 grid
    python demos/hig_fields_jax.py --steps 300

PhiML 1.16's JAX `conv_net` accepts one hidden layer only (its parameter keys are off by one for more). Writes
loss.csv (method, step, train_loss) to --out (default runs/hig_fields_jax).
"""
import argparse
import os

from phi.jax.flow import *  # noqa: F401,F403  (PhiFlow on JAX: field, math, CenteredGrid, Noise, batch)
from phiml.nn import conv_net, adam, update_weights
import phi_hig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=100)
    parser.add_argument('--out', default='runs/hig_fields_jax')
    args = parser.parse_args(argv)
    math.seed(0)
    net, twin = conv_net(1, 1, [16], activation='tanh'), conv_net(1, 1, [16], activation='tanh')  # ρ → φ
    twin.parameters = net.parameters                                    # Adam starts from the same weights
    hig, adam_opt = phi_hig.HIG(net, learning_rate=0.3, truncation=1e-5), adam(twin, 1e-3)

    def loss(rho, rho_target):                                          # one value per example (batch dim b)
        return math.l2_loss(rho - rho_target)

    # not math.jit_compile'd: PhiML 1.16's compiled JAX update restarts every step from the state it was traced with
    adam_loss = lambda r: math.mean(loss(field.laplace(field.native_call(twin, r)), r), 'b')  # noqa: E731
    rows = []
    for step in range(args.steps):
        rho = field.laplace(CenteredGrid(Noise(batch(b=8)), 0, x=8, y=8))  # fresh sources every step
        info = phi_hig.hig_step(net, hig, rho, rho, field.laplace, loss)  # Fields in: network, physics, loss
        l_adam = float(update_weights(twin, adam_opt, adam_loss, rho))
        rows += [dict(method='hig', step=step, train_loss=info.loss), dict(method='adam', step=step, train_loss=l_adam)]
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  HIG loss {info.loss:9.4f} (rank {info.rank}, {info.time_total:.3f} s)  "
                  f"Adam loss {l_adam:9.4f}")
    os.makedirs(args.out, exist_ok=True)
    phi_hig.report.write_metrics_csv(rows, os.path.join(args.out, 'loss.csv'))


if __name__ == '__main__':
    main()
