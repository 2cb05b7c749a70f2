"""On a shared Space, HF_TOKEN is the owner's secret: a repo a visitor types in is fetched anonymously."""

import pytest
from fake_hub import CANARY

from tuning.chat.switcher import fetch_hub_adapter
from tuning.hub.auth import download_token
from tuning.models.loading import ModelLoadError, resolve_model

PRIVATE = "alice/private-adapter"


@pytest.fixture(params=["space", "KANTELE_SHARED=1"])
def on_space(monkeypatch, request):
    """A shared app: a Hugging Face Space, or any machine whose owner set KANTELE_SHARED=1."""
    if request.param == "space":
        monkeypatch.setenv("SYSTEM", "spaces")
        monkeypatch.setenv("SPACE_ID", "alice/kantele")
    else:
        monkeypatch.setenv("KANTELE_SHARED", "1")


def test_visitor_named_repos_never_carry_the_owners_token_on_a_space(online, on_space):
    online.add_repo(PRIVATE, private=True)
    with pytest.raises(ModelLoadError, match="not an adapter on the Hub"):
        fetch_hub_adapter(PRIVATE)  # the owner's private adapter stays out of a visitor's reach
    with pytest.raises(ModelLoadError):
        resolve_model("alice/private-model")
    assert online.requests and all(request.authorization is None for request in online.requests)


def test_off_a_space_the_machines_own_token_is_used(online):
    online.add_repo(PRIVATE, private=True)
    with pytest.raises(ModelLoadError):
        fetch_hub_adapter(PRIVATE)  # a repo with no adapter_config.json; the point is the header sent
    assert any(request.authorization == f"Bearer {CANARY}" for request in online.requests)


def test_the_model_the_owner_configured_may_use_the_owners_token(on_space):
    assert download_token("alice/kantele-base", owner_chosen="alice/kantele-base") is None
    assert download_token("someone/else", owner_chosen="alice/kantele-base") is False
