"""Typed errors raised by phi_hig. All derive from the built-in type a user would catch anyway.

Every message names the argument (the Python name, e.g. ``steps``), what is allowed and what was given; a step
that raises one of them has left the weights untouched (all-or-nothing).
"""


class PhiHigError(Exception):
    """Base class of all phi_hig errors: ``except PhiHigError`` catches every refusal of the library.

    >>> import numpy as np, phi_hig
    >>> try:
    ...     phi_hig.half_inverse(np.eye(2), np.ones(3))
    ... except PhiHigError as err:
    ...     print(type(err).__name__)
    InvalidInputError
    """


class InvalidInputError(PhiHigError, ValueError):
    """An argument has the wrong shape, a non-finite value or an invalid hyperparameter (also a `ValueError`).

    >>> import numpy as np, phi_hig
    >>> try:
    ...     phi_hig.half_inverse(np.eye(2), np.ones(2), kappa=2)
    ... except ValueError as err:
    ...     print(err)
    kappa must be a finite number >= -1 and <= 1 (-0.5 HIG, -1 Gauss-Newton, 1 gradient descent), got 2
    """


class JacobianTooLargeError(PhiHigError, MemoryError):
    """The Jacobian or Gram matrix that a step would allocate exceeds the configured memory limit (also a
    `MemoryError`); raised before anything of that size is allocated.

    >>> import numpy as np, phi_hig
    >>> try:
    ...     phi_hig.half_inverse(np.eye(4), np.ones(4), path='gram', max_bytes=64)
    ... except MemoryError as err:
    ...     print(type(err).__name__, 'names the limit:', 'max_bytes' in str(err))
    JacobianTooLargeError names the limit: True
    """


class NonFiniteStepError(PhiHigError, FloatingPointError):
    """A training step produced a non-finite loss, Jacobian or update; the weights were left untouched (also a
    `FloatingPointError`).

    >>> import torch, phi_hig
    >>> net = torch.nn.Linear(1, 1)
    >>> before = net.weight.detach().clone()
    >>> x = torch.ones(2, 1)
    >>> try:
    ...     phi_hig.hig_step(net, phi_hig.HIG(net), x, None, None, lambda y, _: (y * float('nan')).sum(-1))
    ... except NonFiniteStepError as err:
    ...     print(type(err).__name__, bool(torch.equal(net.weight, before)))
    NonFiniteStepError True
    """


class HIGUsageError(PhiHigError, RuntimeError):
    """The HIG optimizer was used like a first-order optimizer (``loss.backward(); opt.step()``); also a
    `RuntimeError`. A HIG update needs per-sample Jacobians: make it with `phi_hig.hig_step`.

    >>> import torch, phi_hig
    >>> optimizer = phi_hig.HIG(torch.nn.Linear(1, 1))
    >>> try:
    ...     optimizer.step()
    ... except HIGUsageError:
    ...     print('use phi_hig.hig_step')
    use phi_hig.hig_step
    """


class RunFileError(PhiHigError, OSError):
    """A file of a run could not be written (a full disk, no permission): the run stopped at once, and what it wrote
    before is kept (also an `OSError`). The message names the file, the step the run stopped at and the last
    checkpoint written.

    >>> try:
    ...     raise RunFileError("could not write runs/x/checkpoint_adam.pt: No space left on device")
    ... except OSError as err:
    ...     print(type(err).__name__, 'checkpoint_adam.pt' in str(err))
    RunFileError True
    """
