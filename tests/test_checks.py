"""The shared argument rules (phi_hig.checks): booleans are not numbers, integers are not floats, messages name
the argument and what is allowed."""
import numpy as np
import pytest

from phi_hig import checks
from phi_hig.errors import InvalidInputError


def test_numbers():
    assert checks.number('lr', 1) == 1.0 and type(checks.number('lr', np.float32(0.5))) is float
    for bad in (True, np.bool_(True), '1', None, float('nan'), float('inf'), 1j):
        with pytest.raises(InvalidInputError, match='lr must be a finite number, got'):
            checks.number('lr', bad)
    with pytest.raises(InvalidInputError, match='tau must be a finite number >= 0 and < 1, got 1$'):
        checks.number('tau', 1, low=0, high=1, high_open=True)
    with pytest.raises(InvalidInputError, match='step must be a finite number > 0, got 0$'):
        checks.number('step', 0, low=0, low_open=True)


def test_integers_flags_and_choices():
    assert checks.integer('n', np.int64(3), low=1) == 3
    for bad in (True, 2.0, '2', 0):
        with pytest.raises(InvalidInputError, match='n must be an integer >= 1'):
            checks.integer('n', bad, low=1)
    assert checks.flag('relative', np.bool_(False)) is False
    with pytest.raises(InvalidInputError, match='relative must be True or False, got 1'):
        checks.flag('relative', 1)
    assert checks.choice('method', 'CG', ('CG', 'GD')) == 'CG'
    with pytest.raises(InvalidInputError, match="method must be one of 'CG', 'GD'; got 'cg'"):
        checks.choice('method', 'cg', ('CG', 'GD'))


def test_one_size_format_in_binary_units():
    assert checks.human_bytes(4 * 1024 ** 3) == '4 GiB' and checks.human_bytes(1.5 * 1024 ** 2) == '1.5 MiB'
    assert checks.human_bytes(512) == '512 bytes' and checks.human_bytes(80 * 1024 ** 4) == '80 TiB'
    with pytest.raises(Exception, match=r'would need 8 GiB, above the limit of 4 GiB'):
        checks.check_size('The Gram matrix', (32768, 32768), 8, 4 * 1024 ** 3)


def test_is_finite_refuses_booleans_nan_and_inf():
    assert checks.is_finite(1) and checks.is_finite(np.float32(0.5))
    assert not any(checks.is_finite(v) for v in (True, np.bool_(False), float('nan'), float('inf'), '1', None))
