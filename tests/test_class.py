"""A class on one link (issue 25): behind a login each person has their own history, in the UI and through every API;
the admin (--admin, the teacher) sees everyone's. On the real app, real clients and real Chromium."""

import httpx
import pytest

from .conftest import CLASS_PASSWORDS


def key(user: str) -> dict:
    """The /v1 API key of a login: USER:PASSWORD."""
    return {"Authorization": f"Bearer {user}:{CLASS_PASSWORDS[user]}"}


def complete(url: str, user: str, prompt: str) -> int:
    """A /v1 completion made as `user`; returns the run id it was saved as."""
    response = httpx.post(f"{url}v1/completions", headers=key(user), timeout=300,
                          json={"prompt": prompt, "max_tokens": 4, "seed": 1})
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["run_id"]


def test_each_login_saves_its_runs_as_its_own_through_every_api(class_app):
    from gradio_client import Client

    url, history = class_app
    alice_v1, bob_v1 = complete(url, "alice", "alice asks /v1"), complete(url, "bob", "bob asks /v1")
    assert history.get(alice_v1)["owner"] == "alice" and history.get(bob_v1)["owner"] == "bob"

    alice = Client(url, auth=("alice", CLASS_PASSWORDS["alice"]), verbose=False)
    _, run = alice.predict("alice asks /generate", max_new_tokens=3, seed=2, api_name="/generate")
    assert history.get(run["run_id"])["owner"] == "alice"
    assert alice.predict(run["run_id"], 1, api_name="/inside")["position"] == 1  # her own run opens

    bob = Client(url, auth=("bob", CLASS_PASSWORDS["bob"]), verbose=False)
    with pytest.raises(Exception, match=f"#{run['run_id']}|{run['run_id']}") as refused:
        bob.predict(run["run_id"], 1, api_name="/inside")  # alice's run is, to bob, a run that does not exist
    assert "alice" not in str(refused.value)
    teacher = Client(url, auth=("teacher", CLASS_PASSWORDS["teacher"]), verbose=False)
    assert teacher.predict(run["run_id"], 1, api_name="/inside")["position"] == 1  # the admin opens anyone's


def test_the_history_tab_lists_and_opens_only_your_own_runs_and_the_admin_sees_the_class(browser, class_app):
    from playwright.sync_api import expect

    from .browser import generate, history_row, log_in, open_history_run, open_tab, wait_for_history_row

    url, history = class_app
    alice_ctx, alice = log_in(browser, url, "alice", CLASS_PASSWORDS["alice"])
    bob_ctx, bob = log_in(browser, url, "bob", CLASS_PASSWORDS["bob"], locale="zh-CN")
    teacher_ctx, teacher = log_in(browser, url, "teacher", CLASS_PASSWORDS["teacher"])
    try:
        alice_run = generate(alice, "Alice writes", seed="5", max_new_tokens=4)
        bob_run = generate(bob, "鲍勃写的", seed="6", max_new_tokens=4)
        api_run = complete(url, "bob", "bob through the API")  # saved elsewhere: bob's page follows it
        assert (history.get(alice_run)["owner"], history.get(bob_run)["owner"]) == ("alice", "bob")

        open_history_run(alice, alice_run)
        open_tab(bob, "history")
        wait_for_history_row(bob, api_run)
        wait_for_history_row(bob, bob_run)
        expect(history_row(bob, alice_run)).to_have_count(0)
        expect(history_row(alice, bob_run)).to_have_count(0)
        expect(history_row(alice, api_run)).to_have_count(0)

        open_tab(teacher, "history")
        for run_id, user in ((alice_run, "alice"), (bob_run, "bob")):
            expect(wait_for_history_row(teacher, run_id).locator('[data-col="8"]')).to_have_text(user)
        open_history_run(teacher, alice_run)
    finally:
        for context in (alice_ctx, bob_ctx, teacher_ctx):
            context.close()
