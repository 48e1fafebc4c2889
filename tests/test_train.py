"""The training command runs end to end (a few steps) and writes a folder minsd loads;
the shipped model's recorded command lines still parse to the settings it records."""

import gzip
import json
import shlex
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_MERGES

from minsd import load_pipeline
from minsd.book_training import train_briefly
from minsd.loading import DEFAULT_MODEL
from minsd.train import (
    EMA_DECAY,
    TrainConfig,
    clip_tokenizer,
    main,
    parse_args,
    train_unet,
)
from minsd.unet import UNet, UNetConfig


def test_training_smoke(tmp_path):
    """A two-step training run writes a folder minsd loads and samples from; --resume
    continues it."""
    # CLIP's file format: a version line, then one merge per line
    merges = tmp_path / "bpe.txt.gz"
    merges.write_bytes(
        gzip.compress(
            ("#version: 0.2\n" + "\n".join(" ".join(m) for m in TINY_MERGES)).encode()
        )
    )
    out = tmp_path / "model"
    common = ["--train-images", "64", "--unet-batch", "4", "--device", "cpu"]
    main(
        [
            "--out",
            str(out),
            "--merges",
            str(merges),
            "--vae-steps",
            "2",
            "--vae-batch",
            "4",
            "--unet-steps",
            "2",
            *common,
        ]
    )
    record = json.loads((out / "training.json").read_text())
    assert record["vae_steps"] == 2 and record["unet_steps"] == 2
    # every setting is recorded, as the command line gave it
    assert record["args"]["unet_batch"] == "4" and record["args"]["device"] == "cpu"
    # one window of the 2 steps, with its mean loss
    assert [step for step, _ in record["unet_loss_curve"]] == [2]
    # (4, 3) latent -> RGB
    assert len(json.loads((out / "vae" / "preview_factors.json").read_text())) == 4

    main(
        [
            "--out",
            str(tmp_path / "resumed"),
            "--resume",
            str(out),
            "--unet-steps",
            "3",
            "--unet-stop",
            "2",
            *common,
        ]
    )
    resumed = json.loads((tmp_path / "resumed" / "training.json").read_text())
    assert resumed["unet_steps"] == 2 and resumed["resumed_from"]["unet_steps"] == 2

    pipe = load_pipeline(tmp_path / "resumed", device="cpu")
    result = pipe("a red circle", steps=2, progress=False)
    assert result.pixels.shape == (1, 3, 32, 32) and torch.isfinite(result.pixels).all()


def test_recorded_commands_parse_to_recorded_settings():
    """The two command lines in the shipped model's training.json parse, with today's
    CLI, into the settings that the runs recorded; its recipe takes the steps they
    took."""
    record = json.loads((DEFAULT_MODEL / "training.json").read_text())
    runs = [record["resumed_from"], record]  # in the order they ran
    defaults = TrainConfig()
    for run in runs:
        config = parse_args(shlex.split(run["command"])[3:])  # after -m minsd.train
        recorded = dict(run["args"])
        # Neither run named --device: the default, CUDA, on the GPU they recorded.
        assert config.device is None
        assert recorded.pop("device") == "cuda" and "NVIDIA" in run["device"]
        parsed = {k: str(v) for k, v in asdict(config).items() if k in recorded}
        assert parsed == recorded
        # the first run predates --unet-stop and --resume: they are at their defaults
        for name in asdict(config).keys() - recorded.keys() - {"device"}:
            assert getattr(config, name) == getattr(defaults, name), name

    same = ["seed", "train_images", "vae_steps", "vae_batch", "unet_steps"]
    same += ["unet_batch", "lr", "model_max_length"]
    for line, run in zip(record["recipe"], runs):
        config = parse_args(shlex.split(line)[3:])
        assert (config.unet_stop or config.unet_steps) == run["unet_steps"]
        assert {k: str(getattr(config, k)) for k in same} == {
            k: run["args"][k] for k in same
        }


def test_the_shipped_tokenizer_is_clips(tmp_path):
    """Without --merges, training uses the tokenizer the default model ships (nothing is
    downloaded): CLIP's ids for a known prompt (FACTS), and the same vocabulary as one
    built from its merges written in CLIP's file format."""
    shipped = clip_tokenizer(None, 77)
    ids = shipped("a photograph of an astronaut riding a horse").input_ids
    assert ids == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
    assert len(shipped) == 49408 and shipped.model_max_length == 77
    tokenizer_json = json.loads(
        (DEFAULT_MODEL / "tokenizer/tokenizer.json").read_text()
    )
    lines = ["#version: 0.2", *(" ".join(m) for m in tokenizer_json["model"]["merges"])]
    merges = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    merges.write_bytes(gzip.compress("\n".join(lines).encode()))
    assert clip_tokenizer(merges, 16).get_vocab() == shipped.get_vocab()


def test_every_setting_is_a_flag():
    """The command line has one flag per TrainConfig field, of its type and default."""
    config = parse_args(
        ["--unet-stop", "5", "--lr", "0.5", "--out", "x", "--device", "cpu"]
    )
    assert config == TrainConfig(unet_stop=5, lr=0.5, out=Path("x"), device="cpu")
    assert parse_args([]) == TrainConfig()
    with pytest.raises(SystemExit):
        parse_args(["--unet-batch", "0"])  # refused as argparse refuses


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("unet_batch", 0, "unet_batch must be a positive integer, got 0"),
        ("train_images", 2.5, "train_images must be a positive integer, got 2.5"),
        ("unet_stop", 7001, r"from 1 to unet_steps \(6000\), got 7001"),
        ("lr", -1e-3, "lr must be >= 0, got -0.001"),
        ("max_minutes", 0, "max_minutes must be None or > 0, got 0"),
    ],
)
def test_config_refuses_bad_settings(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_ema_is_the_unrolled_average():
    """train_unet's moving average equals the closed form of eq. (train-ema) over the
    weights after each step: beta^n theta_0 + (1 - beta) sum_k beta^(n-k) theta_k."""
    config = UNetConfig(
        sample_size=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        num_heads=2,
        cross_attention_dim=8,
        norm_num_groups=4,
    )
    torch.manual_seed(0)
    unet = UNet(config)

    class Encoder(torch.nn.Module):
        """Stands in for CLIP: token ids (B, T) -> last_hidden_state (B, T, 8)."""

        def __init__(self) -> None:
            super().__init__()
            self.table = torch.nn.Embedding(10, 8)

        def forward(self, ids):
            return SimpleNamespace(last_hidden_state=self.table(ids))

    encoder = Encoder()
    params = list(unet.parameters()) + list(encoder.parameters())
    weights = [[p.detach().double().clone() for p in params]]  # theta_0, theta_1, ...
    n = 3
    _, ema = train_unet(
        unet,
        encoder,
        torch.randn(16, 4, 4, 4),
        torch.randint(0, 10, (16, 5)),
        torch.zeros(1, 5, dtype=torch.long),
        TrainConfig(unet_steps=n, unet_batch=4, lr=1e-2),
        callback=lambda step: weights.append(
            [p.detach().double().clone() for p in params]
        ),
        progress=False,
    )
    beta = EMA_DECAY
    for i, average in enumerate(ema):
        expected = beta**n * weights[0][i] + (1 - beta) * sum(
            beta ** (n - k) * weights[k][i] for k in range(1, n + 1)
        )
        torch.testing.assert_close(average.double(), expected, rtol=0, atol=1e-6)
    # the weights moved, so the test can tell the average from the start or the end
    assert any(not torch.equal(a, b) for a, b in zip(weights[0], weights[-1]))


def test_train_briefly_stops_keeps_checkpoints_and_learns():
    """The book's live run: a step cap ends it, it keeps the untrained UNet, one per
    checkpoint fraction and the last; two runs with one seed learn the same weights;
    the loss falls; the pipeline is untouched."""
    pipe = load_pipeline(device="cpu")
    before = [p.clone() for p in pipe.text_encoder.parameters()]
    config = TrainConfig(train_images=64, unet_steps=8, unet_batch=8, lr=2e-3)
    first = train_briefly(pipe, config)
    second = train_briefly(pipe, config)
    # 0, 1/4 and 1/2 of 8, the end
    assert [steps for steps, _, _ in first.checkpoints] == [0, 2, 4, 8]
    assert len(first.losses) == 8 and first.losses[-1] < first.losses[0]
    final_first, final_second = first.checkpoints[-1][2], second.checkpoints[-1][2]
    assert all(
        torch.equal(a, b)
        for a, b in zip(final_first.parameters(), final_second.parameters())
    )
    assert all(
        torch.equal(a, b) for a, b in zip(before, pipe.text_encoder.parameters())
    )
