"""The one rule of which hyperparameters each method accepts, and the learning-rate checks of `Method.step`."""
import inspect

import pytest
import torch
from torch import nn

import phi_hig
from phi_hig.errors import InvalidInputError
from phi_hig.experiments import NAMES, get, toy
from phi_hig.experiments.base import Experiment
from phi_hig.training.methods import (FIRST_ORDER, hyperparameter_spec, make_method, validate_hyperparameters)


@pytest.fixture(scope='module')
def experiments():
    return {name: get(name, preset='test') for name in NAMES}


def _torch_keys(cls):
    return {k for k in inspect.signature(cls.__init__).parameters if k not in ('self', 'params')}


def test_first_order_methods_accept_exactly_their_torch_optimizer_keys():
    ex = toy(preset='test')
    for name, expected in (('adam', torch.optim.Adam), ('sgd', torch.optim.SGD)):
        assert set(hyperparameter_spec(ex, name)) == _torch_keys(expected) | {'batch_size', 'clip'}
    spec = hyperparameter_spec(ex, 'adam')
    assert spec['betas'].kind == 'tuple' and spec['amsgrad'].kind == 'bool' and spec['foreach'].nullable


def test_hig_and_gn_accept_the_hig_constructor_keys():
    ex = toy(preset='test')
    keys = {'lr', 'truncation', 'kappa', 'beta', 'relative', 'path', 'max_bytes', 'chunk_rows', 'structured',
            'batch_size'}
    assert set(hyperparameter_spec(ex, 'hig')) == keys == set(hyperparameter_spec(ex, 'gn'))
    assert validate_hyperparameters(ex, 'gn', {'kappa': -1})['kappa'] == -1.0
    assert validate_hyperparameters(ex, 'hig', {})['kappa'] == -0.5
    assert hyperparameter_spec(ex, 'gn')['kappa'].default == -1.0 and hyperparameter_spec(ex, 'hig')['path'].default \
        == 'auto'


def test_the_old_name_method_of_hig_path_warns_and_means_path():
    """HIG's linear-algebra choice is ``path``; ``method`` is accepted for one release with a DeprecationWarning."""
    ex = toy(preset='test')
    with pytest.warns(DeprecationWarning, match="'method' is now called 'path'"):
        hyper = validate_hyperparameters(ex, 'gn', {'method': 'svd'})
    assert hyper['path'] == 'svd' and 'method' not in hyper
    with pytest.warns(DeprecationWarning):
        spec = phi_hig.run_spec(ex, ['hig', 'adam'], steps=1, common={'method': 'gram'})  # only HIG takes it
    assert spec.hyperparameters['hig']['path'] == 'gram' and 'path' not in spec.hyperparameters['adam']
    with pytest.raises(InvalidInputError, match="hig: give 'path' only"):
        validate_hyperparameters(ex, 'hig', {'method': 'svd', 'path': 'gram'})
    with pytest.raises(InvalidInputError, match="path must be one of 'auto', 'gram', 'dual', 'svd'; got 'fast'"), \
            pytest.warns(DeprecationWarning):
        validate_hyperparameters(ex, 'hig', {'method': 'fast'})


def test_every_method_of_every_experiment_refuses_unknown_keys_and_wrong_types(experiments):
    for ex in experiments.values():
        for m in ex.methods:
            validate_hyperparameters(ex, m)  # the experiment's own defaults pass
            with pytest.raises(InvalidInputError, match=f"{m}: unknown hyperparameter 'optimizer'"):
                validate_hyperparameters(ex, m, {'optimizer': 'sgd'})
            with pytest.raises(InvalidInputError, match=f'{m}: lr must be a finite number'):
                validate_hyperparameters(ex, m, {'lr': True})  # a bool is not a number
            with pytest.raises(InvalidInputError, match=f'{m}: batch_size must be an integer'):
                validate_hyperparameters(ex, m, {'batch_size': 8.0})
            assert validate_hyperparameters(ex, m, {'lr': 1})['lr'] == 1.0  # an int is a float


@pytest.mark.parametrize('method, overrides, message', [
    ('sip', {'optimizer': 'sgd'}, "unknown hyperparameter 'optimizer'"),  # was dropped silently
    ('adam', {'kappa': -1}, "unknown hyperparameter 'kappa'"),
    ('hig', {'clip': 1.0}, "unknown hyperparameter 'clip'"),
    ('hig', {'eps': 1e-7}, "unknown hyperparameter 'eps'"),
    ('adam', {'base': 'sgd'}, "'base' cannot be overridden"),
    ('adam', {'inverse': 'default'}, "unknown hyperparameter 'inverse'"),
    ('adam', {'lr': float('nan')}, 'lr must be a finite number, got nan'),
    ('adam', {'lr': -1}, 'the learning rate lr must be >= 0'),
    ('adam', {'betas': (0.9,)}, 'betas must be 2 finite numbers'),
    ('adam', {'betas': (0.9, 1.5)}, 'from the optimizer'),
    ('adam', {'amsgrad': 1}, 'amsgrad must be True or False'),
    ('sip', {'clip': 0}, 'clip .* must be > 0'),
    ('sip', {'inverse': 'nope'}, "inverse must be one of 'default'"),
    ('hig', {'kappa': 2}, 'kappa'),
    ('hig', {'path': 'fast'}, 'path'),
    ('hig', {'truncation': 'small'}, 'truncation must be a finite number'),
    ('hig', {'chunk_rows': 1.5}, 'chunk_rows must be an integer'),
])
def test_refusals_name_method_and_key(method, overrides, message):
    ex = get('linear_chain', preset='test')  # adam, sip and hig
    with pytest.raises(InvalidInputError, match=message):
        validate_hyperparameters(ex, method, overrides)


def _options_experiment(calls):
    """A 1-D SIP problem whose inverse has options (an `Inverse` with options and a check)."""
    def solve(z, targets, *, y=None, damping=1.0, steps=1, exact=False):
        calls.append(dict(damping=damping, steps=steps, exact=exact))
        return damping * (targets - z)

    def check(options):
        if options['damping'] <= 0:
            raise InvalidInputError(f"damping must be > 0, got {options['damping']}")
    from phi_hig.experiments.base import Inverse
    inverse = Inverse(solve=solve, options=dict(damping=1.0, steps=1, exact=False), check=check)
    x = torch.linspace(-1, 1, 32).reshape(-1, 1)
    return Experiment(name='options', make_net=lambda: nn.Linear(1, 1), simulate=lambda z: z,
                      loss=lambda y, t: 0.5 * ((y - t) ** 2).sum(-1),
                      methods={'sip': dict(lr=1e-2, batch_size=8), 'adam': dict(lr=1e-2, batch_size=8)},
                      train_set=(x, 2 * x), test_set=(x, 2 * x), inverses={'default': inverse}, eval_every=5)


def test_sip_inverse_options_are_hyperparameters_passed_to_the_inverse():
    calls = []
    ex = _options_experiment(calls)
    spec = hyperparameter_spec(ex, 'sip')
    assert {'inverse', 'inverse_options.damping', 'inverse_options.steps', 'inverse_options.exact'} <= set(spec)
    assert set(spec) - {'inverse', 'inverse_options.damping', 'inverse_options.steps', 'inverse_options.exact'} \
        == _torch_keys(torch.optim.Adam) | {'batch_size', 'clip'}
    hyper = validate_hyperparameters(ex, 'sip', {'inverse_options.damping': 0.5})
    assert hyper['inverse_options'] == dict(damping=0.5, steps=1, exact=False) and hyper['inverse'] == 'default'
    assert validate_hyperparameters(ex, 'sip', {'inverse_options': {'steps': 3}})['inverse_options']['steps'] == 3
    for overrides, message in [({'inverse_options.noise': 1.0}, "unknown hyperparameter 'inverse_options.noise'"),
                               ({'inverse_options.steps': 1.5}, 'inverse_options.steps must be an integer'),
                               ({'inverse_options.exact': 'yes'}, 'inverse_options.exact must be True or False'),
                               ({'inverse_options.damping': -1.0}, 'inverse_options: damping must be > 0')]:
        with pytest.raises(InvalidInputError, match=message):
            validate_hyperparameters(ex, 'sip', overrides)
    result = phi_hig.train(ex, ['sip'], steps=2, progress=False,
                           overrides={'sip': {'inverse_options': {'damping': 0.25, 'exact': True}}})
    assert calls and all(c == dict(damping=0.25, steps=1, exact=True) for c in calls)
    assert result.summary['hyperparameters']['sip']['inverse_options'] == dict(damping=0.25, steps=1, exact=True)


def test_sweep_accepts_inverse_options(tmp_path):
    """Sweepable like any hyperparameter: through the same rule (here via `train_variants`)."""
    from phi_hig.training.runner import train_variants
    calls = []
    ex = _options_experiment(calls)
    results = train_variants(ex, [(f'damping={d}', 'sip', {'inverse_options.damping': d}) for d in (0.5, 1.0)],
                             steps=1, progress=False)
    assert {c['damping'] for c in calls} == {0.5, 1.0} and len(results) == 2


# --- learning rates that reach the optimizer after construction ---------------------------------------------
def _method(name='adam'):
    ex = toy(preset='test')
    torch.manual_seed(0)
    net = ex.make_net()
    return make_method(name, net, ex), ex.train_set[0][:16], ex.train_set[1][:16]


def _weights(net):
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize('how', ['direct', 'load_state_dict', 'scheduler'])
@pytest.mark.parametrize('lr, error', [(float('nan'), InvalidInputError), (float('inf'), InvalidInputError),
                                       (-0.1, InvalidInputError)])
def test_a_bad_learning_rate_set_after_construction_refuses_the_step(how, lr, error):
    method, x, t = _method()
    method.step(x, t)
    if how == 'direct':
        method.optimizer.param_groups[0]['lr'] = lr
    elif how == 'load_state_dict':
        state = method.optimizer.state_dict()
        state['param_groups'][0]['lr'] = lr
        method.optimizer.load_state_dict(state)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(method.optimizer, lambda epoch: lr / 0.3)
        scheduler.step()
    before = _weights(method.net)
    state = {k: v.clone() for k, v in method.optimizer.state[next(iter(method.net.parameters()))].items()}
    with pytest.raises(error, match='learning rate'):
        method.step(x, t)
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(method.net)))
    after = method.optimizer.state[next(iter(method.net.parameters()))]
    assert all(torch.equal(state[k], after[k]) for k in state)  # no moment updated either


def test_sip_checks_its_learning_rate_too():
    calls = []
    ex = _options_experiment(calls)
    net = ex.make_net()
    method = make_method('sip', net, ex)
    method.optimizer.param_groups[0]['lr'] = float('nan')
    before = _weights(net)
    with pytest.raises(InvalidInputError, match='learning rate'):
        method.step(ex.train_set[0][:8], ex.train_set[1][:8])
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(net))) and not calls


def test_runner_records_a_bad_learning_rate_as_the_methods_status():
    ex = toy(preset='test')

    def poison(record, method):
        if record['step'] == 2 and method.name == 'sgd':
            method.optimizer.param_groups[0]['lr'] = float('nan')
    result = phi_hig.train(ex, ['sgd', 'adam'], steps=5, progress=False, on_record=poison)
    final = result.summary['final']
    assert final['sgd']['status'].startswith('failed at step 3') and 'learning rate' in final['sgd']['status']
    assert final['sgd']['steps'] == 2 and final['sgd']['flags'] == ['failed'] and final['adam']['status'] == 'ok'


def test_first_order_keys_come_from_torch():
    """The rule reads torch's own signatures: nothing to keep in sync by hand."""
    ex = toy(preset='test')
    for name, cls in FIRST_ORDER.items():
        if name in ex.methods:
            spec = hyperparameter_spec(ex, name)
            for key, p in inspect.signature(cls.__init__).parameters.items():
                if key not in ('self', 'params'):
                    assert spec[key].default == p.default


@pytest.mark.parametrize('method, overrides, words', [
    ('adam', {'capturable': True}, ['adam: capturable=True cannot step on cpu', 'AssertionError']),
    ('adam', {'differentiable': True}, ['adam: differentiable=True cannot step on cpu', 'RuntimeError']),
    ('sgd', {'differentiable': True}, ['sgd: differentiable=True cannot step on cpu']),
    ('sip', {'capturable': True}, ['sip: capturable=True cannot step on cpu']),  # SIP's Adam
])
def test_options_the_optimizer_cannot_step_with_are_refused_before_training(method, overrides, words):
    """Adam's ``capturable`` (an accelerator's option) and ``differentiable`` (needs non-leaf parameters) pass the
    constructor and fail at the first step: one zero-gradient step on a throw-away parameter refuses them."""
    ex = get('linear_chain', preset='test') if method == 'sip' else toy(preset='test')
    for call in (lambda: validate_hyperparameters(ex, method, overrides),
                 lambda: phi_hig.train(ex, [method], steps=1, overrides={method: overrides}, progress=False),
                 lambda: make_method(method, ex.make_net(), ex, overrides)):
        with pytest.raises(InvalidInputError) as err:
            call()
        for w in words:
            assert w in str(err.value), (w, str(err.value))


def test_the_check_step_names_the_device_and_leaves_hig_and_good_options_alone():
    ex = toy(preset='test')
    assert validate_hyperparameters(ex, 'adam', {'foreach': True, 'fused': None})['foreach'] is True
    assert validate_hyperparameters(ex, 'hig', {'lr': 0.5}, device='cpu')['lr'] == 0.5  # HIG.step is never called
    state = torch.get_rng_state()
    with pytest.raises(InvalidInputError, match="adam: capturable=True cannot step on meta"):
        validate_hyperparameters(ex, 'adam', {'capturable': True}, device='meta')
    assert torch.equal(state, torch.get_rng_state())  # the check draws no random numbers
