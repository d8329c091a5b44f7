"""The coupled-oscillator notebook of the HIG chapter of Thuerey et al., Physics-based Deep Learning, with each
example's initial state given to the physics as a condition: two linearly coupled oscillators start from
x₀ ~ U[0, 1)⁴, a 4-20-20-20-24 tanh network reads x₀ and predicts 24 controls, and 24 RK4 steps of Δt = 0.5
(`phi_hig.physics.oscillators`) must bring the chain back to x₀. HIG as in the notebook (η = 1, τ = 1e-10,
batch 32); hig_step repeats each x₀ with its controls wherever it evaluates the physics (b·|y| rows).

    python demos/oscillators_conditions.py     # 4 epochs of 4096 states (notebook: 5.4e-5 1.1e-5 3.2e-6 1.2e-6)

Prints the loss on the training states (mean of Σ (y − x₀)²) after each epoch; writes loss.csv to --out. The
same run with the network carrying x₀ to the physics (`phi_hig.nets.Conditioned`) prints the same losses.
"""
import argparse
import os

import torch
import phi_hig
from phi_hig.nets import keras_dense
from phi_hig.physics.oscillators import chain_rhs, simulate_chain, sum_squares


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--epochs', type=int, default=4)
    parser.add_argument('--samples', type=int, default=4096)
    parser.add_argument('--out', default='runs/oscillators_conditions')
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)                                            # tiny matrices: one thread is fastest
    states = torch.rand(args.samples, 4)                                # x₀ = (x₁, x₂, p₁, p₂), also the target
    coupled = chain_rhs(cubic=0., control=(0., 1.), linear=0.2)         # ṗ = −x + 0.2·L x − (0, 1)·u

    def simulate(u, x0):                                                # u: (N, 24) controls, x0: (N, 4) their states
        return simulate_chain(x0, u, 0.5, coupled)

    net = keras_dense([4, 20, 20, 20, 24], 'tanh')
    hig = phi_hig.HIG(net, learning_rate=1., truncation=1e-10)
    rows = []
    for epoch in range(args.epochs):
        for batch in torch.randperm(args.samples).split(32):
            x0 = states[batch]
            info = phi_hig.hig_step(net, hig, x0, x0, simulate, sum_squares, conditions=x0)
            rows.append(dict(method='hig', step=len(rows), train_loss=info.loss))
        with torch.no_grad():
            print(f"epoch {epoch + 1}: loss {float(sum_squares(simulate(net(states), states), states).mean()):.2e}")
    os.makedirs(args.out, exist_ok=True)
    phi_hig.report.write_metrics_csv(rows, os.path.join(args.out, 'loss.csv'))


if __name__ == '__main__':
    main()
