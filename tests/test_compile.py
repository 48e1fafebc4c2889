"""`compile_unet` on the CPU: inductor with weight freezing, scoped to the compiled
module's own calls."""

import torch
from torch import nn
from torch._inductor import config as inductor_config

from minsd.pipeline import compile_unet


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


def test_cpu_compile_freezes_weights_without_changing_inductors_global_setting():
    """The compiled module computes what the eager one does, with its weights frozen
    into the graph (changing a weight afterwards changes nothing), and inductor's
    process-wide `freezing` flag is
    the same after compiling and calling as before."""
    torch.manual_seed(0)
    net = ConvNet().eval()
    x, t, context = torch.randn(1, 4, 8, 8), torch.tensor([2.0]), torch.randn(1, 3, 5)
    before = inductor_config.freezing
    compiled = compile_unet(net, torch.device("cpu"))
    with torch.no_grad():
        out = compiled(x, t, context)
        torch.testing.assert_close(out, net(x, t, context))
        net.conv.bias.add_(1.0)  # eager now differs; a frozen graph does not see it
        assert not torch.allclose(net(x, t, context), out)
        assert torch.equal(compiled(x, t, context), out)
    assert inductor_config.freezing == before
