"""The table of method kinds (phi_hig.training.kinds): adding a kind is one entry, and every caller asks the table.

A kind that is not a torch first-order optimizer (sign descent with its own step, hyperparameters, memory estimate
and DDP flag) is registered through the public API only; the runner trains it, `run_spec` refuses its batch when its
memory estimate exceeds its limit, and the command line (`list`, `run`) and the dashboard offer it.
"""
import csv
import os

import pytest
import torch

import phi_hig
from phi_hig import processes
from phi_hig.__main__ import main as cli
from phi_hig.errors import InvalidInputError
from phi_hig.experiments import NAMES, DataStream, get, toy
from phi_hig.training import kinds
from phi_hig.training.checkpoint import CheckpointWriter, checkpoint_path, read_checkpoint
from phi_hig.training.hyperparameters import Hyperparameter
from phi_hig.training.kinds import Builder, MemoryNeed, MethodKind
from phi_hig.training.methods import Method
from helpers import one_error_line


class SignDescent(MethodKind):
    """Sign descent, θ ← θ − lr·sign(∇θ L) (Bernstein et al. 2018, eq. 1), with a made-up memory need of
    ``4·b·|θ|`` bytes ("per-example gradients") limited by its own hyperparameter ``scratch_bytes``."""

    def __init__(self):
        super().__init__('signsgd', {'torch': Builder(self.build_torch, self.step_torch)}, needs_ddp=True,
                         defaults=dict(lr=1e-3, batch_size=16), description='sign descent')

    def hyperparameters(self, experiment, chosen):
        return {'lr': Hyperparameter('lr', 1e-3, 'float'),
                'scratch_bytes': Hyperparameter('scratch_bytes', 1e9, 'float', nullable=True)}

    @staticmethod
    def build_torch(params, hyper):
        return torch.optim.SGD(params, lr=hyper['lr'])  # holds the parameters and lr (and their state_dict)

    @staticmethod
    def step_torch(method, inputs, targets):
        method.optimizer.zero_grad()
        loss = method.loss(method.simulate(method.net(inputs)), targets).mean()
        loss.backward()
        with torch.no_grad():
            for p in method.net.parameters():
                p -= method.optimizer.param_groups[0]['lr'] * torch.sign(p.grad)
        return float(loss)

    def memory(self, hyper, sizes):
        return [MemoryNeed('per-example gradients', 4 * hyper['batch_size'] * sizes.params, 'scratch_bytes',
                           hyper.get('scratch_bytes', 1e9))]


@pytest.fixture
def sign_kind():
    kind = kinds.register(SignDescent())
    try:
        yield kind
    finally:
        kinds.unregister('signsgd')
    assert 'signsgd' not in kinds.names()


def test_a_registered_kind_is_trained_by_the_runner(sign_kind, monkeypatch):
    """The runner steps it through its own step and wraps the network for DDP because the kind says so."""
    wrapped = []
    monkeypatch.setattr(processes, 'data_parallel', lambda net, device: wrapped.append(net) or net)
    ex = toy(preset='test')
    result = phi_hig.train(ex, ['signsgd', 'hig'], steps=4, seed=3, progress=False, overrides={'signsgd': {'lr': 0.01}})
    assert result.summary['final']['signsgd']['steps'] == 4 and result.summary['final']['signsgd']['status'] == 'ok'
    assert len(wrapped) == 1 and wrapped[0] is result.nets['signsgd']  # needs_ddp: signsgd yes, hig no
    torch.manual_seed(3)  # the reference, by hand: the runner's initial weights and data stream, sign steps
    net, stream = ex.make_net(), DataStream(ex, 3)
    for _ in range(4):
        x, t = stream.next(16)
        net.zero_grad()
        ex.loss(ex.simulate(net(x)), t).mean().backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= 0.01 * torch.sign(p.grad)
    for p, q in zip(net.parameters(), result.nets['signsgd'].parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-6)


def test_a_registered_kind_is_offered_validated_and_refused_like_the_built_in_ones(sign_kind):
    ex = toy(preset='test')
    assert list(kinds.offered(ex))[-1] == 'signsgd' and 'signsgd' not in ex.methods  # the experiment is unchanged
    spec = phi_hig.run_spec(ex, None, steps=1)  # default: every method the experiment offers
    assert spec.methods[-1] == 'signsgd' and dict(spec.hyperparameters['signsgd']) == dict(lr=1e-3, batch_size=16)
    with pytest.raises(InvalidInputError, match="signsgd: unknown hyperparameter 'momentum'; signsgd .* accepts "
                                                "batch_size, lr, scratch_bytes"):
        phi_hig.run_spec(ex, 'signsgd', steps=1, overrides={'signsgd': {'momentum': 0.9}})
    with pytest.raises(InvalidInputError, match=r"signsgd: batch_size 16 needs per-example gradients of about "
                                                r".* over scratch_bytes = 100 bytes; .* raise signsgd.scratch_bytes"):
        phi_hig.run_spec(ex, 'signsgd', steps=1, overrides={'signsgd': {'scratch_bytes': 100}})
    n_params = sum(p.numel() for p in ex.make_net().parameters())  # the estimate is 4·b·|θ|: just above / below it
    phi_hig.run_spec(ex, 'signsgd', steps=1, overrides={'signsgd': {'scratch_bytes': 4 * 16 * n_params}})
    with pytest.raises(InvalidInputError, match='scratch_bytes'):
        phi_hig.run_spec(ex, 'signsgd', steps=1, overrides={'signsgd': {'scratch_bytes': 4 * 16 * n_params - 1}})
    with pytest.raises(InvalidInputError, match="method kind 'signsgd' has no 'jax' backend; it supports torch"):
        Method('signsgd', ex.make_net(), ex.simulate, ex.loss, dict(lr=0.1, batch_size=4), backend='jax')


def test_the_command_line_and_the_dashboard_offer_a_registered_kind(sign_kind, tmp_path, capsys):
    assert cli(['list']) == 0
    blocks = [b for b in capsys.readouterr().out.split('\n\n') if b.strip() and not b.startswith('s/step')]
    listed = {b.split(':')[0]: b.strip().splitlines()[-1].split()[0] for b in blocks}  # its last method row
    assert listed == {name: 'signsgd' for name in NAMES}
    out = str(tmp_path / 'run')
    assert cli(['run', 'toy', '--preset', 'test', '--methods', 'adam,signsgd', '--steps', '3', '--quiet',
                '--hp', 'signsgd.lr=0.01', '--out', out]) == 0
    assert 'signsgd' in capsys.readouterr().out and os.path.exists(os.path.join(out, 'summary.json'))
    assert cli(['run', 'toy', '--preset', 'test', '--methods', 'signsgd', '--steps', '3', '--quiet',
                '--hp', 'signsgd.scratch_bytes=100', '--out', str(tmp_path / 'refused')]) == 2
    one_error_line(capsys.readouterr().err, 'signsgd: batch_size 16 needs per-example gradients', 'scratch_bytes')
    assert not os.path.exists(tmp_path / 'refused')
    from phi_hig.gui.state import Dashboard
    d = Dashboard()
    assert d.methods('toy', 'test')[-1] == 'signsgd'
    assert d.method_defaults('toy', 'test')['signsgd'] == dict(lr=1e-3, batch_size=16, more='')


def test_the_table_refuses_what_it_cannot_hold(sign_kind):
    with pytest.raises(InvalidInputError, match="'signsgd' is registered already"):
        kinds.register(SignDescent())
    with pytest.raises(InvalidInputError, match="'hig' is a built-in method kind"):
        kinds.unregister('hig')
    with pytest.raises(InvalidInputError, match="name must be letters"):
        MethodKind('sign,sgd', {'torch': Builder(SignDescent.build_torch, SignDescent.step_torch)})
    kinds.add_builder('signsgd', 'jax', Builder(SignDescent.build_torch, SignDescent.step_torch))
    assert sign_kind.backends == ('torch', 'jax')
    on_jax = ('adam', 'sgd', 'hig', 'gn')  # the JAX builders of phi_hig.training.jax_steps
    assert all(kinds.get_kind(name).backends == (('torch', 'jax') if name in on_jax else ('torch',))
               for name in kinds.METHODS)
    assert [kinds.get_kind(name).needs_ddp for name in ('adam', 'sgd', 'hig', 'gn', 'sip')] == \
        [True, True, False, False, True]


def test_the_hig_memory_estimate_is_the_gram_matrix_of_its_path():
    """8·(b·|y|)² for J Jᵀ, 8·|θ|² for the dual JᵀJ (|θ| < b·|y|), |y| counted as the target values per example."""
    ex = get('poisson8', preset='test')
    n_params = sum(p.numel() for p in ex.make_net().parameters())
    ny = ex.test_set[1][0].numel()
    sizes = kinds.ProblemSizes(ex)
    hig = kinds.get_kind('hig')
    assert 4 * ny < n_params < 1000 * ny
    for b, path, side in [(4, 'auto', 4 * ny), (1000, 'auto', n_params), (1000, 'dual', n_params),
                          (4, 'dual', n_params)]:
        need, = hig.memory(dict(batch_size=b, path=path), sizes)
        assert need.nbytes == 8 * side ** 2 and need.key == 'max_bytes', (b, path)
    need, = hig.memory(dict(batch_size=4, path='svd'), sizes)
    assert need.nbytes == 8 * 4 * ny * n_params  # no Gram matrix: the float64 J the SVD decomposes


def test_the_old_name_warns_once_on_the_command_line_and_the_sweep_sweeps_path(tmp_path, capsys):
    assert cli(['run', 'toy', '--preset', 'test', '--methods', 'gn', '--steps', '1', '--quiet',
                '--hp', 'gn.method=svd']) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert warned == ["phi_hig: warning: gn: the hyperparameter 'method' is now called 'path'; 'method' is "
                      "deprecated and will be removed in the next release"]
    out = str(tmp_path / 'sweep')
    assert cli(['sweep', 'toy', '--preset', 'test', '--method', 'gn', '--hp', 'method=svd,gram', '--steps', '1',
                '--out', out, '--quiet']) == 0
    assert sum('phi_hig: warning:' in line for line in capsys.readouterr().err.splitlines()) == 1
    with open(os.path.join(out, 'sweep.csv')) as f:
        rows = list(csv.DictReader(f))
    assert [r['path'] for r in rows] == ['svd', 'gram'] and 'hp_method' not in rows[0] and 'method' in rows[0]


def _as_before_the_rename(out: str) -> None:
    """Rewrite the latest hig checkpoint in ``out`` as a release before the rename wrote it: ``method`` instead of
    ``path`` in its identity and in the optimizer's parameter groups."""
    ck = read_checkpoint(checkpoint_path(out, 'hig'))
    hyper = ck.identity['hyperparameters']['hig']
    hyper['method'] = hyper.pop('path')
    for group in ck.optimizer['param_groups']:
        if 'path' in group:
            group['method'] = group.pop('path')
    writer = CheckpointWriter(out, 'hig', fresh=False)
    writer.submit(ck, [])
    writer.close()


def test_a_checkpoint_written_before_the_rename_still_resumes(tmp_path):
    ex = toy(preset='test')
    args = dict(seed=2, progress=False, eval_every=3)
    full = phi_hig.train(ex, ['hig'], steps=6, overrides={'hig': {'path': 'gram'}}, **args)
    out = str(tmp_path)
    phi_hig.train(ex, ['hig'], steps=3, out=out, checkpoint_every=3, overrides={'hig': {'path': 'gram'}}, **args)
    _as_before_the_rename(out)
    assert 'method' in read_checkpoint(checkpoint_path(out, 'hig')).identity['hyperparameters']['hig']
    with pytest.raises(InvalidInputError, match='was made with hig.path=gram, this run has hig.path=svd'):
        phi_hig.train(ex, ['hig'], steps=6, out=out, resume=True, overrides={'hig': {'path': 'svd'}}, **args)
    with pytest.warns(DeprecationWarning, match="'method' is now called 'path'"):  # the old name, too
        resumed = phi_hig.train(ex, ['hig'], steps=6, out=out, resume=True, overrides={'hig': {'method': 'gram'}},
                                **args)
    assert resumed.records[0]['step'] == 0 and resumed.summary['final']['hig']['steps'] == 6
    for p, q in zip(full.nets['hig'].parameters(), resumed.nets['hig'].parameters()):
        assert torch.equal(p, q)


def test_an_experiment_without_physics_holds_the_identity():
    from phi_hig.experiments.base import Experiment, identity
    x = torch.linspace(-1, 1, 8).reshape(-1, 1)
    ex = Experiment(name='plain', make_net=lambda: torch.nn.Linear(1, 1), simulate=None,
                    loss=lambda y, t: ((y - t) ** 2).sum(-1), methods={'adam': dict(lr=0.1, batch_size=4)},
                    train_set=(x, 2 * x), test_set=(x, 2 * x))
    assert ex.simulate is identity and identity(x) is x
    assert phi_hig.train(ex, ['adam'], steps=2, progress=False).summary['final']['adam']['steps'] == 2
