"""Fair limits per user (issue 25): runs at once and new tokens per minute, on the real service and through /v1."""

import gc

import httpx
import pytest

from playground.config import GenerationSettings
from playground.limits import Admission, LimitReached, UserLimits
from playground.service import Playground

from .conftest import CLASS_PASSWORDS


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def playground(tiny_source, tmp_path):
    return Playground(tiny_source, device="cpu", exports_root=tmp_path / "exports")


def settings(tokens: int = 4) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=tokens, seed=1)


def test_a_user_may_have_so_many_runs_at_once_and_others_go_on(playground):
    playground.admission = Admission(UserLimits(runs=2, tokens_per_minute=0))
    first, second = (playground.start("Hello", settings(), owner="alice") for _ in range(2))
    with pytest.raises(LimitReached) as refused:
        playground.start("Hello", settings(), owner="alice")
    assert refused.value.key == "limits.runs" and "2 runs going" in str(refused.value)
    bob = playground.start("Hello", settings(), owner="bob")  # another user is not held back
    local = [playground.start("Hello", settings()) for _ in range(3)]  # nor is the local user, who has no login
    assert len(list(playground.stream(first))) > 0  # a finished run gives its place back
    third = playground.start("Hello", settings(), owner="alice")
    assert playground.admission.running("alice") == 2
    del second, third  # runs dropped without being streamed give theirs back too
    gc.collect()
    assert playground.admission.running("alice") == 0 and playground.admission.running("bob") == 1 and bob and local


def test_new_tokens_per_minute_are_counted_per_user_and_say_when_to_try_again(playground):
    clock = Clock()
    playground.admission = Admission(UserLimits(runs=0, tokens_per_minute=20), clock=clock)
    list(playground.stream(playground.start("Hello", settings(12), owner="alice")))
    clock.now += 15
    with pytest.raises(LimitReached) as refused:
        playground.start("Hello", settings(12), owner="alice")
    assert refused.value.key == "limits.tokens" and refused.value.params == {"used": 12, "asked": 12, "limit": 20, "wait": 45}
    list(playground.stream(playground.start("Hello", settings(12), owner="bob")))
    list(playground.stream(playground.start("Hello", settings(8), owner="alice")))  # what is left of her minute
    clock.now += 45  # her first 12 tokens are a minute old
    list(playground.stream(playground.start("Hello", settings(12), owner="alice")))
    with pytest.raises(LimitReached):  # a batch asks for max_new_tokens x samples
        playground.start("Hello", settings(4), owner="bob", num_samples=3)


def test_a_flood_through_v1_gets_429_with_the_message_and_the_others_go_on(class_app):
    url, history = class_app
    key = {"Authorization": f"Bearer carol:{CLASS_PASSWORDS['carol']}"}
    body = {"prompt": "flood", "max_tokens": 40, "seed": 1}
    assert httpx.post(f"{url}v1/completions", headers=key, json=body, timeout=300).status_code == 200
    refused = httpx.post(f"{url}v1/completions", headers=key, json=body, timeout=300)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and "limit here is 64 per user per minute" in error["message"]
    bob = httpx.post(f"{url}v1/completions", headers={"Authorization": f"Bearer bob:{CLASS_PASSWORDS['bob']}"},
                     json={"prompt": "my turn", "max_tokens": 4, "seed": 1}, timeout=300)
    assert bob.status_code == 200 and history.get(bob.json()["choices"][0]["run_id"])["owner"] == "bob"
    assert sum(r["owner"] == "carol" for r in history.search("flood")) == 1  # the refused request saved nothing
