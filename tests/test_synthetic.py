import numpy as np
import pytest

from pcb import taxonomy
from pcb.synthetic import render_board


def test_same_seed_same_board():
    a, b = render_board(42), render_board(42)
    assert np.array_equal(a.image, b.image) and a.boxes == b.boxes
    assert not np.array_equal(a.image, render_board(43).image)


@pytest.mark.parametrize("name", taxonomy.load().class_names)
def test_every_class_renders_with_a_box_inside_the_image(name):
    tax = taxonomy.load()
    for seed in range(3):
        board = render_board(seed, size=(640, 480), force=[name])
        classes = [tax.classes[c].name for c, *_ in board.boxes]
        assert classes == [name]
        _, x1, y1, x2, y2 = board.boxes[0]
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
        assert (x2 - x1) >= 6 and (y2 - y1) >= 6


def test_yolo_labels_are_normalised():
    board = render_board(3, size=(800, 600), force=["short", "spur"])
    for line in board.yolo_labels():
        c, *xywh = line.split()
        assert 0 <= int(c) < 12
        assert all(0 <= float(v) <= 1 for v in xywh)
