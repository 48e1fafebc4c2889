"""The shapes dataset's classifier reads back every rendered caption, and sees nothing
in a blank image."""

import numpy as np

from minsd.dataset import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    Scene,
    all_captions,
    classify,
    colour_counts,
    describe_colours,
    make_dataset,
    render,
)


def test_all_captions_are_every_combination_the_dataset_draws():
    """all_captions is each shape x colour x background once: every caption make_dataset
    draws."""
    captions = all_captions()
    assert (
        len(captions)
        == len(set(captions))
        == len(SHAPES) * len(COLOURS) * len(BACKGROUNDS)
    )
    _, scenes = make_dataset(300, seed=2024)
    assert {s.caption for s in scenes} == set(captions)


def test_classifier_is_right_on_every_rendered_image():
    """The classifier reads back the background, colour and shape of every rendered
    caption."""
    images, scenes = make_dataset(300, seed=2024)
    wrong = [
        (s.caption, found)
        for image, s in zip(images, scenes)
        if (found := classify(image))
        != {"background": s.background, "colour": s.colour, "shape": s.shape}
    ]
    assert not wrong, wrong[:5]


def test_blank_image_has_no_shape():
    """An image of the background alone has no colour and no shape."""
    for name, rgb in BACKGROUNDS.items():
        blank = np.full((32, 32, 3), rgb, dtype=np.uint8)
        assert classify(blank) == {"background": name, "colour": None, "shape": None}


def test_colour_counts():
    """colour_counts tallies the classified colours ("none" for no shape);
    describe_colours says it, most first."""
    scenes = [
        Scene("circle", "red", "black", 16, 16, 14),
        Scene("square", "blue", "white", 12, 20, 10),
    ] * 2
    images = [render(s) for s in scenes] + [np.full((32, 32, 3), 20, dtype=np.uint8)]
    assert colour_counts(images) == {"red": 2, "blue": 2, "none": 1}
    assert describe_colours(images[1:]) == "blue 2, red 1, none 1"
