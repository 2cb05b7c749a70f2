"""Run ownership: a visitor sees and opens only their own runs (and ownerless shell runs), checked in the engine."""

import pytest

from tuning.config import RecipeConfig
from tuning.runs.owner import (
    OWNER_FILE,
    Owner,
    RunAccessError,
    ensure_visitor_id,
    is_visitor_id,
    new_visitor_id,
    record_owner,
)
from tuning.runs.queue import TrainingQueue


@pytest.fixture
def queue(tmp_path, monkeypatch):
    """A queue that records runs but never starts a trainer."""
    queue = TrainingQueue(tmp_path / "runs")
    monkeypatch.setattr(queue, "_launch", lambda run_id: None)
    return queue


def make_run(queue: TrainingQueue, name: str, owner: Owner | None = None) -> str:
    run_dir = queue.runs_dir / name
    run_dir.mkdir(parents=True)
    if owner:
        record_owner(run_dir, owner)
    return name


def test_submit_records_only_a_hash_of_the_visitor_id(queue):
    alice = Owner(new_visitor_id())
    run_id = queue.submit(RecipeConfig(), label="mine", owner=alice)
    recorded = (queue.run_dir(run_id) / OWNER_FILE).read_text()
    assert recorded.strip() == alice.digest()
    every_file = "".join(p.read_text(errors="replace") for p in queue.run_dir(run_id).rglob("*") if p.is_file())
    assert alice.visitor_id not in every_file
    assert alice.visitor_id not in repr(alice)


def test_each_visitor_lists_and_opens_only_their_runs_and_the_ownerless_ones(queue):
    alice, bob = Owner(new_visitor_id()), Owner(new_visitor_id())
    alices = make_run(queue, "20250101-000001-a-aaaaaa", alice)
    bobs = make_run(queue, "20250101-000002-b-bbbbbb", bob)
    shell = make_run(queue, "20250101-000003-shell-cccccc")
    assert queue.owned_runs(alice) == [shell, alices]
    assert queue.owned_runs(bob) == [shell, bobs]
    assert queue.owned_run_dir(alices, alice) == queue.run_dir(alices)
    assert queue.owned_run_dir(shell, bob) == queue.run_dir(shell)
    with pytest.raises(RunAccessError, match="no run of yours") as refused:
        queue.owned_run_dir(alices, bob)
    with pytest.raises(RunAccessError) as missing:
        queue.owned_run_dir("20250101-000009-x-ffffff", bob)
    # A missing run and someone else's read alike, so ids can't be probed.
    assert str(refused.value).replace(alices, "ID") == str(missing.value).replace("20250101-000009-x-ffffff", "ID")


def test_an_unidentified_asker_opens_only_ownerless_runs(queue):
    alices = make_run(queue, "20250101-000001-a-aaaaaa", Owner(new_visitor_id()))
    shell = make_run(queue, "20250101-000003-shell-cccccc")
    assert queue.owned_runs(None) == [shell]
    with pytest.raises(RunAccessError, match="reload the page"):
        queue.owned_run_dir(alices, None)


def test_crafted_run_ids_never_become_paths(queue):
    alice = Owner(new_visitor_id())
    for crafted in ("../runs", "..", "/etc/passwd", "a/../../b", "", "x\x00y", "%2e%2e"):
        with pytest.raises(ValueError):
            queue.owned_run_dir(crafted, alice)


def test_a_signed_in_visitor_keeps_their_browsers_runs_and_their_login_follows_them(queue):
    browser = new_visitor_id()
    anonymous = make_run(queue, "20250101-000001-anon-aaaaaa", Owner(browser))
    signed_in = Owner(browser, hf_user="alice")
    trained_signed_in = make_run(queue, "20250101-000002-hf-bbbbbb", signed_in)
    assert queue.owned_runs(signed_in) == [trained_signed_in, anonymous]
    # The same login in another browser sees the login's runs, not the first browser's anonymous ones.
    elsewhere = Owner(new_visitor_id(), hf_user="alice")
    assert queue.owned_runs(elsewhere) == [trained_signed_in]
    assert queue.owned_runs(Owner(new_visitor_id(), hf_user="bob")) == []


def test_visitor_ids_are_long_random_and_a_forged_short_one_is_replaced():
    made = new_visitor_id()
    assert is_visitor_id(made) and made != new_visitor_id()
    assert ensure_visitor_id(made) == made
    for forged in (None, "", "a", "x" * 20, "../../etc", 42, {"id": "x"}, "é" * 50):
        replaced = ensure_visitor_id(forged)
        assert replaced != forged and is_visitor_id(replaced)
