"""`compile_unet` (minsd/speed.py): on the CPU, inductor with weight freezing, scoped to
the compiled module's own calls; on CUDA, channels_last weights in a copy, not in the
caller's UNet."""

import torch
from torch import nn
from torch._inductor import config as inductor_config

from minsd.speed import compile_unet


class ConvNet(nn.Module):
    """A stand-in with the UNet's call signature, small enough to compile in seconds."""

    config = None

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, kernel_size=3, padding=1)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        return self.conv(x) * t[:, None, None, None] + context.mean()


def layout(module: nn.Module) -> dict[str, tuple]:
    """Each parameter's storage address and strides: what an in-place change of memory
    format rewrites."""
    return {name: (p.data_ptr(), p.stride()) for name, p in module.named_parameters()}


def test_cpu_compile_freezes_weights_without_changing_inductors_global_setting():
    """The compiled module computes what the eager one does, with its weights frozen
    into the graph (changing a weight afterwards changes nothing); inductor's
    process-wide `freezing` flag and the caller's parameters are as they were."""
    torch.manual_seed(0)
    net = ConvNet().eval()
    x, t, context = torch.randn(1, 4, 8, 8), torch.tensor([2.0]), torch.randn(1, 3, 5)
    before = inductor_config.freezing
    parameters = layout(net)
    compiled = compile_unet(net, torch.device("cpu"))
    with torch.no_grad():
        out = compiled(x, t, context)
        torch.testing.assert_close(out, net(x, t, context))
        net.conv.bias.add_(1.0)  # eager now differs; a frozen graph does not see it
        assert not torch.allclose(net(x, t, context), out)
        assert torch.equal(compiled(x, t, context), out)
    assert inductor_config.freezing == before
    assert layout(net) == parameters


def test_cuda_compile_leaves_the_callers_unet_as_it_was():
    """On CUDA the compiled UNet's weights are channels_last, and the caller's module
    keeps its own: every parameter the same storage with the same strides.
    torch.compile is lazy, so the CUDA recipe can be built (not run) from CPU weights."""
    net = ConvNet()
    before = layout(net)
    compiled = compile_unet(net, torch.device("cuda"))
    assert layout(net) == before
    assert net.conv.weight.is_contiguous()
    # the module torch.compile wraps: the copy, converted
    weight = compiled._orig_mod.conv.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous() and torch.equal(weight, net.conv.weight)
