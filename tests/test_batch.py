import pytest
import torch

from models.batch import Batch, collate, scatter_windows
from tests.conftest import make_dialogues


def test_collate_pads_right_and_masks():
    b = collate(make_dialogues((3, 1)))
    assert b.mask.tolist() == [[True, True, True], [True, False, False]]
    assert b.audio.shape == (2, 3, 10) and b.speaker.dtype == torch.long
    assert torch.all(b.audio[1, 1:] == 0)


def test_collate_variable_frames_builds_masks():
    d = [[{"frames": torch.ones(4, 3)}, {"frames": torch.ones(2, 3)}]]
    b = collate(d)
    assert b.frames.shape == (1, 2, 4, 3)
    assert b.frame_mask.tolist() == [[[True] * 4, [True, True, False, False]]]


def test_collate_rejects_mixed_fields_and_empty():
    with pytest.raises(ValueError, match="disagree"):
        collate([[{"audio": torch.ones(2)}, {"text": torch.ones(2)}]])
    with pytest.raises(ValueError, match="empty"):
        collate([[]])


def test_windows_hold_exactly_the_last_k_utterances():
    x = torch.arange(5, dtype=torch.float32)[None, :, None]  # utterance t has value t
    b = Batch(mask=torch.ones(1, 5, dtype=torch.bool), audio=x)
    w, index = b.windows(3)
    assert index.tolist() == [[0, t] for t in range(5)]
    got = [w.audio[i, w.mask[i], 0].tolist() for i in range(5)]
    assert got == [[0.0], [0.0, 1.0], [0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]]
    assert torch.all(w.audio[~w.mask] == 0)


def test_windows_skip_padding_and_scatter_back():
    b = collate(make_dialogues((2, 1)))
    w, index = b.windows(4)
    assert index.tolist() == [[0, 0], [0, 1], [1, 0]]
    back = scatter_windows(torch.tensor([1.0, 2.0, 3.0]), index, b.shape)
    assert back.tolist() == [[1.0, 2.0], [3.0, 0.0]]
    with pytest.raises(ValueError):
        b.windows(0)
