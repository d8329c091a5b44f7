"""Tables of results: plain-text tables of runs over seeds (`print_table`, `seed_table`) and the papers' tables
that are not training curves, measured on a trained network:

* `timing_table`: Holl, Koltun & Thuerey 2022, Table 1 — time per example of network inference against the
  iterative inverse solver of the fluid experiment, at equal solution quality (MAE of v₀ in x space).
"""
from __future__ import annotations

import statistics
import time
from typing import Dict, List

import numpy as np
import torch

from .. import checks
from ..errors import InvalidInputError
from ..experiments.base import Experiment

__all__ = ['print_table', 'seed_table', 'timing_table']


def print_table(lines: List[str], path: str) -> None:
    """Print the lines of a plain-text results table and write them to ``path``."""
    text = '\n'.join(lines)
    print(text)
    with open(path, 'w') as f:
        f.write(text + '\n')


def seed_table(title: str, finals: Dict[str, List[dict]], path: str) -> None:
    """Print and write (`print_table`) the spread over seeds of each run: median, min and max held-out loss, the
    median step count and the first seed's status.

    Args:
        title: the table's first line.
        finals: per run label, one ``summary['final'][method]`` dict per seed (``test_loss``, ``steps``,
            ``status``).
        path: the text file written.
    """
    lines = [title, f"{'run':>16} {'median test':>12} {'min':>10} {'max':>10} {'steps':>7}  status"]
    for label, rows in finals.items():
        losses = [r['test_loss'] for r in rows]
        lines.append(f"{label:>16} {statistics.median(losses):12.3e} {min(losses):10.3e} {max(losses):10.3e} "
                     f"{int(statistics.median(r['steps'] for r in rows)):7d}  {rows[0].get('status', '')}")
    print_table(lines, path)


def timing_table(experiment: Experiment, net, n_examples: int = 4, max_iterations: int = 30, repeats: int = 5) -> dict:
    """Holl, Koltun & Thuerey 2022, Table 1 for the fluid experiment: seconds per example for network inference
    and for the iterative inverse solver to reach the same solution quality, measured as the paper does: MAE of
    `v0` against the ground truth (x space).

    The solver starts at v = 0 and applies the experiment's inverse update (the reverse-simulation estimator)
    repeatedly, per example, until its MAE is at most the network's MAE on that example or `max_iterations`
    updates were made (then `reached` is False and its time is a lower bound). The check reads the ground truth
    and is not timed. Network inference is timed in eval mode as the best of `repeats` batched calls (a loaded
    machine inflates single timings). Both are timed after one untimed warm-up call (the inverse's compiled
    simulations trace on their first call). Returns per-example rows, the mean and median solver time per example and
    `ratio` (`ratio_median`) = mean (median) solver time / network time per example.
    """
    n_examples = checks.integer('n_examples', n_examples, low=1)
    max_iterations = checks.integer('max_iterations', max_iterations, low=1)
    repeats = checks.integer('repeats', repeats, low=1)
    if experiment.name != 'fluid' or experiment.inverse is None:
        raise InvalidInputError(f"timing_table needs the fluid experiment (targets (m_t, m0, v0*)), got {experiment.name!r}")
    inputs, targets = (t[:n_examples] for t in experiment.test_set)
    n_examples = inputs.shape[0]
    truth = targets[:, 2:4]

    def mae(z, i):
        return float((z[0, :2] - truth[i]).abs().mean())

    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(inputs)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                z_net = net(inputs)
                times.append(time.perf_counter() - t0)
    finally:
        net.train(was_training)
    t_net = min(times) / n_examples
    experiment.inverse(torch.zeros_like(truth[:1]), targets[:1], experiment.conditions(inputs[:1], targets[:1]))
    rows = []  # (the call above, untimed, traces what the inverse compiles for one example, as net(inputs) did)
    for i in range(n_examples):
        x, t = inputs[i:i + 1], targets[i:i + 1]
        goal = mae(z_net[i:i + 1], i)
        m0 = experiment.conditions(x, t)  # the initial marker
        z = torch.zeros_like(truth[i:i + 1])
        seconds, iterations, error = 0., 0, mae(z, i)
        while error > goal and iterations < max_iterations:
            t0 = time.perf_counter()
            z = z + experiment.inverse(z, t, m0)
            seconds += time.perf_counter() - t0
            iterations += 1
            error = mae(z, i)
        rows.append(dict(seconds=seconds, iterations=iterations, v_error=error, network_v_error=goal,
                         reached=error <= goal))
    solver = float(np.mean([r['seconds'] for r in rows]))
    median = float(np.median([r['seconds'] for r in rows]))
    return dict(metric='MAE of v0 (x space)', network_seconds_per_example=t_net, solver_seconds_per_example=solver,
                ratio=solver / t_net if t_net > 0 else float('inf'), solver_seconds_median=median,
                ratio_median=median / t_net if t_net > 0 else float('inf'),
                mean_iterations=float(np.mean([r['iterations'] for r in rows])),
                all_reached=all(r['reached'] for r in rows), examples=rows)
