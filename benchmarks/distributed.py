"""Data-parallel steps on torch.distributed: step time with 1 and 2 processes side by side, and bytes moved.

    python -m benchmarks.distributed                   # all cases, 1 and 2 processes, one torch thread each
    python -m benchmarks.distributed --cases qdipole --reps 5

Cases: HIG steps of ``quantum_dipole`` (b = 16, |y| = 28, 384 Crank–Nicolson steps: physics-bound) and
``poisson8`` (b = 64, |y| = 64, 41,408 parameters: bound by the eigendecomposition of the 4096² Gram matrix, which
runs once, on rank 0, whatever the number of ranks), and SIP steps of ``heat`` and ``fluid`` with the network in
``DistributedDataParallel`` (each rank runs the inverse solver on its own examples). Every configuration runs in
fresh processes (gloo on 127.0.0.1, ``--threads`` torch threads per process), one after the other in this run, on
the same global batch; the step time is the median over ``--reps`` steps after two warm-up steps, measured on
rank 0 between barriers. Bytes: the payload of every collective a step issues through ``torch.distributed``,
counted on rank 0 (what it sends or receives per call), split by collective; DDP's gradient all-reduce runs in
C++ and is given as the size of the gradients it reduces. Writes ``benchmarks/results/distributed_<device>.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
CASES = ('qdipole', 'poisson41k', 'heat', 'fluid')


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class ByteCounter:
    """Counts the payload bytes of torch.distributed collectives called while installed (this process)."""

    NAMES = ('all_reduce', 'all_gather', 'gather', 'broadcast', 'reduce')

    def __init__(self):
        import torch.distributed as dist
        self.dist, self.bytes, self.calls, self._orig = dist, {}, {}, {}

    def __enter__(self):
        for name in self.NAMES:
            orig = getattr(self.dist, name)
            self._orig[name] = orig

            def wrapped(*args, _name=name, _orig=orig, **kwargs):
                tensors = [a for a in args if isinstance(a, torch.Tensor)]
                lists = [a for a in args if isinstance(a, list)]
                n = sum(t.numel() * t.element_size() for t in tensors)
                if _name in ('all_gather',) and lists:
                    n = sum(t.numel() * t.element_size() for t in lists[0])
                if _name == 'gather' and lists and lists[0]:
                    n = sum(t.numel() * t.element_size() for t in lists[0])
                self.bytes[_name] = self.bytes.get(_name, 0) + n
                self.calls[_name] = self.calls.get(_name, 0) + 1
                return _orig(*args, **kwargs)
            setattr(self.dist, name, wrapped)
        return self

    def __exit__(self, *exc):
        for name, orig in self._orig.items():
            setattr(self.dist, name, orig)


def _hig_setup(case, rank, world):
    from phi_hig import HIG, hig_step
    from phi_hig.bench.problems import CASES as PROBLEMS
    from phi_hig.processes import local_rows
    problem = PROBLEMS[case]()
    b = problem.inputs.shape[0]
    rows = local_rows(b)
    x, t = problem.inputs[rows], problem.targets[rows]
    opt = HIG(problem.net, learning_rate=0.0, truncation=problem.truncation)  # lr 0: every step is the same step

    def step():
        return hig_step(problem.net, opt, x, t, problem.simulate, problem.loss, conditions=problem.conditions(x, t))
    return step, dict(batch=b, n_params=problem.n_params)


def _sip_setup(case, rank, world):
    from phi_hig import experiments, sip_step
    from phi_hig.experiments import DataStream
    from phi_hig.processes import local_rows
    ex = experiments.get(case, preset='paper', **({'resolution': (32, 32), 'n_train': 16, 'n_test': 2}
                                                   if case == 'fluid' else {'resolution': (32, 32), 'n_test': 2}))
    b = 16
    torch.manual_seed(0)
    net = ex.make_net()
    model = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(net)
    x, t = DataStream(ex, 0).next(b)
    x, t = x[local_rows(b)], t[local_rows(b)]
    opt = torch.optim.Adam(model.parameters(), lr=0.0)
    inverse = ex.inverses['default']
    physics = (ex.simulate, inverse)  # Inverse(z, targets, y=...) runs solve with its default options

    def step():
        return sip_step(model, opt, x, t, physics, loss=ex.loss)
    grads = sum(p.numel() * p.element_size() for p in net.parameters() if p.requires_grad)
    return step, dict(batch=b, n_params=sum(p.numel() for p in net.parameters()), resolution=32,
                      ddp_gradient_bytes=grads)


def worker(case, rank, world, port, reps, threads, out):
    import datetime
    import torch.distributed as dist
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=300))
    setup = _sip_setup if case in ('heat', 'fluid') else _hig_setup
    step, facts = setup(case, rank, world)
    times = []
    for i in range(reps + 2):
        if world > 1:
            dist.barrier()
        t0 = time.perf_counter()
        if i == 2 and world > 1:
            with ByteCounter() as counter:
                step()
        else:
            step()
        if world > 1:
            dist.barrier()
        times.append(time.perf_counter() - t0)
    if rank == 0:
        result = dict(case=case, world=world, threads=threads, median_s=statistics.median(times[2:]),
                      n=len(times) - 2, **facts)
        if world > 1:
            result.update(bytes=counter.bytes, calls=counter.calls)
        with open(out, 'w') as f:
            json.dump(result, f)
    if world > 1:
        dist.destroy_process_group()


def run(case, world, reps, threads, tmp) -> dict:
    port = _free_port()
    out = os.path.join(tmp, f'{case}_{world}.json')
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY='PASSIVE')
    procs = [subprocess.Popen([sys.executable, '-m', 'benchmarks.distributed', '--worker', case, str(r), str(world),
                               str(port), str(reps), str(threads), out], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(world)]
    logs = [p.communicate(timeout=3600)[0] for p in procs]
    if any(p.returncode for p in procs):
        return dict(case=case, world=world, error=next(l for p, l in zip(procs, logs) if p.returncode)[-2000:])
    with open(out) as f:
        return json.load(f)


def _mb(n) -> str:
    return f"{n / 1e6:.3f} MB" if n >= 1e4 else f"{n} B"


def report(results, args, load) -> str:
    lines = ["# Data-parallel steps: 1 vs 2 processes (gloo, CPU)", '',
             f"Command: `python -m benchmarks.distributed {' '.join(args.argv)}`; {os.cpu_count()} cores, torch "
             f"{torch.__version__}, {args.threads} torch thread(s) per process; load average before/after "
             f"{load[0]:.2f}/{load[1]:.2f}.", '',
             '| case | step | batch (global) | 1 process | 2 processes | speed-up | bytes per step on rank 0 (2 processes) |',
             '|---|---|---|---|---|---|---|']
    by = {(r['case'], r['world']): r for r in results}
    for case in args.cases:
        one, two = by.get((case, 1), {}), by.get((case, 2), {})
        kind = 'SIP + DDP' if case in ('heat', 'fluid') else 'HIG'
        if 'error' in one or 'error' in two:
            lines.append(f"| {case} | {kind} | | failed | failed | | {(one.get('error') or two.get('error'))[-200:]} |")
            continue
        moved = ', '.join(f"{k} {_mb(v)} ({two['calls'][k]}×)" for k, v in sorted(two.get('bytes', {}).items()))
        if two.get('ddp_gradient_bytes'):  # DDP's bucketed all-reduce runs in C++, outside the counted calls
            moved += f"; DDP gradient all-reduce {_mb(two['ddp_gradient_bytes'])}"
        lines.append(f"| {case} | {kind} | {one['batch']} | {one['median_s']:.3f} s | {two['median_s']:.3f} s | "
                     f"{one['median_s'] / two['median_s']:.2f}× | {moved} |")
    return '\n'.join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == '--worker':
        case, rank, world, port, reps, threads, out = argv[1:]
        worker(case, int(rank), int(world), int(port), int(reps), int(threads), out)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--cases', nargs='*', default=list(CASES), choices=CASES)
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--output', default=os.path.join(RESULTS, 'distributed_cpu.md'))
    args = parser.parse_args(argv)
    args.argv = argv
    before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            for world in (1, 2):
                print(f"{case}, {world} process(es) ...", end='', flush=True)
                results.append(run(case, world, args.reps, args.threads, tmp))
                r = results[-1]
                print(f" {r['median_s']:.3f} s" if 'median_s' in r else f" failed: {r['error'][-300:]}", flush=True)
    text = report(results, args, (before, os.getloadavg()[0]))
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, 'w') as f:
        f.write(text + '\n')
    with open(os.path.splitext(args.output)[0] + '.json', 'w') as f:
        json.dump(results, f, indent=1)
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
