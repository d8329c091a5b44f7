"""The papers' measurement tables (phi_hig.report.tables), replayed by independent computations."""
import numpy as np
import pytest
import torch

from phi_hig import experiments
from phi_hig.errors import InvalidInputError
from phi_hig.report.tables import timing_table


@pytest.fixture(scope='module')
def fluid():
    return experiments.get('fluid', preset='test')


def test_fluid_timing_table_stops_the_solver_at_the_network_mae_of_v0(fluid):
    ex = fluid
    inputs, targets = ex.test_set
    net = ex.make_net()
    table = timing_table(ex, net, n_examples=2, max_iterations=3, repeats=2)
    assert net.training  # the table times the network in eval mode and restores its mode
    with torch.no_grad():
        net.eval()
        net_mae = (net(inputs) - targets[:, 2:4]).abs().mean((1, 2, 3))
    for i, row in enumerate(table['examples']):
        assert row['network_v_error'] == pytest.approx(float(net_mae[i]), rel=1e-5)
        # replay the solver independently: v = 0, then inverse updates, MAE against the ground truth
        v, m0 = torch.zeros_like(inputs[i:i + 1]), inputs[i:i + 1, 0]  # the marker m0 is the condition
        for _ in range(row['iterations']):
            v = v + ex.inverse(v, targets[i:i + 1], m0)
        mae = float((v[0] - targets[i, 2:4]).abs().mean())
        assert row['v_error'] == pytest.approx(mae, rel=1e-5)
        assert row['reached'] == (mae <= row['network_v_error'])
        assert row['reached'] or row['iterations'] == 3
    assert table['ratio'] == pytest.approx(table['solver_seconds_per_example'] / table['network_seconds_per_example'])
    assert table['solver_seconds_median'] == pytest.approx(float(np.median([r['seconds'] for r in table['examples']])))


@pytest.mark.parametrize('kwargs', [dict(n_examples=0), dict(max_iterations=True), dict(repeats=1.5)])
def test_timing_table_refuses_counts_that_are_not_positive_integers(fluid, kwargs):
    with pytest.raises(InvalidInputError, match=f"{next(iter(kwargs))} must be an integer >= 1"):
        timing_table(fluid, fluid.make_net(), **kwargs)


def test_timing_table_needs_the_fluid_experiment():
    ex = experiments.get('heat', preset='test')
    with pytest.raises(InvalidInputError, match='needs the fluid experiment'):
        timing_table(ex, ex.make_net())
