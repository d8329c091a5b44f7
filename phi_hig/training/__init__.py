"""Training methods × experiments: the method table, the run specification, the runner and its checkpoints.

* `methods`: the training methods (first-order torch optimizers, HIG / Gauss–Newton, SIP) and the one rule of
  which hyperparameters each accepts;
* `spec`: `run_spec`, the one validation of what a user asked for, returning a frozen `RunSpec`;
* `runner`: `train` / `run`, every method from the same initial weights on the same data stream;
* `checkpoint`: crash-safe checkpoints that carry a run's identity.
"""
from .spec import RunSpec, run_spec, build_experiment, check_device
from .runner import train, run, train_variants, evaluate, RunResult, RunControl, RunWarning

__all__ = ['train', 'run', 'train_variants', 'evaluate', 'RunResult', 'RunControl', 'RunWarning', 'RunSpec',
           'run_spec', 'build_experiment', 'check_device']
