"""What checkpointing costs a run: ``toy --preset test`` with ``--checkpoint-every 7`` against the same run without.

    python scripts/checkpoint_cost.py [--steps 700] [--repeats 10] [--methods adam,hig] [--interval SECONDS]

Prints two figures, both relative to the run's training time (the sum of the methods' timed steps):

* blocking: the time the training thread spends handing checkpoints over (copying the state into a packed
  snapshot and queueing it), and separately the one wait for the last write at the end of the run;
* training-time slowdown: the median training time with checkpoints over the median without (the background
  writer's share of the CPU and the GIL shows up here);
* end to end: the median extra wall-clock time of a checkpointing run over a plain one (the evaluation being the
  same in both).

``--interval`` replaces the runner's `MIN_CHECKPOINT_INTERVAL` (0: a checkpoint at every 7th step at which the
previous write has finished). The figures are medians over alternating runs; on a machine shared with other
work they move by a few percent from one call to the next.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from phi_hig.training import checkpoint, runner  # noqa: E402
from phi_hig.training.spec import run_spec  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--steps', type=int, default=700)
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--methods', default='adam,hig')
    p.add_argument('--every', type=int, default=7)
    p.add_argument('--interval', type=float, help='seconds at least between two checkpoints of a method')
    args = p.parse_args(argv)
    if args.interval is not None:
        runner.MIN_CHECKPOINT_INTERVAL = args.interval
    blocked, final, submits = [0.0], [0.0], [0]
    for name, total in (('submit', blocked), ('close', final)):
        original = getattr(checkpoint.CheckpointWriter, name)

        def timed(self, *a, _original=original, _total=total, **k):
            t0 = time.perf_counter()
            try:
                return _original(self, *a, **k)
            finally:
                _total[0] += time.perf_counter() - t0
                submits[0] += _total is blocked
        setattr(checkpoint.CheckpointWriter, name, timed)
    original_snapshot = runner._snapshot

    def timed_snapshot(*a, **k):
        t0 = time.perf_counter()
        try:
            return original_snapshot(*a, **k)
        finally:
            blocked[0] += time.perf_counter() - t0
    runner._snapshot = timed_snapshot

    plain, saving, fractions, finals, train_times, plain_train, counts = [], [], [], [], [], [], []
    for i in range(args.repeats + 1):  # the first pair warms up
        for with_checkpoints in (False, True):
            with tempfile.TemporaryDirectory() as out:
                spec = run_spec('toy', args.methods, preset='test', steps=args.steps, seed=0, threads=1,
                                eval_every=100, out=out, checkpoint_every=args.every if with_checkpoints else None)
                blocked[0] = final[0] = 0.0
                submits[0] = 0
                t0 = time.perf_counter()
                result = runner.run(spec, progress=False)
                wall = time.perf_counter() - t0
                n_files = len(os.listdir(out))
            train = sum(f['train_seconds'] for f in result.summary['final'].values())
            if i == 0:
                continue
            (saving if with_checkpoints else plain).append(wall)
            if not with_checkpoints:
                plain_train.append(train)
            else:
                counts.append(submits[0])
                fractions.append(blocked[0] / train)
                finals.append(final[0] / train)
                train_times.append(train)
                assert n_files >= 3 * len(spec.methods), os.listdir(out)
    checkpoints = statistics.median(counts)
    extra = statistics.median(saving) - statistics.median(plain)
    print(f"toy --preset test, methods {args.methods}, {args.steps} steps each, --checkpoint-every {args.every}, "
          f"at most every {runner.MIN_CHECKPOINT_INTERVAL:g} s: {checkpoints:g} checkpoints a run (median); "
          f"{args.repeats} repeats, 1 thread")
    print(f"training time per run (median): {statistics.median(train_times):.3f} s with checkpoints, "
          f"{statistics.median(plain_train):.3f} s without: "
          f"{100 * (statistics.median(train_times) / statistics.median(plain_train) - 1):+.2f} %")
    print(f"blocking checkpoint cost: {100 * statistics.median(fractions):.2f} % of training time "
          f"({1e3 * statistics.median(fractions) * statistics.median(train_times) / checkpoints:.3f} ms a checkpoint)")
    print(f"waiting for the last write at the end of the run: {100 * statistics.median(finals):.2f} % of training time "
          f"({1e3 * statistics.median(finals) * statistics.median(train_times):.1f} ms, once a run)")
    print(f"end-to-end extra wall time: {100 * extra / statistics.median(train_times):.2f} % of training time "
          f"(median run {statistics.median(saving):.3f} s with, {statistics.median(plain):.3f} s without)")


if __name__ == '__main__':
    main()
