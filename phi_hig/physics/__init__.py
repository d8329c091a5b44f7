"""PDE physics for SIP training: each module offers `forward(x, ...)` and `inverse(x, y_target, ...)` on PhiFlow fields.

* `poisson`: `∇²y = x` with an exact Laplacian inverse.
* `heat`: periodic diffusion with a Bayesian-damped inverse, plus the hot-rectangles data generator.
* `fluid`: incompressible Navier–Stokes marker transport with a reverse-simulation inverse, plus its data generator.

`inverse` returns the update `Δx` of one inverse-solver step (η = 1), so `x + Δx` is the corrected estimate.
Importing these modules does not change PhiML's default backend.
"""
from . import poisson, heat, fluid

__all__ = ['poisson', 'heat', 'fluid']
