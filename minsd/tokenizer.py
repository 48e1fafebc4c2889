"""The CLIP tokenizer: prompts to token ids, and the tokenizer built offline from a list
of BPE merges.

CLIP's vocabulary is the 256 byte symbols, the same with the end-of-word mark "</w>",
one token per BPE merge, then <|startoftext|> and <|endoftext|> (49,408 tokens for
OpenAI's 48,894 merges).
"""

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, PreTrainedTokenizerBase


def token_ids(
    tokenizer: "PreTrainedTokenizerBase",
    prompts: list[str],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Prompts -> token ids (B, T), T = tokenizer.model_max_length (77 for SD 1.5).

    Each prompt becomes <|startoftext|>, its tokens, <|endoftext|>, padded to T with the
    pad token (SD 1.5's is <|endoftext|>) and cut at T: the text encoder always reads
    T positions, and SD 1.5 was trained with the padding attended.
    """
    T = tokenizer.model_max_length
    ids = tokenizer(prompts, padding="max_length", max_length=T, truncation=True)
    return torch.tensor(ids.input_ids, device=device)  # (B, T)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters.

    Printable bytes map to themselves and come first; the rest follow, shifted past
    255. This order is the order of CLIP's vocabulary: "a" is entry 64, "a</w>"
    entry 256 + 64 = 320.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(
        range(ord("¡"), ord("¬") + 1)
    )
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:  # control characters and spaces move past the byte range
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def build_clip_tokenizer(
    merges: list[tuple[str, str]], model_max_length: int = 77
) -> "CLIPTokenizer":
    """A CLIPTokenizer whose vocabulary is made from `merges`, in CLIP's order."""
    from transformers import CLIPTokenizer

    symbols = list(bytes_to_unicode().values())
    tokens = (
        symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in merges]
    )
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(
        vocab=vocab, merges=list(merges), model_max_length=model_max_length
    )
