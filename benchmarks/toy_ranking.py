"""The HIG paper's toy (γ = 0.01) on JAX and on torch: do the backends rank HIG, Adam and Gauss–Newton alike?

    python -m benchmarks.toy_ranking                      # 16,000 steps, 5 seeds: results/toy_ranking.md, .json
    python -m benchmarks.toy_ranking --steps 300 --seeds 2 --output /tmp/x.md

Schnell, Holl & Thuerey (2022, §3.1, fig. 2): at γ = 0.01, HIG keeps falling while Adam and Gauss–Newton plateau.
Per backend and seed, ``phi_hig.train`` runs the experiment ``toy`` as the runner does (``--backend jax`` builds a
JAX twin from the torch run's initial weights and data stream), methods adam, gn and hig with the experiment's
settings (Adam η = 0.3; GN η = 1, τ = 1e-4; HIG η = 1, τ = 1e-6), and records the held-out loss at a few steps. The
verdict at the last step, on the medians over the seeds: the ranking HIG < Adam < GN holds on a backend when
median(Adam)/median(HIG) and median(GN)/median(Adam) are both at least ``--margin`` (3: the suite's rule that a
threshold lies ≥ 3× from what was measured), and the per-seed ratios are listed, the worst seed included. Exits 1
when a backend does not reproduce the ranking.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
METHODS = ('adam', 'gn', 'hig')


def losses(backend: str, steps: int, seeds: int, checkpoints: int = 4) -> dict:
    """``{seed: {step: {method: held-out loss}}}`` at ``checkpoints`` evenly spaced steps (the last one included),
    and the seconds per seed."""
    import phi_hig
    from phi_hig.experiments import get
    experiment = get('toy')
    out, seconds = {}, []
    for seed in range(seeds):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # GN's loss grows at first (the run flags it)
            result = phi_hig.train(experiment, list(METHODS), steps=steps, seed=seed, progress=False,
                                   eval_every=max(1, steps // checkpoints), backend=backend)
        seconds.append(time.perf_counter() - t0)
        table = {}
        for record in result.records:
            value = record.get('test_loss')
            if value is not None and value == value:
                table.setdefault(record['step'], {})[record['method']] = value
        out[seed] = table
        last = table[max(table)]
        print(f"{backend} seed {seed}: " + ', '.join(f"{m} {last[m]:.3g}" for m in METHODS)
              + f" ({seconds[-1]:.0f} s)", flush=True)
    return {'losses': out, 'seconds': seconds}


def verdict(per_seed: dict, margin: float) -> dict:
    """Medians at the last step, the two ratios and whether both reach ``margin``; per seed the ratios."""
    last = {seed: table[max(table)] for seed, table in per_seed.items()}
    median = {m: statistics.median(v[m] for v in last.values()) for m in METHODS}
    ratios = {'adam/hig': median['adam'] / median['hig'], 'gn/adam': median['gn'] / median['adam']}
    seeds = {seed: {'adam/hig': v['adam'] / v['hig'], 'gn/adam': v['gn'] / v['adam']} for seed, v in last.items()}
    return dict(median=median, ratios=ratios, seeds=seeds, holds=all(r >= margin for r in ratios.values()))


def table(results: dict, args, load: tuple) -> str:
    lines = ["# The toy's ranking on JAX and torch (γ = 0.01)", "",
             f"Command: `{results['command']}`  ",
             f"{args.steps} steps, seeds 0–{args.seeds - 1}, batch 256, the experiment's settings (Adam η = 0.3; GN η = 1, "
             f"τ = 1e-4; HIG η = 1, τ = 1e-6); both backends from the same initial weights and data stream. Load "
             f"average before {load[0]}, after {load[1]}.", "",
             f"Verdict (margin {args.margin:g}×, on the medians over the seeds at step {args.steps}):", ""]
    for backend, r in results['backends'].items():
        v = r['verdict']
        lines.append(f"- **{backend}**: median held-out loss HIG {v['median']['hig']:.3g}, Adam "
                     f"{v['median']['adam']:.3g}, GN {v['median']['gn']:.3g}; Adam/HIG {v['ratios']['adam/hig']:.2f}×, "
                     f"GN/Adam {v['ratios']['gn/adam']:.2f}× → ranking {'reproduced' if v['holds'] else 'NOT reproduced'}"
                     f" ({statistics.median(r['seconds']):.0f} s per seed)")
    lines += ["", "Per seed at the last step (held-out loss; the ratios Adam/HIG and GN/Adam):", "",
              "| backend | seed | Adam | GN | HIG | Adam/HIG | GN/Adam |", "|---|---|---|---|---|---|---|"]
    for backend, r in results['backends'].items():
        for seed, per_step in r['losses'].items():
            last = per_step[max(per_step)]
            s = r['verdict']['seeds'][seed]
            lines.append(f"| {backend} | {seed} | {last['adam']:.3g} | {last['gn']:.3g} | {last['hig']:.3g} | "
                         f"{s['adam/hig']:.2f} | {s['gn/adam']:.2f} |")
    lines += ["", "The medians along the run (Adam / GN / HIG):", "", "| step | " + " | ".join(results['backends'])
              + " |", "|---|" + "---|" * len(results['backends'])]
    steps = sorted(next(iter(next(iter(results['backends'].values()))['losses'].values())))
    for step in steps:
        cells = []
        for r in results['backends'].values():
            values = [per_step[step] for per_step in r['losses'].values() if step in per_step]
            cells.append(' / '.join(f"{statistics.median(v[m] for v in values):.3g}" for m in METHODS))
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=16000)
    parser.add_argument('--seeds', type=int, default=5)
    parser.add_argument('--margin', type=float, default=3.0)
    parser.add_argument('--checkpoints', type=int, default=4, help='evaluations along the run (the last included)')
    parser.add_argument('--backends', nargs='*', default=['jax', 'torch'], choices=['jax', 'torch'])
    parser.add_argument('--output', default=os.path.join(RESULTS, 'toy_ranking.md'))
    args = parser.parse_args(argv)
    if min(args.steps, args.seeds, args.checkpoints) < 1 or not args.margin > 0:
        parser.error("--steps, --seeds and --checkpoints must be at least 1 and --margin positive")
    load_before = os.getloadavg()
    command = 'python -m benchmarks.toy_ranking ' + ' '.join(argv if argv is not None else sys.argv[1:])
    results = {'command': command.strip(), 'backends': {}}
    for backend in args.backends:
        run = losses(backend, args.steps, args.seeds, args.checkpoints)
        run['verdict'] = verdict(run['losses'], args.margin)
        results['backends'][backend] = run
    text = table(results, args, tuple(' / '.join(f'{v:.2f}' for v in load)
                                      for load in (load_before, os.getloadavg())))
    from phi_hig.files import atomic_write
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    atomic_write(args.output, text)
    atomic_write(os.path.splitext(args.output)[0] + '.json', json.dumps(results, indent=1) + '\n')
    print(text)
    return 0 if all(r['verdict']['holds'] for r in results['backends'].values()) else 1


if __name__ == '__main__':
    sys.exit(main())
