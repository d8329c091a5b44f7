"""Training methods × experiments: the table of method kinds, the run specification, the runner and its checkpoints.

* `kinds`: the table of method kinds (first-order torch optimizers, HIG / Gauss–Newton, SIP, and any kind added with
  `kinds.register`): each kind's hyperparameters, optimizer builder and step per backend, DDP need and memory
  estimate;
* `hyperparameters`: one hyperparameter and the rule that parses its values;
* `methods`: a method as an experiment defines it (`MethodDefinition`: the one validation of its hyperparameters)
  and the stepper it trains with (`Method`);
* `steps`: the torch steps of the built-in kinds;
* `spec`: `run_spec`, the one validation of what a user asked for, returning a frozen `RunSpec`;
* `runner`: `train` / `run`, every method from the same initial weights on the same data stream;
* `checkpoint`: crash-safe checkpoints that carry a run's identity.
"""
from .spec import RunSpec, run_spec, build_experiment, check_device
from .runner import train, run, train_variants, evaluate, RunResult, RunControl, RunWarning
from .checkpoint import CheckpointWarning
from .kinds import RenamedHyperparameterWarning

__all__ = ['train', 'run', 'train_variants', 'evaluate', 'RunResult', 'RunControl', 'RunWarning', 'RunSpec',
           'run_spec', 'build_experiment', 'check_device', 'WARNINGS']

WARNINGS = (RunWarning, CheckpointWarning, RenamedHyperparameterWarning)
"""The warnings a run may give (a result not comparable as it stands, a checkpoint not used, an old hyperparameter
name): what the command line and the demos print as one line ``phi_hig: warning: …`` each
(`phi_hig.cli.plain_warnings`)."""
