"""sampling.draw is torch.multinomial's draw of one sample: the same token and the same generator state, draw for draw."""

import numpy as np
import pytest
import torch

from playground.sampling import draw


@pytest.mark.parametrize("vocab", [7, 512, 21128, 50257])
@pytest.mark.parametrize("shape", ["dense", "top-k", "peaked", "one token"])
def test_a_draw_is_torch_multinomials_draw(vocab, shape):
    rng = np.random.default_rng(vocab)
    for seed in range(60):
        logits = torch.from_numpy(rng.standard_normal(vocab).astype(np.float32) * rng.uniform(0.1, 12))
        if shape == "top-k":
            logits = logits.masked_fill(logits < torch.topk(logits, min(50, vocab)).values[-1], -float("inf"))
        elif shape == "peaked":
            logits[seed % vocab] += 40
        elif shape == "one token":
            logits = torch.full((vocab,), -float("inf"))
            logits[seed % vocab] = 0.0
        probs = torch.softmax(logits, -1)
        theirs, ours = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        for _ in range(3):  # and the generators stay in step from one draw to the next
            assert draw(probs, ours) == int(torch.multinomial(probs, 1, generator=theirs))
        assert torch.equal(ours.get_state(), theirs.get_state())


def test_a_distribution_without_mass_is_refused():
    with pytest.raises(ValueError, match="probability"):
        draw(torch.zeros(10), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="probability"):
        draw(torch.tensor([0.5, float("nan")]), torch.Generator().manual_seed(0))
