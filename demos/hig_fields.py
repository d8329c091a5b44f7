"""HIG in a plain PhiFlow script: a network learns to solve Poisson's equation ∇²φ = ρ, written with Fields only.

The network maps a source ρ (a CenteredGrid) to a potential φ; the physics is PhiFlow's `field.laplace` (zero
Dirichlet boundary), the loss ½‖∇²φ − ρ‖² per example. `phi_hig.hig_step` takes the Fields as they are. Adam
through the same physics trains alongside from the same initial weights, for comparison.

    python demos/hig_fields.py                # 100 steps of both, batch 8 on an 8 × 8 grid (~10 s on a CPU)
    python demos/hig_fields.py --steps 300

η: g is the gradient of the batch-mean loss; start at η = 1 and divide by 10 while the loss jumps up (here η = 1
oscillates, 0.3 converges). Writes loss.csv (method, step, train_loss) to --out (default runs/hig_fields).
"""
import argparse
import os

from phi.torch.flow import *  # noqa: F401,F403  (PhiFlow as usual: field, math, CenteredGrid, Noise, nets)
import phi_hig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=100)
    parser.add_argument('--out', default='runs/hig_fields')
    args = parser.parse_args(argv)
    math.seed(0)
    net = conv_net(1, 1, [8, 8], activation='tanh')                      # ρ → φ on the grid
    twin = conv_net(1, 1, [8, 8], activation='tanh')
    twin.load_state_dict(net.state_dict())                               # Adam starts from the same weights
    hig, adam_opt = phi_hig.HIG(net, learning_rate=0.3, truncation=1e-5), adam(twin, 1e-3)

    def loss(rho, rho_target):                                           # one value per example (batch dim b)
        return math.l2_loss(rho - rho_target)

    rows = []
    for step in range(args.steps):
        rho = field.laplace(CenteredGrid(Noise(batch(b=8)), 0, x=8, y=8))  # fresh sources every step
        info = phi_hig.hig_step(net, hig, rho, rho, field.laplace, loss)  # Fields in: network, physics, loss
        l_adam = float(math.stop_gradient(update_weights(
            twin, adam_opt, lambda r: math.mean(loss(field.laplace(field.native_call(twin, r)), r), 'b'), rho)))
        rows += [dict(method='hig', step=step, train_loss=info.loss), dict(method='adam', step=step, train_loss=l_adam)]
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  HIG loss {info.loss:9.4f} (rank {info.rank})  Adam loss {l_adam:9.4f}")
    os.makedirs(args.out, exist_ok=True)
    phi_hig.report.write_metrics_csv(rows, os.path.join(args.out, 'loss.csv'))


if __name__ == '__main__':
    main()
