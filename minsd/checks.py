"""What minsd refuses, and the message that says why.

The modules that tell the story (the UNet, the denoiser, the samplers, the pipeline,
loading) call these checks in one line where they guard, so that the story reads first.
Every error names the wrong value and what is allowed; nothing is silently fixed.
"""

import numbers


def is_integer(value: object) -> bool:
    """int or numpy integer, but not bool (True is an int in Python, never a count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_positive_integer(value: object) -> bool:
    return is_integer(value) and value > 0


def is_number(value: object) -> bool:
    """int, float or numpy number, but not bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_num_steps(num_steps: int) -> None:
    if not is_positive_integer(num_steps):
        raise ValueError(
            "the number of sampling steps must be a positive integer, "
            f"got {type(num_steps).__name__}: {num_steps!r}"
        )
