"""Time and memory of one HIG step: the authors' formulation against our SVD, Gram and structured paths.

One command runs everything (see benchmarks/README.md in the repository); it works from an installed package in
any folder and writes ``benchmarks/results/hig_step_<device>.md`` when run from the repository root, else
``hig_step_<device>.md`` in the current folder::

    python -m phi_hig bench                       # all cases
    python -m phi_hig bench --quick               # no (a) and no SVD path: minutes instead of ~half an hour
    python -m phi_hig bench --cases toy oscillators --skip gram-dense svd authors   # the small-problem ratios

Each (case, path) runs in a fresh subprocess (``--worker``) because the peak RSS of a process never
decreases: the peak-memory column is the growth of ``ru_maxrss`` across the first step over its value
right before it (after imports, problem set-up and a small warm-up of the libraries). Paths:

* ``authors`` (a): J materialized per sample (float32), float32 thin SVD, the explicit ``V Λ^κ Uᵀ``
  matrix (|θ| × b|y|), a matrix–vector product: the authors' TensorFlow formulation in PyTorch.
* ``svd`` (b): ``phi_hig.hig_step`` with ``path='svd'``: J materialized, float64 SVD.
* ``gram-dense`` (c): ``path='gram', structured=False``: J materialized per sample with ``torch.func``,
  float64 ``J Jᵀ`` in row blocks, float64 eigh, ``Jᵀc``.
* ``structured`` (d): ``phi_hig.HIG`` defaults: float64 Gram matrix from layer factors, J never formed.
* ``reference``: float64 SVD of J materialized in float64 from the layer factors (the same float32 network
  state, products formed in float64), untimed; the error column is ``‖d − d_ref‖ / ‖d_ref‖``.
* ``adam``: forward, loss, backward and ``torch.optim.Adam.step`` of the same problem.

The "largest tensor" column is the largest storage any PyTorch op returned during the first step
(recorded with a ``TorchDispatchMode``); LAPACK workspaces and NumPy/SciPy arrays are not included
(``eigh64`` holds one extra n×n float64 array, the size of G).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .. import checks
from ..errors import InvalidInputError
from .machine import cpu_name

PATHS = ('structured', 'adam', 'gram-dense', 'svd', 'authors', 'reference')
LABELS = {'authors': '(a) authors: float32 J, float32 SVD, explicit matrix', 'svd': '(b) ours: SVD path (float64)',
          'gram-dense': '(c) ours: Gram path, materialized J', 'structured': '(d) ours: structured Gram (default)',
          'adam': 'Adam step'}
DEFAULT_CASES = ('toy', 'oscillators', 'qdipole', 'poisson25k', 'poisson41k')
RESULTS = os.path.join('benchmarks', 'results')
"""Where results go when the current folder is the repository root (else the current folder)."""


class LargestTensor(TorchDispatchMode):
    """Largest storage (bytes) returned by any aten op inside the context; views are not new storage."""
    def __init__(self):
        super().__init__()
        self.bytes, self.what = 0, ''

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in list(args) + list((kwargs or {}).values())
                  if isinstance(a, torch.Tensor)}
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                n = t.untyped_storage().nbytes()
                if n > self.bytes:
                    self.bytes, self.what = n, f"{func.__name__} {tuple(t.shape)} {str(t.dtype).replace('torch.', '')}"
        return out


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


# ---------------------------------------------------------------- the step of each path

def _g_of(problem, y):
    """Gradient of the batch-mean loss with respect to the flattened outputs (as in ``hig_step``)."""
    yv = y.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        g, = torch.autograd.grad(problem.loss(yv, problem.targets).mean(), yv)
    return g.reshape(-1)


def authors_step(problem, net, kappa=-0.5):
    """(a): per-sample J (float32), float32 thin SVD, explicit half-inverse matrix, matrix–vector product."""
    from phi_hig import per_sample_jacobian
    with torch.no_grad():
        y = problem.outputs(net)
    g = _g_of(problem, y)
    J = per_sample_jacobian(net, problem.inputs, problem.simulate, problem.batch_conditions())  # (b|y|, |θ|) f32
    u, s, vh = torch.linalg.svd(J, full_matrices=False)
    keep = s > problem.truncation * s[0]
    half_inverse = vh[keep].T @ torch.diag(s[keep] ** kappa) @ u[:, keep].T  # (|θ|, b|y|) float32
    d = half_inverse @ g
    with torch.no_grad():                                                    # learning rate 0: same weights
        offset = 0
        for p in net.parameters():
            p.sub_(0.0 * d[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
    return d.to(torch.float64)


def make_step(path, problem, net):
    """A zero-argument function doing one step of ``path``; it returns the direction d (float64) or None."""
    import phi_hig
    if path == 'authors':
        return lambda: authors_step(problem, net)
    if path == 'adam':
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)

        def adam():
            opt.zero_grad()
            problem.loss(problem.outputs(net), problem.targets).mean().backward()
            opt.step()
        return adam
    if path == 'reference':
        def reference():
            from phi_hig.hig.jacobian import jacobian_factors
            factors = jacobian_factors(net, problem.inputs, problem.simulate, conditions=problem.batch_conditions())
            J64 = factors.rows(0, factors.n_samples, torch.float64)
            with torch.no_grad():  # y in simulate's own shape for the loss (factors.y is flattened to (b, |y|))
                y = problem.outputs(net)
            g = _g_of(problem, y).to(torch.float64)
            return phi_hig.half_inverse(J64, g, kappa=-0.5, truncation=problem.truncation, path='svd')
        return reference

    class Recording(phi_hig.HIG):
        def apply_direction(self, direction):
            self.last = direction.detach().to(torch.float64).clone()
            super().apply_direction(direction)
    settings = {'svd': dict(path='svd'), 'gram-dense': dict(path='gram', structured=False),
                'structured': dict(path='auto')}[path]
    opt = Recording(net, learning_rate=0.0, truncation=problem.truncation, **settings)  # lr 0: same weights

    def hig():
        info = phi_hig.hig_step(net, opt, problem.inputs, problem.targets, problem.simulate, problem.loss,
                                conditions=problem.batch_conditions())
        hig.info = info
        return opt.last
    return hig


# ---------------------------------------------------------------- one (case, path) in this process

def worker(case: str, path: str, device: str, reps: int, out_dir: str, threads: int = 0) -> dict:
    """Measure one (case, path) in this process (``--worker``; the driver starts a fresh process per row).

    Warms the libraries up on tiny problems, then times a first step (recording the peak-RSS growth across it,
    the GPU memory growth on CUDA and the largest tensor any op returns) and repeated warm steps (more for fast
    steps, fewer for slow ones); the structured path is also timed alternating with Adam steps in this process.

    Args:
        case: a key of `phi_hig.bench.problems.CASES`.
        path: one of `PATHS` ('authors', 'svd', 'gram-dense', 'structured', 'reference', 'adam').
        device: a torch device string.
        reps: repetitions of the timed step (×40 for steps under 50 ms).
        out_dir: folder for the row's JSON and the update direction (``CASE_PATH.npy``) the driver compares.
        threads: torch threads (0: torch's default).

    Returns:
        The row: sizes, first and median step times, number of timed steps, memory figures, the path the step
        took; also written to ``out_dir`` (kept if the driver is interrupted).
    """
    from .problems import CASES
    if threads:
        torch.set_num_threads(threads)
    problem = CASES[case]()
    dev = torch.device(device)
    problem.net.to(dev)
    problem.inputs, problem.targets = problem.inputs.to(dev), problem.targets.to(dev)
    net = problem.net
    # warm up the libraries (autograd, BLAS/LAPACK threads) on tiny problems, not the step itself
    w = torch.randn(64, 64, dtype=torch.float64, device=dev)
    torch.linalg.eigh(w @ w.T), torch.linalg.svd(w), torch.linalg.svd(w.float())
    problem.loss(problem.outputs(net, 2), problem.targets[:2]).sum().backward()
    net.zero_grad(set_to_none=True)
    step = make_step(path, problem, net)
    if dev.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        gpu0 = torch.cuda.max_memory_allocated()
    rss0 = _maxrss_mb()
    probe = LargestTensor()
    _sync(dev)
    t0 = time.perf_counter()
    with probe:
        d = step()
    _sync(dev)
    first = time.perf_counter() - t0
    rss_growth = _maxrss_mb() - rss0
    gpu_growth = (torch.cuda.max_memory_allocated() - gpu0) / 2 ** 20 if dev.type == 'cuda' else None
    times = []
    warm = first
    if path != 'reference' and first < 5:  # the probed first step is slow; judge the step size by a warm one
        _sync(dev)
        t0 = time.perf_counter()
        step()
        _sync(dev)
        warm = time.perf_counter() - t0
        times.append(warm)
    # tiny steps (the toy's ~1 ms) need many repetitions for a stable median
    n_more = 0 if path == 'reference' else (reps * 40 if warm < 0.05 else reps if warm < 5 else (2 if warm < 60 else 0))
    for _ in range(n_more):
        _sync(dev)
        t0 = time.perf_counter()
        step()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    interleaved = _interleaved_with_adam(problem, step, dev, reps * 40 if warm < 0.05 else reps) \
        if path == 'structured' and warm < 1 else {}
    result = dict(case=case, path=path, device=str(dev), n_params=problem.n_params, batch=problem.inputs.shape[0],
                  n_out=int(problem.outputs(net, 1).numel()), first_s=first,
                  median_s=statistics.median(times) if times else first, n_timed=max(1, len(times)),
                  rss_before_mb=rss0, rss_growth_mb=rss_growth, gpu_growth_mb=gpu_growth,
                  largest_mb=probe.bytes / 2 ** 20, largest_what=probe.what, threads=torch.get_num_threads(),
                  step_path=getattr(getattr(step, 'info', None), 'path', path), **interleaved)
    if d is not None:
        np.save(os.path.join(out_dir, f'{case}_{path}.npy'), d.detach().cpu().numpy())
    with open(os.path.join(out_dir, f'{case}_{path}.json'), 'w') as f:  # kept if the driver is interrupted
        json.dump(result, f)
    return result


def _interleaved_with_adam(problem, hig, device, n: int) -> dict:
    """Medians of ``n`` HIG steps alternating with ``n`` Adam steps (lr 0) of the same problem in this process:
    the ratio of two small step times is robust to load that changes between processes."""
    import copy
    net = copy.deepcopy(problem.net)
    opt = torch.optim.Adam(net.parameters(), lr=0.0)

    def adam():
        opt.zero_grad()
        problem.loss(problem.outputs(net), problem.targets).mean().backward()
        opt.step()
    adam()
    t_adam, t_hig = [], []
    for _ in range(n):
        for f, times in ((adam, t_adam), (hig, t_hig)):
            _sync(device)
            t0 = time.perf_counter()
            f()
            _sync(device)
            times.append(time.perf_counter() - t0)
    return dict(interleaved_adam_s=statistics.median(t_adam), interleaved_hig_s=statistics.median(t_hig),
                interleaved_n=n)


# ---------------------------------------------------------------- the driver

def _run_worker(case, path, args, out_dir) -> dict:
    cmd = [sys.executable, '-m', 'phi_hig.bench.hig_step', '--worker', '--case', case, '--path', path,
           '--device', args.device, '--reps', str(args.reps), '--out-dir', out_dir]
    if args.threads:
        cmd += ['--threads', str(args.threads)]
    env = dict(os.environ)
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # idle OpenMP threads sleep: robust on shared cores
    print(f"  {case:12s} {path:11s} ...", end='', flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f" failed ({proc.returncode})")
        print(proc.stderr[-3000:])
        return dict(case=case, path=path, error=proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'failed')
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f" {result['median_s']:.3f} s (n={result['n_timed']}), +{result['rss_growth_mb']:.0f} MB RSS "
          f"[{time.perf_counter() - t0:.0f} s wall]", flush=True)
    return result


def _fmt_time(s):
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def table(results: list, header: str) -> str:
    """The Markdown report: ``header``, then one table row per measured (case, path) with its median time, the
    ratio to Adam (the alternating in-process ratio where measured), the speed-up over the authors' formulation
    (a), the memory figures and the relative error of the update against the float64 reference.

    Args:
        results: the rows `worker` returned (failed rows carry ``error``; 'reference' rows are not shown).
        header: Markdown text above the table (command, machine, load).
    """
    by = {(r['case'], r['path']): r for r in results}
    lines = [header, '',
             '| case | b × \\|y\\| | \\|θ\\| | path | time per step (median, n) | × Adam (same b) | speed-up vs (a) '
             '| peak-RSS growth | largest tensor | rel. error of update |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for r in results:
        if r['path'] == 'reference':
            continue
        case = r['case']
        if 'error' in r:
            lines.append(f"| {case} | | | {LABELS.get(r['path'], r['path'])} | failed: {r['error']} | | | | | |")
            continue
        adam = by.get((case, 'adam'))
        authors = by.get((case, 'authors'))
        ratio = f"{r['median_s'] / adam['median_s']:.1f}×" if adam and 'error' not in adam and r['path'] != 'adam' else ''
        if r.get('interleaved_adam_s'):  # measured alternating with Adam in one process (robust to load)
            ratio = f"{r['interleaved_hig_s'] / r['interleaved_adam_s']:.2f}× (alternating, n={r['interleaved_n']})"
        speed = (f"{authors['median_s'] / r['median_s']:.1f}×" if authors and 'error' not in authors
                 and r['path'] not in ('adam', 'authors') else '')
        err = f"{r['error_rel']:.1e}" if r.get('error_rel') is not None else ''
        mem = f"{r['rss_growth_mb']:.0f} MB" + (f" (GPU {r['gpu_growth_mb']:.0f} MB)" if r.get('gpu_growth_mb') is not None else '')
        label = LABELS.get(r['path'], r['path']) + (f" [{r['step_path']}]" if r['path'] in ('svd', 'gram-dense', 'structured') else '')
        lines.append(f"| {case} | {r['batch']} × {r['n_out']} | {r['n_params']:,} | {label} | "
                     f"{_fmt_time(r['median_s'])} (n={r['n_timed']}) | {ratio} | {speed} | {mem} | "
                     f"{r['largest_mb']:.1f} MB: {r['largest_what']} | {err} |")
    return '\n'.join(lines)


def driver(args) -> str:
    """Run every selected (case, path) in a fresh worker process, compare each update with the float64 reference,
    write the report (``benchmarks/results/hig_step_<cpu|gpu>.md`` from the repository root, else the current
    folder, or ``--output``) and its JSON, print it and return its text.

    Args:
        args: the parsed, checked options of `main` (``cases``, ``quick``, ``skip``, ``skip_authors``, ``device``,
            ``reps``, ``threads``, ``output``, ``argv``).
    """
    cases = args.cases or list(DEFAULT_CASES)
    paths = [p for p in PATHS if not (args.quick and p in ('authors', 'svd'))
             and not (args.skip_authors and p == 'authors') and p not in (args.skip or [])]
    load_before = os.getloadavg()
    started = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    results = []
    with tempfile.TemporaryDirectory() as out_dir:
        for case in cases:
            print(f"{case}:")
            for path in paths:
                results.append(_run_worker(case, path, args, out_dir))
            ref_file = os.path.join(out_dir, f'{case}_reference.npy')
            if os.path.exists(ref_file):
                ref = np.load(ref_file)
                for r in results:
                    f = os.path.join(out_dir, f"{case}_{r['path']}.npy")
                    if r['case'] == case and r['path'] not in ('reference', 'adam') and os.path.exists(f):
                        r['error_rel'] = float(np.linalg.norm(np.load(f) - ref) / np.linalg.norm(ref))
        if 'oscillators' in cases and 'adam' in paths and 'oscillators512' not in cases:
            print("oscillators512:")
            results.append(_run_worker('oscillators512', 'adam', args, out_dir))
    load_after = os.getloadavg()
    cpu = cpu_name()
    header = (f"# HIG step benchmark ({args.device})\n\n"
              f"Command: `python -m phi_hig bench {' '.join(args.argv)}`  \n"
              f"Started {started}; machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
              f"({args.threads or torch.get_num_threads()} threads, OMP_WAIT_POLICY="
              f"{os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}); load average (1/5/15 min) before "
              f"{'/'.join(f'{x:.2f}' for x in load_before)}, after {'/'.join(f'{x:.2f}' for x in load_after)} "
              f"(other engineers' jobs share these cores).\n\n"
              f"Time: median over the repeated steps after the first (n = 1: the first and only step). "
              f"× Adam: for (d) on steps under a second, the ratio of the medians of HIG and Adam steps (lr 0) "
              f"alternating in one process; otherwise the ratio of the two rows' medians. "
              f"Peak-RSS growth: `ru_maxrss` after the first step minus before it, fresh process per row. "
              f"Largest tensor: largest storage returned by a PyTorch op during the first step. Error: "
              f"‖d − d_ref‖/‖d_ref‖ with d_ref from a float64 SVD of J formed in float64 from the same "
              f"network state. HIG: κ = −1/2, τ relative as in the authors' code.")
    text = table(results, header)
    name = f"hig_step_{'cpu' if args.device == 'cpu' else 'gpu'}.md"
    out = args.output or (os.path.join(RESULTS, name) if os.path.isdir(RESULTS) else name)
    with open(out, 'w') as f:
        f.write(text + '\n')
    with open(os.path.splitext(out)[0] + '.json', 'w') as f:
        json.dump(dict(started=started, load_before=load_before, load_after=load_after, results=results), f, indent=1)
    print()
    print(text)
    print(f"\nwritten to {out}")
    return text


def _check_output(output) -> None:
    """``--output``: a file whose folder exists and is writable (checked before the benchmark runs, not after)."""
    if output is None:
        return
    if os.path.isdir(output):
        raise InvalidInputError(f"--output {output!r} is a folder; give the Markdown file to write")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidInputError(f"--output {output!r}: {folder!r} is not a writable folder")


def check_arguments(args) -> None:
    """Refuse a bad option before any case runs (`InvalidInputError` naming it): unknown cases, a device phi_hig
    cannot use (`phi_hig.training.spec.check_device`, the rule of ``run``), ``--reps`` < 1, ``--threads`` < 0, an
    ``--output`` that cannot be written."""
    from .problems import CASES
    from ..training.spec import check_device
    for case in ([args.case] if args.worker else args.cases or []):
        checks.choice('--cases' if not args.worker else '--case', case, tuple(CASES))
    args.device = check_device(args.device)
    checks.integer('--reps', args.reps, low=1)
    checks.integer('--threads', args.threads, low=0)  # 0: torch's default
    _check_output(args.output)


def main(argv=None) -> int:
    """Command-line entry point (``python -m phi_hig bench [options]``); returns the exit status.

    A bad option is exit code 2 with one line ``phi_hig: error: …`` (`phi_hig.cli`), before any case runs.
    """
    from ..cli import Parser, report_error
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = Parser(prog='python -m phi_hig bench', description=__doc__.split('\n')[0])
    parser.add_argument('--cases', nargs='*', help=f"cases (default: {' '.join(DEFAULT_CASES)})")
    parser.add_argument('--quick', action='store_true', help="skip (a) and (b), the slow SVD paths")
    parser.add_argument('--skip-authors', action='store_true', help="skip (a), the authors' formulation")
    parser.add_argument('--skip', nargs='*', choices=PATHS, help="paths to skip")
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--reps', type=int, default=5, help="timed repetitions after the first step (fast paths)")
    parser.add_argument('--threads', type=int, default=0, help="torch threads per worker (0, the default: torch's "
                                                               "default)")
    parser.add_argument('--output', help="Markdown file to write (default benchmarks/results/hig_step_<device>.md in "
                                         "the repository root, else hig_step_<device>.md)")
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--case', help=argparse.SUPPRESS)
    parser.add_argument('--path', choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument('--out-dir', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        check_arguments(args)
    except InvalidInputError as err:
        return report_error(err)
    if args.worker:
        print(json.dumps(worker(args.case, args.path, args.device, args.reps, args.out_dir, args.threads)))
        return 0
    driver(args)
    return 0

if __name__ == '__main__':
    sys.exit(main())
