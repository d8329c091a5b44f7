"""Quantum dipole (Schnell, Holl & Thuerey 2022, Fig. 4): a network learns the control u(t) that moves a particle in an infinite
well from the ground state to a random superposition of the first two excited states.

    python demos/quantum_dipole.py                     # Adam vs HIG, 120 s each; runs/quantum_dipole/
    python demos/quantum_dipole.py --network cnn       # the CNN variant (21,984 parameters)
    python demos/quantum_dipole.py --gui

Figures: ``fig4_<network>.png`` with (a) |Ψ(t, x)|² of one held-out sample under the best network's control,
(b) the loss against wall time, (c) the low- and high-energy losses (the paper: Adam plateaus at 0.5, fitting the
low-energy component first; HIG lowers both together). Also ``quantum_dipole_<network>_seed<K>.csv`` and
``table_<network>.txt``.
"""
import os
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')  # one BLAS thread for SciPy's eigh (small problems, shared CPU)
os.environ.setdefault('OMP_NUM_THREADS', '1')
import torch

import phi_hig
from phi_hig.demo import demo_parser
from phi_hig.experiments.quantum_dipole import quantum_dipole, crank_nicolson, eigenstate
from phi_hig.report import print_table, write_metrics_csv, pyplot


def figure(experiment, result, methods, path):
    plt = pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.3))
    for i, m in enumerate(methods):
        ev = [r for r in result.records if r['method'] == m and r['test_loss'] == r['test_loss']]
        t = [r['wall_time'] for r in ev]
        ax[1].plot(t, [r['test_loss'] for r in ev], color=f'C{i}', label=m)
        ax[2].plot(t, [r['low_energy_loss'] for r in ev], color=f'C{i}', ls='-', label=f'{m} low energy')
        ax[2].plot(t, [r['high_energy_loss'] for r in ev], color=f'C{i}', ls='--', label=f'{m} high energy')
    best = min(methods, key=lambda m: result.summary['final'][m]['test_loss'])
    net = result.nets[best]
    s = experiment.settings
    x_in = experiment.test_set[0][:1]
    with torch.no_grad():
        u = net(x_in)
        psi = crank_nicolson(eigenstate(1, s['points'], torch.float32)[None].to(torch.complex64), u, s['dt'], s['dx'],
                             return_all=True)[0]
    T = s['steps'] * s['dt']
    ax[0].imshow((psi.abs() ** 2).numpy().T, aspect='auto', origin='lower', extent=(0, T, 0, 2), cmap='magma')
    ax0 = ax[0].twinx()
    ax0.plot([k * s['dt'] for k in range(s['steps'])], u[0].numpy(), color='tab:blue', alpha=0.6)
    ax0.set_ylabel('control u(t)')
    ax[0].set(xlabel='t', ylabel='x', title=f'|Ψ(t, x)|², one held-out sample ({best})')
    ax[1].set(yscale='log', xlabel='training wall time [s]', ylabel='test loss 1 − |⟨Ψ_a, Ψ_b⟩|²', title='loss')
    ax[2].set(yscale='log', xlabel='training wall time [s]', title='low- / high-energy loss')
    for a in ax[1:]:
        a.grid(alpha=0.3, which='both')
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = demo_parser(__doc__, 'quantum_dipole', seconds=120.0, seeds=1, methods='adam,hig', preset='paper',
                         quiet=True)
    parser.add_argument('--network', default='mlp', choices=['mlp', 'cnn'])
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    experiment = quantum_dipole(preset=args.preset, network=args.network)
    print(experiment.description)
    methods = args.methods.split(',')
    lines = [f"quantum_dipole ({args.network}): {args.seconds:g} s per method",
             f"{'seed':>4} {'method':>6} {'test loss':>10} {'low E':>10} {'high E':>10} {'steps':>6}"]
    for seed in range(args.seeds):
        result = phi_hig.train(experiment, methods, seconds=args.seconds, seed=seed, progress=not args.quiet)
        write_metrics_csv(result.records, os.path.join(args.out, f'quantum_dipole_{args.network}_seed{seed}.csv'))
        if seed == 0:
            figure(experiment, result, methods, os.path.join(args.out, f'fig4_{args.network}.png'))
        for m in methods:
            f = result.summary['final'][m]
            lines.append(f"{seed:4d} {m:>6} {f['test_loss']:10.3e} {f['low_energy_loss']:10.3e} "
                         f"{f['high_energy_loss']:10.3e} {f['steps']:6d}")
    print_table(lines, os.path.join(args.out, f'table_{args.network}.txt'))


if __name__ == '__main__':
    main()
