"""The JAX HIG step next to a bare eigh of its Gram matrix, a jitted JAX Adam step and the torch HIG step.

    python -m benchmarks.jax_hig_step                   # toy and poisson41k: results/jax_hig_step_cpu.md, .json
    python -m benchmarks.jax_hig_step --cases toy --reps 20
    python -m benchmarks.jax_hig_step --tiny --output /tmp/x.md   # tiny sizes (the test runs this)

Cases (the HIG paper's sizes, built from the package's experiments with the torch weights copied into a PhiML JAX
network, `phi_hig.nets.jax_twin`): ``toy`` (b = 256, |y| = 2, 1-7-2 tanh, 30 parameters, γ = 0.01, τ = 1e-6) and
``poisson41k`` (``poisson8``, b = 64, |y| = 64, 64-64-256-64-64 tanh, 41,408 parameters, PhiFlow's
``field.laplace``, τ = 1e-5); float32 weights as in the experiments. In one process, per case, alternating, ``--reps``
times each after a warm-up: the JAX HIG step (``phi_hig.hig_step`` on the JAX network, learning rate 0 so every
repetition sees the same weights), a bare ``jnp.linalg.eigh`` of the same float64 Gram matrix (compiled), a
jitted JAX Adam step (``jax.jit`` of value-and-grad and ``jax.example_libraries.optimizers.adam``), and the torch
HIG step on the torch network; medians, every JAX result waited for with ``block_until_ready``. Compilation is
excluded from the medians and stated separately (first call minus median). Update error: ‖d − d_ref‖/‖d_ref‖ with
d_ref from a float64 SVD of J formed in float64 from the step's layer factors (the reference of
``python -m phi_hig bench``; the JAX step against the torch step end to end is tests/test_hig_jax.py).
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # torch's spinning OpenMP threads would slow the JAX step next
import statistics
import sys
import time

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
CASES = ('toy', 'poisson41k')


def build(case: str, tiny: bool):
    """``(torch Problem, JAX net, JAX simulate, JAX loss, JAX inputs, JAX targets)`` with the same weights and data."""
    import jax.numpy as jnp
    import torch
    from phi_hig.bench.problems import from_experiment
    from phi_hig.nets import jax_twin
    if case == 'toy':
        problem = from_experiment('toy', 'toy', 16 if tiny else 256)

        def simulate(z):
            return z * jnp.array([1.0, 0.01], z.dtype)  # the experiment's (z¹, γ·z²), γ = 0.01

        def loss(y, t):
            return 0.5 * ((y - t) ** 2).sum(-1)
    else:
        problem = from_experiment('poisson41k', 'poisson8', 2 if tiny else 64, network='paper')
        simulate, loss = problem.simulate, problem.loss  # PhiFlow code on arrays: runs on JAX arrays as they are
    net = jax_twin(problem.net)
    as_jax = lambda t: jnp.asarray(t.detach().numpy()) if isinstance(t, torch.Tensor) else t  # noqa: E731
    return problem, net, simulate, loss, as_jax(problem.inputs), as_jax(problem.targets)


def reference_direction(found, truncation: float) -> np.ndarray:
    """d_ref = V Λ^(−1/2) Uᵀ g over the kept σ, from a float64 SciPy SVD of J formed in float64 from the step's own
    layer factors (the same float32 network state; as ``python -m phi_hig bench`` forms its reference): the error
    of the float64 Gram-and-eigh path against the SVD path on the same J."""
    import jax
    import scipy.linalg
    with jax.enable_x64(True):
        J = np.asarray(found.operator.matrix())
    g = np.asarray(found.gradient, np.float64)
    u, s, vt = scipy.linalg.svd(J, full_matrices=False, lapack_driver='gesdd')
    keep = s > max(truncation * s[0], max(J.shape) * np.finfo(np.float64).eps * s[0])
    return vt[keep].T @ (s[keep] ** -0.5 * (u[:, keep].T @ g))


def jitted_adam(net, simulate, loss, x, targets):
    """A jitted JAX Adam step of the same problem: ``step()`` runs one (the weights change, lr 1e-3)."""
    import jax
    from jax.example_libraries import optimizers
    from phi_hig.hig.jax_jacobian import call_with_parameters
    init, update, get_params = optimizers.adam(1e-3)
    state = [init(net.parameters), 0]

    @jax.jit
    def adam_step(i, opt_state, x, targets):
        objective = lambda p: loss(simulate(call_with_parameters(net, p, x)), targets).mean()  # noqa: E731
        value, grads = jax.value_and_grad(objective)(get_params(opt_state))
        return update(i, grads, opt_state), value

    def step():
        state[0], value = adam_step(state[1], state[0], x, targets)
        state[1] += 1
        return jax.block_until_ready(value)
    return step


_RUNTIME = ('DevicePut', 'Handle inputs', 'ParseArguments', 'AllocateOutputBuffersWithInputReuse')
"""Runtime events of a call that are not operations of the compiled program."""


def xla_profile(calls: dict, n: int = 200, top: int = 6) -> dict:
    """Per name of ``calls`` (name → a function running one step to completion): the ``top`` XLA operations by time
    per step over ``n`` steps, from a ``jax.profiler`` trace ({op: µs}), plus 'all XLA ops' (the executable's
    ``ThunkExecutor::Execute`` per step). Empty when the trace cannot be read."""
    import collections
    import glob
    import gzip
    import tempfile
    import jax
    out = {}
    for name, call in calls.items():
        for _ in range(20):
            call()
        with tempfile.TemporaryDirectory() as folder:
            with jax.profiler.trace(folder):
                for _ in range(n):
                    call()
            found = glob.glob(os.path.join(folder, '**', '*.trace.json.gz'), recursive=True)
            if not found:
                return {}
            events = json.load(gzip.open(found[0]))['traceEvents']
        totals = collections.Counter()
        for e in events:
            if e.get('ph') == 'X' and not e['name'].startswith('$') and '::' not in e['name'] \
                    and not e['name'].startswith('PjitFunction') and e['name'] not in _RUNTIME:
                totals[e['name']] += e['dur'] / n
        executed = sum(e['dur'] for e in events if e.get('name') == 'ThunkExecutor::Execute') / n
        out[name] = {'all XLA ops': executed, **dict(totals.most_common(top))}
    return out


def run_case(case: str, reps: int, tiny: bool) -> dict:
    import jax
    import torch
    import phi_hig
    from phi_hig.hig.arrays import array_ops
    problem, net, simulate, loss, x, targets = build(case, tiny)
    b = int(x.shape[0])
    opt = phi_hig.HIG(net, learning_rate=0.0, truncation=problem.truncation)
    opt_t = phi_hig.HIG(problem.net, learning_rate=0.0, truncation=problem.truncation)
    direction = phi_hig.hig.jax_optimizer.jax_hig_direction
    t0 = time.perf_counter()
    found = direction(net, opt, x, targets, simulate, loss)
    first_step = time.perf_counter() - t0
    ops = array_ops(found.direction)
    with ops.scope():
        G = found.operator.gram() if found.info.path.startswith('gram') and found.info.path != 'gram-dual' \
            else found.operator.gram_dual()
        t0 = time.perf_counter()
        jax.block_until_ready(ops.eigh(G))
        first_eigh = time.perf_counter() - t0
    adam = jitted_adam(net, simulate, loss, x, targets)
    t0 = time.perf_counter()
    adam()
    first_adam = time.perf_counter() - t0
    phi_hig.hig_step(problem.net, opt_t, problem.inputs, problem.targets, problem.simulate, problem.loss)
    times = {'jax': [], 'eigh': [], 'adam': [], 'torch': []}
    for _ in range(reps):
        t0 = time.perf_counter()
        info = phi_hig.hig_step(net, opt, x, targets, simulate, loss)
        times['jax'].append(time.perf_counter() - t0)
        with ops.scope():
            t0 = time.perf_counter()
            jax.block_until_ready(ops.eigh(G))
            times['eigh'].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        adam()
        times['adam'].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        phi_hig.hig_step(problem.net, opt_t, problem.inputs, problem.targets, problem.simulate, problem.loss)
        times['torch'].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    profile = xla_profile({'JAX HIG step': lambda: phi_hig.hig_step(net, opt, x, targets, simulate, loss),
                           'jitted JAX Adam': adam}, n=10 if tiny else 200) if case == 'toy' else {}
    d_ref = reference_direction(found, problem.truncation)
    d = np.asarray(found.direction)
    n_params = sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(net.parameters))
    fused = info.time_linalg == 0.0  # phi_hig.hig.jax_fused: one compiled call
    return dict(case=case, rows=f"{b} × {found.operator.n_out}", params=n_params,
                path=info.path + (' (fused)' if fused else ''), reps=reps, profile=profile,
                jax=med['jax'], eigh=med['eigh'], adam=med['adam'], torch=med['torch'],
                compile=first_step - med['jax'], compile_eigh=first_eigh - med['eigh'],
                compile_adam=first_adam - med['adam'], error=float(np.linalg.norm(d - d_ref) / np.linalg.norm(d_ref)),
                threads=torch.get_num_threads())


def _seconds(t: float) -> str:
    return f"{t * 1e3:.2f} ms" if t < 1 else f"{t:.2f} s"


def _compile_time(t: float) -> str:
    """A compile time (first call minus median); below zero the load's noise exceeded it."""
    return _seconds(t) if t >= 0 else "< noise"


def table(rows: list, command: str, load: tuple) -> str:
    import jax
    import torch
    lines = [
        "# JAX HIG step (cpu)", "",
        f"Command: `{command}`  ",
        f"Started {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; jax {jax.__version__} (CPU), torch "
        f"{torch.__version__} ({rows[0]['threads'] if rows else '?'} threads, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY')}); load average (1/5/15 min) before "
        f"{load[0]}, after {load[1]} (other engineers' jobs share these cores).", "",
        "Medians of alternating repetitions in one process (`block_until_ready`), compilation excluded (its "
        "column: first call minus median). Update error: ‖d − d_ref‖/‖d_ref‖ of the staged direction "
        "(`jax_hig_direction`), d_ref from a float64 SVD of J formed in float64 from the step's layer factors; a "
        "'(fused)' step is one compiled call (`phi_hig.hig.jax_fused`) whose update equals the staged one to 1e-10 "
        "(tests/test_hig_jax.py). JAX and torch steps on the same (float32) weights and data.", "",
        "| case | b × \\|y\\| | \\|θ\\| | path | JAX HIG step | bare eigh of its Gram | step / eigh | jitted JAX Adam "
        "| step / Adam | torch HIG step | JAX / torch | compile: step, eigh, Adam | update error | n |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['rows']} | {r['params']:,} | {r['path']} | {_seconds(r['jax'])} | "
                     f"{_seconds(r['eigh'])} | {r['jax'] / r['eigh']:.2f}× | {_seconds(r['adam'])} | "
                     f"{r['jax'] / r['adam']:.2f}× | {_seconds(r['torch'])} | {r['jax'] / r['torch']:.2f}× | "
                     f"{_compile_time(r['compile'])}, {_compile_time(r['compile_eigh'])}, {_compile_time(r['compile_adam'])} | "
                     f"{r['error']:.1e} | {r['reps']} |")
    for r in rows:
        if r.get('profile'):
            lines += ["", f"Where the time of one {r['case']} step goes: XLA's own profile (`jax.profiler`, µs per step "
                      "over 200 steps; 'all XLA ops' is the compiled program's execution, the rest of a step is "
                      "dispatch and Python):", ""]
            for name, ops in r['profile'].items():
                lines.append(f"- {name}: " + ', '.join(f"{op} {us:.1f}" for op, us in ops.items()))
    return '\n'.join(lines) + '\n'


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--cases', nargs='*', default=list(CASES), choices=CASES)
    parser.add_argument('--reps', type=int, default=None, help='repetitions (default 50 toy, 5 poisson41k; tiny 2)')
    parser.add_argument('--tiny', action='store_true', help='tiny batches (toy b = 16, poisson b = 2)')
    parser.add_argument('--output', default=os.path.join(RESULTS, 'jax_hig_step_cpu.md'))
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    rows = []
    for case in args.cases:
        reps = args.reps or (2 if args.tiny else (50 if case == 'toy' else 5))
        rows.append(run_case(case, reps, args.tiny))
        r = rows[-1]
        print(f"{case}: JAX {_seconds(r['jax'])}, eigh {_seconds(r['eigh'])}, Adam {_seconds(r['adam'])}, "
              f"torch {_seconds(r['torch'])}, error {r['error']:.1e}", flush=True)
    command = 'python -m benchmarks.jax_hig_step ' + ' '.join(argv if argv is not None else sys.argv[1:])
    text = table(rows, command.strip(), (' / '.join(f'{v:.2f}' for v in load_before),
                                         ' / '.join(f'{v:.2f}' for v in os.getloadavg())))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    from phi_hig.files import atomic_write
    atomic_write(args.output, text)
    record = dict(command=command.strip(), load_before=load_before, load_after=os.getloadavg(), rows=rows)
    atomic_write(os.path.splitext(args.output)[0] + '.json', json.dumps(record, indent=1) + '\n')
    print(text)
    return args.output


if __name__ == '__main__':
    main()
