"""What an experiment is (phi_hig.experiments.base): the `Inverse` format of SIP inverses and its options, the
read-only default inverse, and the SIP methods reading that format."""
import dataclasses

import numpy as np
import pytest
import torch

from phi_hig import experiments
from phi_hig.errors import InvalidInputError
from phi_hig.experiments import Inverse
from phi_hig.training.methods import make_method


def _solve(z, targets, *, y=None, scale, name='x', flag=False):
    return scale * (targets - z)


def _positive_scale(options):
    if not options['scale'] > 0:
        raise InvalidInputError(f"scale must be > 0, got {options['scale']}")


def test_inverse_merges_validates_and_passes_its_options():
    inverse = Inverse(_solve, {'scale': 0.5, 'name': 'x', 'flag': False}, _positive_scale)
    z, t = torch.zeros(2, 3), torch.ones(2, 3)
    assert torch.equal(inverse(z, t), torch.full((2, 3), 0.5))
    assert torch.equal(inverse(z, t, scale=2), torch.full((2, 3), 2.))  # an int for a float default
    assert inverse.resolve({'scale': np.float32(0.25)}) == {'scale': 0.25, 'name': 'x', 'flag': False}
    with pytest.raises(InvalidInputError, match="unknown inverse option 'scal'; this inverse has 'scale', 'name', 'flag'"):
        inverse.resolve({'scal': 1.})
    with pytest.raises(InvalidInputError, match='scale must be a finite number, got True'):
        inverse.resolve({'scale': True})
    with pytest.raises(InvalidInputError, match='flag must be True or False'):
        inverse.resolve({'flag': 1})
    with pytest.raises(InvalidInputError, match='name must be a string'):
        inverse.resolve({'name': 1})
    with pytest.raises(InvalidInputError, match='scale must be > 0'):
        inverse(z, t, scale=-1.)


def test_inverse_is_frozen_and_checks_its_defaults():
    inverse = Inverse(_solve, {'scale': 1.})
    with pytest.raises(dataclasses.FrozenInstanceError):
        inverse.options = {}
    with pytest.raises(TypeError):
        inverse.options['scale'] = 2.
    with pytest.raises(InvalidInputError, match='scale must be > 0'):
        Inverse(_solve, {'scale': 0.}, _positive_scale)
    with pytest.raises(InvalidInputError, match='must have a default of type int, float, bool or str'):
        Inverse(_solve, {'scale': None})
    with pytest.raises(InvalidInputError, match='Inverse.solve must be callable'):
        Inverse('solve')


def test_experiment_inverse_is_the_read_only_default():
    ex = experiments.get('heat', preset='test')
    assert ex.inverse is ex.inverses['default']
    with pytest.raises(AttributeError):
        ex.inverse = ex.inverses['lbfgs']
    assert experiments.get('toy', preset='test').inverse is None
    with pytest.raises(InvalidInputError, match=r"inverses\['default'\] must be an Inverse"):
        dataclasses.replace(ex, inverses={'default': lambda z, t, *, y=None: t - z})


@pytest.mark.parametrize('name, key, option, value', [
    ('heat', 'default', 'noise', -1e-6), ('heat', 'default', 'noise', float('inf')),
    ('heat', 'lbfgs', 'iterations', 0), ('heat', 'lbfgs', 'iterations', 2.),
    ('linear_chain', 'default', 'truncation', 1.), ('exp', 'default', 'max_step', 0.),
    ('synthetic2d', 'default', 'max_step', -1.), ('sine', 'newton', 'clip', 0.),
    ('sine', 'inverse_gradient', 'clip', float('nan')), ('fluid', 'default', 'radius', 0.),
    ('fluid', 'default', 'search_below', -1.),
])
def test_experiments_refuse_bad_inverse_options_naming_the_option(name, key, option, value):
    inverse = experiments.get(name, preset='test').inverses[key]
    with pytest.raises(InvalidInputError, match=f"^{option} must be"):
        inverse.resolve({option: value})


def test_heat_inverse_options_reach_the_physics():
    """The option `noise` of heat's default inverse is the `noise` of `phi_hig.physics.heat.inverse`."""
    from phi_hig.physics import heat
    from phi_hig.physics.grids import to_grid, from_grid
    from phiml.math import extrapolation
    ex = experiments.get('heat', preset='test')
    _, targets = ex.test_set
    z = targets[:, :1].clone()
    periodic = extrapolation.PERIODIC
    y = to_grid(ex.simulate(z)[:, 0], periodic)
    results = []
    for noise in (1e-6, 1e-2):
        expected = heat.inverse(to_grid(z[:, 0], periodic), to_grid(targets[:, 0], periodic), 8., 1., y=y, noise=noise)
        results.append(ex.inverse(z, targets, noise=noise))
        torch.testing.assert_close(results[-1], from_grid(expected)[:, None])
    assert not torch.allclose(results[0], results[1])


def test_sip_methods_merge_and_pass_inverse_options():
    ex = experiments.get('heat', preset='test')
    method = make_method('sip', ex.make_net(), ex, overrides={'inverse_options': {'noise': 0}})
    assert method.inverse is ex.inverses['default'] and method.hyper['inverse_options'] == {'noise': 0.0}
    lbfgs = make_method('sip_lbfgs', ex.make_net(), ex)
    assert lbfgs.inverse is ex.inverses['lbfgs'] and lbfgs.hyper['inverse_options'] == {'iterations': 2}
    seen = []
    spy = Inverse(lambda z, t, *, y=None, noise: seen.append(noise) or torch.zeros_like(z), {'noise': 1e-6})
    spied = dataclasses.replace(ex, inverses={'default': spy})
    inputs, targets = ex.test_set
    make_method('sip', spied.make_net(), spied, overrides={'inverse_options': {'noise': 0.5}}).step(inputs, targets)
    assert seen == [0.5]


def test_make_method_refuses_bad_inverse_options_before_building():
    ex = experiments.get('heat', preset='test')
    with pytest.raises(InvalidInputError, match="sip: unknown hyperparameter 'inverse_options.nosie'"):
        make_method('sip', ex.make_net(), ex, overrides={'inverse_options': {'nosie': 0.}})
    with pytest.raises(InvalidInputError, match='noise must be a finite number >= 0'):
        make_method('sip', ex.make_net(), ex, overrides={'inverse_options': {'noise': -1.}})
    with pytest.raises(InvalidInputError, match="adam: unknown hyperparameter 'inverse_options.noise'"):
        make_method('adam', ex.make_net(), ex, overrides={'inverse_options': {'noise': 0.}})
