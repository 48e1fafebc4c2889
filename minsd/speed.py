"""Optional speed-ups of sampling: compiling the UNet, and choosing a CPU thread count.

Neither changes what is computed. `StableDiffusion.compile` and
`StableDiffusion.recommended_num_threads` call these; the command line applies the
thread count (the library sets no process-wide option).
"""

import copy

import torch
from torch import nn


def compile_unet(
    unet: nn.Module, device: torch.device, mode: str | None = None
) -> nn.Module:
    """torch.compile a UNet for `device`. Optional: compiling takes minutes.

    CUDA: channels_last and mode "reduce-overhead" (CUDA graphs: the whole UNet
    replays as one launch, with its buffers allocated once). CPU: inductor with
    weight freezing, which folds the weights into the compiled graph (see
    `FrozenCompiledUNet`). Each new latent size (or batch size) compiles its own
    graph: static shapes give the fastest kernels. `unet` itself is left as it was.
    """
    if device.type == "cuda":
        # channels_last rewrites every convolution's weights in place, so it is done
        # to a copy: the caller's module keeps its layout. The copy holds the UNet's
        # weights a second time until the caller drops the original
        # (StableDiffusion.compile replaces its UNet with the compiled copy).
        unet = copy.deepcopy(unet).to(memory_format=torch.channels_last)
        return torch.compile(
            unet, mode=mode or "reduce-overhead", fullgraph=True, dynamic=False
        )
    return FrozenCompiledUNet(unet, mode or "default")


class FrozenCompiledUNet(nn.Module):
    """A UNet compiled by inductor with its weights frozen into the graph, for CPUs.

    Freezing is an inductor setting, read whenever a new input shape is traced and
    compiled, so it is switched on around this module's own calls and nowhere else
    in the process. (Passing it as torch.compile(options={"freezing": True}) does
    not freeze: dynamo reads it before the options apply.) The weights are constants
    of the compiled graph: changing them afterwards changes nothing.
    """

    def __init__(self, unet: nn.Module, mode: str = "default") -> None:
        super().__init__()
        self.config = unet.config
        self.compiled = torch.compile(unet, mode=mode, fullgraph=True, dynamic=False)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        from torch._inductor import config as inductor_config

        with inductor_config.patch(freezing=True):
            return self.compiled(x, t, context)


# Below this many UNet parameters, sampling on a CPU is bound by per-operator
# overhead, not arithmetic.
SMALL_UNET_PARAMETERS = 50_000_000


def recommended_num_threads(unet: nn.Module) -> int:
    """CPU threads (torch.set_num_threads) that sample fastest with `unet`.

    A choice for the caller to apply. A small UNet (the default model: 3.2 M
    parameters, 40-80 us per operator) gains nothing from a second thread, and on a
    busy machine every operator waits for the slowest thread: on 2-core machines, 20
    steps of the default model took 0.33 s on one thread and 0.38 s on two when
    quiet, 0.53 s and 0.88 s beside two busy processes, and up to 40x longer on AMD
    EPYC. A large UNet (SD 1.5: 860 M parameters) keeps every core busy in each
    operator: keep torch's default.
    """
    n_parameters = sum(p.numel() for p in unet.parameters())
    return 1 if n_parameters < SMALL_UNET_PARAMETERS else torch.get_num_threads()
