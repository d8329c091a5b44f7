"""Typed errors raised by phi_hig. All derive from the built-in type a user would catch anyway."""


class PhiHigError(Exception):
    """Base class of all phi_hig errors."""


class InvalidInputError(PhiHigError, ValueError):
    """An argument has the wrong shape, a non-finite value or an invalid hyperparameter."""


class JacobianTooLargeError(PhiHigError, MemoryError):
    """The Jacobian or Gram matrix that a step would allocate exceeds the configured memory limit."""


class NonFiniteStepError(PhiHigError, FloatingPointError):
    """A training step produced a non-finite loss, Jacobian or update; the weights were left untouched."""


class HIGUsageError(PhiHigError, RuntimeError):
    """The HIG optimizer was used like a first-order optimizer (``loss.backward(); opt.step()``)."""
