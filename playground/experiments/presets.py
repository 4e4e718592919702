"""Ready-made experiments: the indirect-object prompt, the induction test, steering prompt sets (English and Chinese)."""

from __future__ import annotations

import random

from .intervention import ExperimentError
from .target import bare_ids

# name -> (clean, corrupted, answer, wrong). The corrupted prompt names the other person as the giver, so the answer flips.
PATCH_PRESETS = {
    "ioi": ("When Mary and John went to the store, John gave a drink to",
            "When Mary and John went to the store, Mary gave a drink to", " Mary", " John"),
    "ioi_zh": ("明和红去了商店，红把水给了", "明和红去了商店，明把水给了", "明", "红"),
}
INDUCTION_TOKENS = 10  # the random half; the whole prompt is 2 x 10 - 1 tokens
# name -> (positive prompts, negative prompts, steering layer as a share of the model's layers)
STEER_PRESETS = {
    "sentiment": (("I love this. It is wonderful and happy.", "What a great, beautiful day.", "This is excellent, I am delighted."),
                  ("I hate this. It is awful and sad.", "What a terrible, ugly day.", "This is dreadful, I am furious.")),
    "zh_en": (("今天天气很好，我们去公园散步。", "我喜欢读书和写字。", "这是一个美丽的城市。"),
              ("The weather is nice today, let us walk in the park.", "I like reading and writing.", "This is a beautiful city.")),
}


def induction_prompts(codec, seed: int = 0) -> tuple[list[int], list[int], int, int]:
    """A random run of whole-word tokens repeated (clean: a1..a10 a1..a9, the model should say a10 next) and the same
    with a different random first half (corrupted: b1..b10 a1..a9, nothing to copy): (clean, corrupted, a10, b10).
    Tokens are ones that encode back to themselves, so the prompts also work as text."""
    rng = random.Random(seed)
    candidates = [i for i in range(len(codec)) if _plain_word(codec, i)]
    if len(candidates) < 2 * INDUCTION_TOKENS:
        raise ExperimentError(key="experiments.no_induction", field="preset")
    picked = rng.sample(candidates, 2 * INDUCTION_TOKENS)
    a, b = picked[:INDUCTION_TOKENS], picked[INDUCTION_TOKENS:]
    return a + a[:-1], b + a[:-1], a[-1], b[-1]


def _plain_word(codec, token_id: int) -> bool:
    """A token that is a short word of letters (with GPT-2's leading space) or one Han character, and encodes to itself."""
    piece = codec.piece(token_id)
    try:
        text = piece.decode("utf-8")
    except UnicodeDecodeError:
        return False
    word = text[1:] if text.startswith(" ") else text
    han = len(word) == 1 and "\u4e00" <= word <= "\u9fff"
    latin = text.startswith(" ") and 3 <= len(word) <= 8 and word.isascii() and word.isalpha() and word.islower()
    return (han or latin) and bare_ids(codec, text) == [token_id]
