"""Experiments whose physics takes per-example conditions (`Experiment.conditions`): the linear chain (x₀ the
condition of every example) trains as its formulation with a network that carries x₀ to the physics
(`phi_hig.nets.Conditioned`, how the experiment was written before), for first-order, HIG, GN and SIP; checkpoints and
initial states of the wrapped network load into the plain one (`phi_hig.nets.accept_conditioned_keys`)."""
import dataclasses

import pytest
import torch

import phi_hig
from phi_hig import experiments
from phi_hig.experiments import Inverse
from phi_hig.nets import Conditioned, accept_conditioned_keys

pytestmark = pytest.mark.usefixtures('one_thread')

METHODS = ['adam', 'sip', 'hig', 'gn']


def _float64(ex):
    """The test preset of the linear chain in float64 (network and data), with a GN method besides HIG."""
    double = tuple(t.double() for t in ex.train_set), tuple(t.double() for t in ex.test_set)
    methods = dict(ex.methods, gn=dict(lr=0.5, batch_size=8, truncation=1e-3, kappa=-1.0))
    return dataclasses.replace(ex, make_net=lambda: ex.make_net().double(), train_set=double[0], test_set=double[1],
                               methods=methods)


def _wrapped(ex):
    """The same problem without conditions: the network's output carries x₀, ``z = (u, x₀)``; the physics and the
    inverse take z apart, and the inverse leaves x₀ unchanged."""
    steps = ex.settings['steps']
    solve = ex.inverses['default'].solve

    def simulate(z):
        return ex.simulate(z[:, :steps], z[:, steps:])

    def inverse(z, targets, *, y=None, truncation):
        du = solve(z[:, :steps], targets, z[:, steps:], y=y, truncation=truncation)
        return torch.cat([du, torch.zeros_like(z[:, steps:])], 1)
    default = ex.inverses['default']
    return dataclasses.replace(ex, make_net=lambda: Conditioned(ex.make_net()), simulate=simulate, conditions=None,
                               inverses={'default': Inverse(inverse, default.options, default.check)})


def _parameters(net):
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def _assert_same_training(a, b):
    for m in METHODS:
        pa, pb = _parameters(a.nets[m]), _parameters(b.nets[m])
        assert (pa - pb).norm() <= 1e-12 * pa.norm(), m
        la = [r['train_loss'] for r in a.records if r['method'] == m and r['step'] > 0]
        lb = [r['train_loss'] for r in b.records if r['method'] == m and r['step'] > 0]
        assert len(la) == len(lb) > 0 and la == pytest.approx(lb, rel=1e-12, abs=0), m
        assert a.final(m) == pytest.approx(b.final(m), rel=1e-12), m


@pytest.fixture(scope='module')
def chain():
    return _float64(experiments.get('linear_chain', preset='test'))


def test_an_experiment_with_conditions_trains_as_the_network_that_carries_them(chain):
    """8 steps of each method from the same seed: weights, training losses and the held-out loss equal to float64
    round-off (rel ≤ 1e-12), and the steps moved the weights (GN and HIG by the Gram path with conditions)."""
    with_conditions = phi_hig.train(chain, METHODS, steps=8, seed=3, progress=False)
    wrapped = phi_hig.train(_wrapped(chain), METHODS, steps=8, seed=3, progress=False)
    _assert_same_training(with_conditions, wrapped)
    torch.manual_seed(3)
    start = _parameters(chain.make_net())
    for m in METHODS:
        assert (_parameters(with_conditions.nets[m]) - start).norm() > 1e-3 * start.norm(), m


def test_a_run_of_the_wrapped_network_resumes_with_conditions(chain, tmp_path):
    """Checkpoints written by the wrapper formulation (keys ``net.…``) resume into the plain network: 3 steps
    wrapped, then 3 more with conditions, equal an uninterrupted run of 6 with conditions; an initial state of the
    wrapper (and of the older ``ControlNet``, keys ``body.…``) loads strictly."""
    out = str(tmp_path / 'run')
    phi_hig.train(_wrapped(chain), METHODS, steps=3, seed=1, out=out, checkpoint_every=1, progress=False)
    resumed = phi_hig.train(chain, METHODS, steps=6, seed=1, out=out, checkpoint_every=1, resume=True, progress=False)
    assert all(resumed.summary['final'][m]['steps'] == 6 for m in METHODS)
    _assert_same_training(resumed, phi_hig.train(chain, METHODS, steps=6, seed=1, progress=False))

    wrapper_state = {k: torch.full_like(v, 0.25) for k, v in Conditioned(chain.make_net()).state_dict().items()}
    assert all(k.startswith('net.') for k in wrapper_state)
    result = phi_hig.train(chain, ['adam'], steps=0, initial_state=wrapper_state, progress=False)
    assert torch.all(_parameters(result.nets['adam']) == 0.25)
    net = chain.make_net()
    net.load_state_dict({'body.' + k[4:]: v for k, v in wrapper_state.items()})
    assert torch.all(_parameters(net) == 0.25)
    with pytest.raises(RuntimeError, match='Unexpected'):  # strict loading still refuses a key that is not the net's
        net.load_state_dict(dict(wrapper_state, **{'net.extra': torch.zeros(1)}))


def test_accept_conditioned_keys_keeps_a_network_whose_own_attribute_is_named_net():
    """A module with its own child ``net`` keeps its keys (nothing is renamed)."""
    outer = accept_conditioned_keys(torch.nn.Module())
    outer.net = torch.nn.Linear(2, 2)
    state = {k: torch.zeros_like(v) for k, v in outer.state_dict().items()}
    outer.load_state_dict(state)
    assert torch.count_nonzero(outer.net.weight.detach()) == 0
