"""Cases of the distributed tests, shared by the worker processes and the one-process references.

``python tests/distributed_cases.py RANK WORLD PORT OUT`` runs every case as one rank of a gloo process group on
127.0.0.1 and saves what it ended with to ``OUT/rank{RANK}.pt``; the same functions run each case in one
process on the whole batch (`run_hig` and `run_first_order` without a group). Every case is float64 and
seeded, so the ranks and the reference start from the same weights and the same global batch.
"""
import os
import sys

import torch
from torch import nn

from test_jacobian import Scale, nonlinear_physics  # noqa: E402  (tests/ is on sys.path: run from there)

B = 6
STEPS = 3
SPLITS = {2: [3, 3]}
UNEVEN = {2: [4, 3]}


def coupled_physics(z):
    """Couples the values inside a sample (never across samples): cumulative sums and products of neighbours."""
    z = z.reshape(z.shape[0], -1)
    return torch.cat([torch.cumsum(z, 1), z[:, :-1] * z[:, 1:]], 1)


def conditioned_physics(z, a, *, scale):
    """Physics with per-example conditions a (each rank passes the rows of its own slice) and a shared scale."""
    return scale * nonlinear_physics(z * a)


def badly_scaled_physics(z):
    """Outputs on scales 1, 1e-3 and 3e-7: kept singular values below 1e-6·σ_max send the auto path to the SVD."""
    return nonlinear_physics(z) * torch.tensor([1.0, 1e-3, 3e-7], dtype=z.dtype)


def _net(case):
    torch.manual_seed(11)
    if case in ('mlp', 'svd_fallback'):
        return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 4)).double()
    if case == 'conv':
        return nn.Sequential(nn.Unflatten(1, (3, 1)), nn.Conv1d(3, 4, 1), nn.Tanh(), nn.Flatten(),
                             nn.Linear(4, 4)).double()
    if case == 'conv_coupled':
        return nn.Sequential(nn.Unflatten(1, (1, 3)), nn.Conv1d(1, 3, 3, padding=1), nn.Tanh(),
                             nn.Conv1d(3, 2, 3, padding=1), nn.Flatten()).double()
    if case == 'unfactored':
        return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), Scale(5), nn.Linear(5, 4)).double()
    if case == 'dual':
        return nn.Sequential(nn.Linear(3, 1), nn.Tanh(), nn.Linear(1, 4)).double()  # 12 parameters < 18 rows
    raise KeyError(case)


HIG_CASES = ('mlp', 'conv', 'conv_coupled', 'unfactored', 'dual', 'svd_fallback', 'uneven', 'conditions')


def _hig_problem(case):
    """``(net, x, targets, physics, τ, conditions)``; the conditions (a dict) only for the case 'conditions'."""
    base = 'mlp' if case in ('uneven', 'conditions') else case
    n = B + 1 if case in ('uneven', 'conditions') else B
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    physics = {'conv_coupled': coupled_physics, 'svd_fallback': badly_scaled_physics}.get(base, nonlinear_physics)
    with torch.no_grad():
        t = physics(torch.randn(n, 6 if base == 'conv_coupled' else 4, generator=g, dtype=torch.float64))
    tau = 1e-9 if base == 'svd_fallback' else 1e-4
    if case != 'conditions':
        return _net(base), x, t, physics, tau, None
    a = torch.rand(n, 4, generator=g, dtype=torch.float64) + 0.5
    return _net(base), x, t, conditioned_physics, tau, dict(a=a, scale=0.7)


def _loss(y, t):
    return 0.5 * ((y - t) ** 2).sum(1)


def _flat(net):
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def run_hig(case, rows=slice(None), group=None, seen=None):
    """STEPS HIG steps of ``case`` on the samples ``rows``; returns (flat weights, losses, paths)."""
    from phi_hig import HIG, hig_step
    net, x, t, physics, tau, conditions = _hig_problem(case)
    x, t = x[rows], t[rows]
    if conditions is not None:  # each rank passes the conditions of its own slice
        conditions = dict(conditions, a=conditions['a'][rows])
    opt = HIG(net, learning_rate=0.3, truncation=tau)
    losses, paths = [], []
    for _ in range(STEPS):
        if seen is not None:
            with torch.no_grad():
                mine = net(x).reshape(x.shape[0], -1)

            def simulate(z, *args, mine=mine, **kwargs):
                rows_seen = z.detach().reshape(z.shape[0], -1)
                seen.append(float((rows_seen[:, None] - mine[None]).norm(dim=-1).min(1).values.max()))
                return physics(z, *args, **kwargs)
        else:
            simulate = physics
        info = hig_step(net, opt, x, t, simulate, _loss, conditions, group=group)
        losses.append(info.loss)
        paths.append(info.path)
    return _flat(net), losses, paths


def _sip_problem():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    g = torch.Generator().manual_seed(4)
    y_target = torch.randn(B, 2, generator=g, dtype=torch.float64)
    A = torch.tensor([[2.0, 0.3], [0.1, 0.05]], dtype=torch.float64)

    def forward(x):
        return x @ A.T

    def inverse(x, y_target, *, y=None):
        return torch.linalg.solve(A, (y_target - forward(x)).T).T
    return net, y_target, forward, inverse


def run_first_order(kind, rows=slice(None), ddp=False):
    """STEPS steps of SIP (kind='sip') or Adam through the physics (kind='adam'); returns the flat weights."""
    from phi_hig import sip_step
    net, y_target, forward, inverse = _sip_problem()
    model = net
    if ddp:
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(net)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    y = y_target[rows]
    for _ in range(STEPS):
        if kind == 'sip':
            sip_step(model, opt, y, y, (forward, inverse))
        else:
            opt.zero_grad()
            (0.5 * ((forward(model(y)) - y) ** 2).sum(1)).mean().backward()
            opt.step()
    return _flat(net)


def main(rank, world, port, out):
    import datetime
    import gc
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        results = {}
        for case in HIG_CASES:
            counts = (UNEVEN if case in ('uneven', 'conditions') else SPLITS)[world]
            start = sum(counts[:rank])
            seen = []
            flat, losses, paths = run_hig(case, slice(start, start + counts[rank]), seen=seen)
            results[case] = dict(flat=flat, losses=losses, paths=paths, seen=max(seen))
        for kind in ('sip', 'adam'):
            per = B // world
            results[kind] = dict(flat=run_first_order(kind, slice(rank * per, (rank + 1) * per), ddp=True))
        torch.save(results, os.path.join(out, f'rank{rank}.pt'))
        dist.barrier()  # both ranks done before either tears the group down
    finally:
        gc.collect()  # DDP's reducer and pending gloo work go now, not during interpreter shutdown
        dist.destroy_process_group()


if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
