"""The papers' networks (phi_hig.nets): U-net parameter counts equal PhiFlow's u_net, periodicity (shift
equivariance), Keras-style dense nets, the conditioned wrapper and the parameter count."""
import pytest
import torch
from phi.torch.nets import u_net

from phi_hig.nets import unet, dense, parameter_count


@pytest.mark.parametrize('args, kwargs, count', [((1, 1), {}, 37_697), ((2, 2), dict(levels=5), 49_570)])
def test_parameter_counts_match_phiflow(args, kwargs, count):
    assert parameter_count(unet(*args, **kwargs)) == count
    assert parameter_count(u_net(*args, **kwargs)) == count


def test_sine_network_has_461_parameters():
    assert parameter_count(dense([1, 10, 20, 10, 1])) == 461


def _shift_error(net, shape, shift):
    torch.manual_seed(0)
    net.eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        # randomize batch-norm statistics so that they are not the identity
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-.5, .5)
                m.running_var.uniform_(.5, 2)
        y = net(x)
        y_shifted = net(torch.roll(x, (shift, shift), (2, 3)))
    return float((torch.roll(y, (shift, shift), (2, 3)) - y_shifted).abs().max() / y.abs().max())


def test_periodic_unet_is_shift_equivariant():
    assert _shift_error(unet(1, 1), (2, 1, 32, 32), 8) < 1e-6
    assert _shift_error(unet(1, 1), (1, 1, 64, 48), 8) < 1e-6
    assert _shift_error(unet(2, 2, levels=5), (1, 2, 32, 32), 16) < 1e-6


def test_phiflow_periodic_unet_is_not_shift_equivariant():
    """Documents the PhiFlow 3.4 padding bug that `phi_hig.nets.unet` avoids (zero-padded down blocks)."""
    torch.manual_seed(0)
    assert _shift_error(u_net(1, 1, periodic=True), (2, 1, 32, 32), 8) > 1e-4


def test_zero_padded_variant_is_not_equivariant_and_sizes_checked():
    torch.manual_seed(0)
    assert _shift_error(unet(1, 1, periodic=False), (2, 1, 32, 32), 8) > 1e-4
    with pytest.raises(ValueError):
        unet(1, 1)(torch.zeros(1, 1, 60, 80))  # 60 is not divisible by 8


# ------------------------------------------------------------------------- Keras-style dense nets, Conditioned

def test_keras_dense_initializes_like_keras_and_has_the_papers_sizes():
    from phi_hig.nets import keras_dense
    torch.manual_seed(0)
    net = keras_dense([4, 20, 20, 20, 96], 'relu')
    assert parameter_count(net) == 2956  # oscillators (Schnell, Holl & Thuerey 2022, §3.1)
    assert parameter_count(keras_dense([64, 64, 256, 64, 64], 'tanh')) == 41_408  # Poisson 8×8 (paper text)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [type(m).__name__ for m in net].count('ReLU') == 3 and isinstance(net[-1], torch.nn.Linear)
    for lin in linears:
        fan_out, fan_in = lin.weight.shape
        bound = (6 / (fan_in + fan_out)) ** 0.5  # Glorot uniform
        assert float(lin.weight.abs().max()) <= bound and float(lin.weight.abs().max()) > 0.9 * bound
        assert torch.equal(lin.bias, torch.zeros_like(lin.bias))


def test_keras_dense_refuses_an_unknown_activation():
    from phi_hig.errors import InvalidInputError
    from phi_hig.nets import keras_dense
    with pytest.raises(InvalidInputError, match="activation must be one of 'relu', 'tanh'"):
        keras_dense([1, 2], 'sigmoid')


def test_conditioned_appends_the_chosen_input_columns_without_parameters():
    from phi_hig.nets import Conditioned
    torch.manual_seed(0)
    inner = torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)
    everything, some = Conditioned(inner), Conditioned(inner, columns=(2, 0))
    assert torch.equal(everything(x), torch.cat([inner(x), x], 1))
    assert torch.equal(some(x), torch.cat([inner(x), x[:, 2:3], x[:, 0:1]], 1))
    assert torch.equal(some.output(x), inner(x))
    assert parameter_count(some) == parameter_count(inner) == 8
    images = torch.randn(2, 2, 8, 8)  # channels: (m0, m_t) as in the fluid experiment
    conv = Conditioned(torch.nn.Conv2d(2, 2, 3, padding=1), columns=(0,))
    assert torch.equal(conv(images)[:, 2], images[:, 0])


def test_conditioned_loads_state_dicts_of_the_former_control_net():
    """Checkpoints written before `Conditioned` replaced `ControlNet` name the inner network `body`."""
    from phi_hig.nets import Conditioned
    torch.manual_seed(0)
    old = {f'body.{k}': v for k, v in torch.nn.Linear(3, 2).state_dict().items()}
    net = Conditioned(torch.nn.Linear(3, 2))
    net.load_state_dict(old)
    assert torch.equal(net.net.weight, old['body.weight'])


def test_parameter_count_counts_trainable_parameters_only():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    assert parameter_count(net) == 3 * 4 + 4 + 4 + 4 + 4 * 1 + 1  # batch-norm buffers are not parameters
    net[0].requires_grad_(False)
    assert parameter_count(net) == 4 + 4 + 5
