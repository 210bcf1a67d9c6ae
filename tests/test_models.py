"""clipbench.models: ResNet-18's convolutions of 1 x 1 maps as the linear maps they are."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from clipbench.models import Conv2d, build_model, linear_on_1x1_maps


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    return bool((a - b).abs().max() <= rel * b.abs().max().clamp(min=1e-30))


@pytest.mark.parametrize("cin, cout, k, stride, bias", [(8, 6, 3, 1, False), (8, 6, 3, 2, True), (5, 7, 5, 1, True),
                                                         (4, 4, 1, 1, False)])
def test_conv_of_a_1x1_map_is_the_linear_map_of_its_centre_tap(cin, cout, k, stride, bias):
    torch.manual_seed(0)
    ref = nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=bias)
    fast = linear_on_1x1_maps(nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=bias)))[0]
    fast.load_state_dict(ref.state_dict())
    assert type(fast) is Conv2d
    x = torch.randn(3, cin, 1, 1, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    out, expected = fast(x), ref(x2)
    c = k // 2
    # The product itself, not a convolution: the path is the one taken.
    assert torch.equal(out, F.linear(x.detach().flatten(1), ref.weight[:, :, c, c], ref.bias)[:, :, None, None])
    assert out.shape == expected.shape == (3, cout, 1, 1)
    assert _close(out, expected)
    g = torch.randn_like(out)
    out.backward(g)
    expected.backward(g)
    assert _close(x.grad, x2.grad)
    assert _close(fast.weight.grad, ref.weight.grad)
    off_centre = torch.ones(k, k, dtype=torch.bool)
    off_centre[c, c] = False
    assert torch.count_nonzero(fast.weight.grad[:, :, off_centre]) == 0  # those taps only see the padding
    if bias:
        assert _close(fast.bias.grad, ref.bias.grad)


@pytest.mark.parametrize("size, padding", [((2, 2), 1), ((1, 3), 1), ((1, 1), 0)])
def test_other_inputs_are_an_ordinary_convolution(size, padding):
    torch.manual_seed(0)
    ref = nn.Conv2d(4, 5, 3, padding=padding)
    fast = linear_on_1x1_maps(nn.Sequential(nn.Conv2d(4, 5, 3, padding=padding)))[0]
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, *size)
    if padding == 0:  # a 3x3 kernel without padding does not fit a 1 x 1 map: the same error
        with pytest.raises(RuntimeError):
            fast(x)
        return
    assert torch.equal(fast(x), ref(x))


def test_resnet18_keeps_torchvisions_parameters_and_computes_the_same_step():
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None, num_classes=10)
    model = build_model("resnet18", num_classes=10)
    assert not any(type(m) is nn.Conv2d for m in model.modules())
    assert list(model.state_dict()) == list(ref.state_dict())
    model.load_state_dict(ref.state_dict())
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))  # layer4 sees 1 x 1 maps at 32 px
    for m in (ref, model):
        F.cross_entropy(m(x), y).backward()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert _close(p.grad, q.grad, rel=1e-4), name
