"""One rule for every experiment's preset and settings (phi_hig.experiments.settings), read from the factory's
signature: unknown presets, experiments and settings and values of the wrong type or range are refused."""
import inspect

import numpy as np
import pytest

from phi_hig import experiments
from phi_hig.errors import InvalidInputError
from phi_hig.experiments import NAMES, PRESETS, get, validate_settings


def test_presets_are_paper_and_test():
    assert PRESETS == ('paper', 'test')


@pytest.mark.parametrize('name', NAMES)
def test_an_unknown_preset_is_refused_by_every_experiment(name):
    for build in (lambda: get(name, preset='tset'), lambda: experiments.factory(name)(preset='tset'),
                  lambda: validate_settings(name, 'tset', {})):
        with pytest.raises(InvalidInputError, match=r"preset of experiment .* must be one of 'paper', 'test'; got 'tset'"):
            build()


@pytest.mark.parametrize('name', NAMES)
def test_an_unknown_setting_is_refused_listing_the_factorys_parameters(name):
    known = [p for p in inspect.signature(experiments.factory(name)).parameters if p != 'preset']
    with pytest.raises(InvalidInputError, match='has no setting') as error:
        get(name, preset='test', no_such_setting=1)
    assert str(error.value).endswith(', '.join(known))


def test_unknown_experiment_is_refused():
    with pytest.raises(InvalidInputError, match='unknown experiment'):
        validate_settings('toys', 'test', {})


@pytest.mark.parametrize('name, key, value, allowed', [
    ('toy', 'batch_size', True, 'an integer >= 1'),                  # a bool is not a number
    ('toy', 'gamma', True, 'a finite number'),
    ('toy', 'gamma', '0.01', 'a finite number'),
    ('toy', 'gamma', float('nan'), 'a finite number'),
    ('toy', 'n_points', 2.5, 'an integer >= 1'),
    ('toy', 'n_points', 0, 'an integer >= 1'),
    ('poisson', 'n_test', 0, 'an integer >= 1'),
    ('poisson', 'solver', 'gmres', "None or one of 'cg', 'dst'"),
    ('poisson', 'resolution', 32, 'a list or tuple of 2 integers >= 1'),
    ('poisson', 'resolution', (32, 32, 32), 'a list or tuple of 2 integers >= 1'),
    ('poisson', 'resolution', (60, 80), 'each a multiple of 8'),
    ('heat', 'resolution', (20, 16), 'each a multiple of 8'),
    ('fluid', 'resolution', (24, 16), 'each a multiple of 16'),
    ('fluid', 'cache_dir', 3, 'None or a string'),
    ('oscillators', 'hidden', (20, 0), 'a list or tuple of integers >= 1'),
    ('oscillators', 'batch_size', {'hig': 0}, 'a dict of strings to integers >= 1'),
    ('quantum_dipole', 'phases', 1, 'True or False'),
    ('quantum_dipole', 'network', 'rnn', "one of 'mlp', 'cnn'"),
    ('sine', 'lr', 0., 'a finite number > 0'),
    ('exp', 'x_range', (0., 'a'), 'a list or tuple of 2 finite numbers'),
    ('synthetic2d', 'variant', 'paper2', "one of 'paper', 'code'"),
    ('linear_chain', 'data_seed', -1, 'an integer >= 0'),
])
def test_values_of_the_wrong_type_or_range_are_refused_naming_the_setting(name, key, value, allowed):
    with pytest.raises(InvalidInputError) as error:
        validate_settings(name, 'test', {key: value})
    message = str(error.value)
    assert f"setting {key!r} of experiment {name!r} must be" in message and allowed in message, message
    with pytest.raises(InvalidInputError):
        get(name, preset='test', **{key: value})


def test_values_are_parsed_into_their_canonical_types():
    parsed = validate_settings('poisson', 'paper', dict(resolution=[32, np.int64(16)], batch_size=np.int32(8),
                                                        noise_scale=5, cg_tolerance=np.float32(1e-4)))
    assert parsed == dict(resolution=(32, 16), batch_size=8, noise_scale=5.0, cg_tolerance=float(np.float32(1e-4)))
    assert type(parsed['resolution'][1]) is int and type(parsed['batch_size']) is int
    assert type(parsed['noise_scale']) is float
    assert validate_settings('toy', 'test', {'gamma': 1}) == {'gamma': 1.0}
    assert validate_settings('poisson', 'test', {'solver': None}) == {'solver': None}
    assert validate_settings('oscillators', 'test', {'batch_size': {'hig': np.int64(16)}}) == {'batch_size': {'hig': 16}}
    assert get('toy', preset='test', gamma=1).settings['gamma'] == 1.0


@pytest.mark.parametrize('name, settings, match', [
    ('exp', dict(x_range=(0., -1.)), 'low < high'),
    ('oscillators', dict(cubic=1., alpha=1.), "'cubic' or 'alpha', not both"),
    ('oscillators', dict(batch_size={'hgi': 16}), "names unknown methods \\['hgi'\\]"),
    ('linear_chain', dict(control=(0., 1., 2.)), "'control' .* must have 2 entries"),
    ('quantum_dipole', dict(network='cnn', points=10), "'points' .* must be an integer >= 13"),
])
def test_factories_refuse_bad_combinations_with_invalid_input_error(name, settings, match):
    with pytest.raises(InvalidInputError, match=match):
        get(name, preset='test', **settings)


def test_settings_that_belong_to_an_inverse_are_no_experiment_settings():
    """They moved into the options of the experiment's `Inverse` (method hyperparameter `inverse_options`)."""
    for name, key in (('heat', 'noise'), ('heat', 'lbfgs_iterations'), ('linear_chain', 'sip_truncation'),
                      ('exp', 'max_step'), ('synthetic2d', 'max_step')):
        with pytest.raises(InvalidInputError, match=f"has no setting {key!r}"):
            validate_settings(name, 'test', {key: 1})


def test_every_factory_declares_every_setting_with_an_annotation():
    import typing
    for name in NAMES:
        fn = inspect.unwrap(experiments.factory(name))
        hints = typing.get_type_hints(fn, include_extras=True)
        assert set(inspect.signature(fn).parameters) - {'preset'} <= set(hints), name
        assert inspect.signature(experiments.factory(name)).parameters['preset'].default == 'paper'


def _doubled(value):
    return tuple(2 * v for v in value) if isinstance(value, tuple) else 2 * value


@pytest.mark.parametrize('name', NAMES)
def test_an_explicit_setting_wins_over_the_test_preset(name):
    """Preset 'test' fills only the settings not given: an explicit one (here twice the preset's value) is the one
    the experiment uses and records (before, e.g. `toy --preset test --set batch_size=8` trained at 16 and
    summary.json claimed 8)."""
    preset_values = experiments.factory(name).test_settings
    assert preset_values, f"{name} has a 'test' preset that changes nothing"
    default = get(name, preset='test')
    for key, value in preset_values.items():
        if value is None:  # fluid's cache_dir: where data is cached, not what is run (not recorded)
            continue
        assert np.all(np.asarray(default.settings[key]) == np.asarray(value)), (key, default.settings)
        given = _doubled(value)
        exp = get(name, preset='test', **{key: given})
        assert np.all(np.asarray(exp.settings[key]) == np.asarray(given)), (key, exp.settings[key], given)


def test_explicit_settings_reach_what_the_test_preset_builds():
    """Beyond the recorded settings: the explicit batch size is the methods' and the resolution the data's."""
    toy = get('toy', preset='test', batch_size=8)
    assert {m['batch_size'] for m in toy.methods.values()} == {8}
    heat = get('heat', preset='test', resolution=(32, 32))
    assert tuple(heat.test_set[0].shape[-2:]) == (32, 32)
    assert len(get('sine', preset='test', n_test=64).test_set[0]) == 64
