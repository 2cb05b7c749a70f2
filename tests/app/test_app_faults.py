"""A live app server (`python app.py` on 127.0.0.1) keeps serving through every fault: an unreachable Hub, a
model that can't be fetched, a trainer killed with SIGKILL, a full disk -- each shown as one clear message."""

from app_fault_scenarios import app_faults
from fault_scenarios import MISSING_ADAPTER_ID, MISSING_HUB_ID


def test_the_app_keeps_serving_through_every_fault(tmp_path):
    outcomes, note = app_faults(tmp_path / "home")
    shown = {outcome.fault.split(" (")[0]: outcome for outcome in outcomes}
    for outcome in outcomes:
        assert outcome.survived, f"the app stopped answering after: {outcome.fault}"
        assert str(tmp_path) not in outcome.message, f"a server path shown after: {outcome.fault}"

    hub = shown["Hub unreachable: adapter from the Hub"]
    assert hub.state == "refused" and MISSING_ADAPTER_ID in hub.message and "can't reach the Hub" in hub.message

    model = shown["model that can't be fetched"]
    assert model.state == "failed" and MISSING_HUB_ID in model.message and "'embedded'" in model.message

    killed = shown["training killed with SIGKILL"]
    assert "killed by signal 9" in killed.message and "start it again" in killed.message  # no checkpoint yet

    if "disk full" in shown:  # where a tmpfs can be mounted (root); elsewhere tests/runs/test_faults.py covers it
        assert shown["disk full"].state == "failed" and shown["disk full"].message.startswith("disk full:")
        # The page names the run, not the server's folders.
        assert "holding runs/" in shown["disk full"].message and str(tmp_path) not in shown["disk full"].message
    else:
        assert "no tmpfs mount permitted" in note
