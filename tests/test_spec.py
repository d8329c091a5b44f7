"""`phi_hig.training.spec.run_spec` refuses every argument of the wrong kind with one `InvalidInputError` naming it, before
anything is built or trained (the Python entry points `phi_hig.run_spec` and `phi_hig.train` alike)."""
import pytest

import phi_hig
from phi_hig.errors import InvalidInputError
from phi_hig.experiments import toy
from phi_hig.training.spec import check_device


@pytest.mark.parametrize('kwargs, words', [
    (dict(resume='yes'), ['resume must be True or False', "'yes'"]),
    (dict(resume=1), ['resume must be True or False']),
    (dict(memory_limit=-1), ['memory_limit must be a finite number > 0', '-1']),
    (dict(memory_limit=0), ['memory_limit must be a finite number > 0']),
    (dict(memory_limit='1GB'), ['memory_limit must be a finite number > 0', "'1GB'"]),
    (dict(memory_limit=True), ['memory_limit must be a finite number']),
    (dict(overrides=[('adam', {'lr': 0.1})]), ['overrides must be a dict of method name -> dict', 'list']),
    (dict(overrides={'adam': 0.1}), ["overrides['adam'] must be a dict of hyperparameters", '0.1']),
    (dict(overrides={3: {'lr': 0.1}}), ['overrides must be a dict', 'the key 3']),
    (dict(common=['lr', 0.1]), ['common must be a dict of hyperparameters', 'list']),
    (dict(common=0.1), ['common must be a dict']),
    (dict(common={3: 1}), ['none of the methods run', 'hyperparameter 3']),
    (dict(settings=[('gamma', 1)]), ['settings must be a dict of experiment settings']),
    (dict(experiment=3), ["experiment must be a registered experiment's name", 'toy', 'or an Experiment', 'int']),
    (dict(experiment=None), ["experiment must be a registered experiment's name", 'NoneType']),
    (dict(methods=3), ['methods must be method names', '3']),
    (dict(methods=['adam', 3]), ['methods must be method names']),
    (dict(seed=None), ['seed must be an integer >= 0, got None']),
    (dict(seed=True), ['seed must be an integer']),
    (dict(out=3), ['out must be a folder path']),
    (dict(device='bogus'), ["device 'bogus' is not a torch device"]),
])
def test_run_spec_refuses_arguments_of_the_wrong_kind(kwargs, words):
    kwargs = dict(dict(experiment='toy', methods=['adam'], preset='test', steps=1), **kwargs)
    if not isinstance(kwargs['experiment'], str):
        kwargs.pop('preset')
    with pytest.raises(InvalidInputError) as err:
        phi_hig.run_spec(kwargs.pop('experiment'), kwargs.pop('methods'), **kwargs)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_run_spec_accepts_the_allowed_kinds(tmp_path):
    ex = toy(preset='test')
    spec = phi_hig.run_spec(ex, ('adam',), steps=1, memory_limit=None, resume=False, overrides={'adam': {}},
                            common={}, out=tmp_path)
    assert spec.methods == ('adam',) and spec.out == str(tmp_path) and spec.resume is False
    import numpy as np
    assert phi_hig.run_spec('toy', 'adam,hig', preset='test', steps=1, seed=np.int64(2),
                            memory_limit=np.float32(1e9), resume=np.bool_(False)).seed == 2


def test_train_refuses_like_run_spec():
    ex = toy(preset='test')
    with pytest.raises(InvalidInputError, match="overrides\\['adam'\\] must be a dict"):
        phi_hig.train(ex, ['adam'], steps=1, overrides={'adam': 0.1}, progress=False)
    with pytest.raises(InvalidInputError, match='resume must be True or False'):
        phi_hig.train(ex, ['adam'], steps=1, resume='yes', progress=False)


def test_check_device_is_the_rule_of_run_and_bench():
    assert check_device('cpu') == 'cpu'
    with pytest.raises(InvalidInputError, match="^device 'bogus'"):
        check_device('bogus')
    with pytest.raises(InvalidInputError, match="^device 'tpu'"):
        check_device('tpu')


@pytest.mark.parametrize('kwargs, message', [
    (dict(steps=-1), 'steps must be an integer >= 0, got -1'),
    (dict(seconds=float('nan')), 'seconds must be a finite number >= 0'),
    (dict(threads=0), 'threads must be an integer >= 1'),
    (dict(eval_every=0), 'eval_every must be an integer >= 1'),
    (dict(checkpoint_every=3), 'checkpoint_every needs out'),
    (dict(resume=True), 'resume needs out'),
    (dict(steps=None), 'give a budget per method: steps, seconds or both'),
    (dict(methods='adam,adam'), 'methods names adam more than once'),
])
def test_library_errors_name_the_python_argument_and_the_command_line_its_flag(kwargs, message):
    """``phi_hig.train(steps=-1)`` says "steps must be …"; the command line says "--steps must be …" (`as_flags`)."""
    from phi_hig.cli import as_flags
    kwargs = dict(dict(experiment='toy', methods=['adam'], preset='test', steps=1, progress=False), **kwargs)
    with pytest.raises(InvalidInputError) as err:
        phi_hig.train(kwargs.pop('experiment'), kwargs.pop('methods'), **kwargs)
    assert str(err.value).startswith(message) and '--' not in str(err.value), str(err.value)
    flag = '--' + message.split()[0].replace('_', '-')
    assert as_flags(err.value).startswith(flag) or '--steps, --seconds' in as_flags(err.value), as_flags(err.value)


def test_run_spec_asks_each_methods_spec_once(monkeypatch):
    """One `MethodDefinition` per method: the common keys, the validation and the memory check share its spec."""
    from phi_hig.training import kinds
    calls = []
    for name in ('hig', 'adam'):
        kind = kinds.get_kind(name)
        original = kind.hyperparameters
        monkeypatch.setattr(kind, 'hyperparameters', lambda *a, _o=original, _n=name: calls.append(_n) or _o(*a))
    phi_hig.run_spec('toy', 'hig,adam', preset='test', steps=1, common={'lr': 0.1, 'truncation': 1e-4})
    assert sorted(calls) == ['adam', 'hig']
