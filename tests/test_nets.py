"""The papers' U-net: parameter counts equal PhiFlow's u_net, and periodicity (shift equivariance)."""
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
