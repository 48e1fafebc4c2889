"""The training command runs end to end (a few steps) and writes a folder minsd
loads."""

import gzip
import json

import torch
from conftest import TINY_MERGES

from minsd import load_pipeline
from minsd.train import main as train


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
    train(
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
    # one window of the 2 steps, with its mean loss
    assert [step for step, _ in record["unet_loss_curve"]] == [2]
    # (4, 3) latent -> RGB
    assert len(json.loads((out / "vae" / "preview_factors.json").read_text())) == 4

    train(
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


def test_train_briefly_stops_keeps_checkpoints_and_learns():
    """The book's live run: a step cap ends it, it keeps the untrained UNet, one per
    checkpoint fraction and
    the last; two runs with one seed learn the same weights; the loss falls; the
    pipeline is untouched."""
    from minsd.train import train_briefly

    pipe = load_pipeline(device="cpu")
    before = [p.clone() for p in pipe.text_encoder.parameters()]
    first = train_briefly(pipe, seconds=600, steps=8, n_images=64, batch=8)
    second = train_briefly(pipe, seconds=600, steps=8, n_images=64, batch=8)
    # 0, 1/8, 1/4, 1/2 of 8, the end
    assert [steps for steps, _, _ in first.checkpoints] == [0, 1, 2, 4, 8]
    assert len(first.losses) == 8 and first.losses[-1] < first.losses[0]
    final_first, final_second = first.checkpoints[-1][2], second.checkpoints[-1][2]
    assert all(
        torch.equal(a, b)
        for a, b in zip(final_first.parameters(), final_second.parameters())
    )
    assert all(
        torch.equal(a, b) for a, b in zip(before, pipe.text_encoder.parameters())
    )
