"""Physics for training through simulations: one module per system, loaded on first use.

* `poisson`: `∇²y = x` with an exact Laplacian inverse, the exact zero-Dirichlet solve by sine transform and the
  PhiFlow-style noise sources of the Poisson experiment.
* `heat`: periodic diffusion with a Bayesian-damped inverse, plus the hot-rectangles data generator.
* `fluid`: incompressible Navier–Stokes marker transport with a reverse-simulation inverse, plus its data generator.
* `oscillators`: chains of coupled (nonlinear) oscillators integrated with RK4 (torch, batched).
* `grids`: the adapters between batched torch tensors and PhiFlow grids.

For the PDE modules, `forward(x, ...)` and `inverse(x, y_target, ...)` act on PhiFlow fields and `inverse` returns
the update `Δx` of one inverse-solver step (η = 1), so `x + Δx` is the corrected estimate. Importing these modules
does not change PhiML's default backend.
"""
import importlib

MODULES = ('poisson', 'heat', 'fluid', 'oscillators', 'grids')


def __getattr__(name):
    if name in MODULES:
        module = importlib.import_module(f'.{name}', __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(MODULES)
