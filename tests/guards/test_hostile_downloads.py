"""A shared app against visitors who name big things: a Hub model or adapter is measured on the Hub before any of its
files is fetched (a 70B model would fill the Space's disk), and a run's LoRA rank and scorecard are capped.
On your own machine none of it asks the Hub anything more."""

import json
import os

import huggingface_hub.constants
import pytest
from helpers import REPO

from tuning.chat.switcher import ChatSwitcher, fetch_hub_adapter
from tuning.config import apply_overrides, load_recipe
from tuning.guards.caps import CapError
from tuning.models.loading import ModelLoadError, resolve_model
from tuning.runs.caps import check_recipe_caps, preflight

HUGE = 140 * 10**9  # a 70B model in bf16
BIG_MODEL, SMALL_MODEL, OWNERS_MODEL = "mallory/llama-70b", "alice/tiny-chat", "owner/big-base"
MODEL_REFUSAL = (f"the download of '{BIG_MODEL}' (GB) is 140, over this app's limit of 5 -- pick a smaller model "
                 "(e.g. TinyLlama/TinyLlama-1.1B-Chat-v1.0, or 'embedded'), or run Kantele on your own machine for "
                 "bigger ones")


@pytest.fixture
def local(monkeypatch):
    """An app on your own machine: not shared, no owner caps."""
    for name in ("KANTELE_SHARED", "SYSTEM", "SPACE_ID", "KANTELE_DEFAULT_MODEL",
                 *[k for k in os.environ if k.startswith("KANTELE_CAP_")]):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def shared(local, monkeypatch):
    """A shared app with the shipped caps."""
    monkeypatch.setenv("KANTELE_SHARED", "1")


@pytest.fixture
def hub_repos(online, monkeypatch, tmp_path):
    """The fake Hub (online, an empty download cache) holding a model claimed to be 140 GB, a small model whose
    repo also has a 140 GB .bin twin the download never takes, and a small adapter on the big model."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    # File URLs are built from a template made of the endpoint at import time.
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        online.url + "/{repo_id}/resolve/{revision}/{filename}")
    for repo_id in (BIG_MODEL, SMALL_MODEL, OWNERS_MODEL):
        repo = online.add_repo(repo_id)
        repo.files.update({"config.json": b"{}", "tokenizer.json": b"{}", "model.safetensors": b"weights"})
    for repo_id in (BIG_MODEL, OWNERS_MODEL):
        online.repo(repo_id).claimed_sizes["model.safetensors"] = HUGE
    small = online.repo(SMALL_MODEL)
    small.files["pytorch_model.bin"] = b"twin"
    small.claimed_sizes["pytorch_model.bin"] = HUGE
    adapter = online.add_repo("mallory/adapter")
    adapter.files.update({"adapter_config.json": json.dumps({"base_model_name_or_path": BIG_MODEL}).encode(),
                          "adapter_model.safetensors": b"lora"})
    return online


def fetched(hub) -> list[str]:
    """The files the fake Hub was asked for (their metadata or their bytes)."""
    return [request.path for request in hub.calls("/resolve/")]


def sizes_asked(hub) -> list[str]:
    """The repo listings that asked for file sizes (model_info with files_metadata)."""
    return [request.path for request in hub.requests if "blobs=true" in request.query.lower()]


# --- a model or adapter a visitor names is measured before it is downloaded -------------------------------------------

def test_a_visitor_named_model_over_the_cap_is_refused_before_any_file_is_fetched(shared, hub_repos):
    with pytest.raises(CapError) as caught:
        resolve_model(BIG_MODEL)
    assert str(caught.value) == MODEL_REFUSAL
    assert isinstance(caught.value, ModelLoadError)  # front ends that report only those report it too
    assert sizes_asked(hub_repos) and fetched(hub_repos) == []
    assert all(request.authorization is None for request in hub_repos.requests)  # never with the owner's token


def test_a_hub_adapters_base_model_over_the_cap_is_refused(shared, hub_repos, monkeypatch):
    """The adapter itself is small and downloads; the 140 GB base it names does not."""
    monkeypatch.setattr("tuning.chat.switcher.SideBySideChat", lambda *a: pytest.fail("a base model was loaded"))
    with pytest.raises(CapError, match="the download of 'mallory/llama-70b' \\(GB\\) is 140"):
        ChatSwitcher().select_hub_adapter("mallory/adapter")
    assert fetched(hub_repos) and all("/mallory/adapter/" in path for path in fetched(hub_repos))


def test_a_hub_adapter_over_its_cap_is_refused_before_any_file_is_fetched(shared, hub_repos):
    hub_repos.repo("mallory/adapter").claimed_sizes["adapter_model.safetensors"] = 2 * 10**9
    with pytest.raises(CapError) as caught:
        fetch_hub_adapter("mallory/adapter")
    assert str(caught.value) == ("the download of 'mallory/adapter' (MB) is 2,000, over this app's limit of 1,000 -- "
                                 "pick a smaller adapter (a LoRA adapter is a few MB to a few hundred), or pick a "
                                 "local run")
    assert fetched(hub_repos) == []


def test_a_model_under_the_cap_downloads_the_files_it_was_measured_by(shared, hub_repos):
    """Only the files the download takes count: the 140 GB pytorch .bin twin is neither counted nor fetched."""
    model = resolve_model(SMALL_MODEL)
    assert sorted(p.name for p in model.path.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert model.revision == hub_repos.repo(SMALL_MODEL).sha  # the commit that was measured
    assert sizes_asked(hub_repos) and not any(path.endswith(".bin") for path in fetched(hub_repos))


def test_the_owners_model_is_not_measured(shared, hub_repos, monkeypatch):
    monkeypatch.setenv("KANTELE_DEFAULT_MODEL", OWNERS_MODEL)
    assert resolve_model("auto").hub_id == OWNERS_MODEL
    assert sizes_asked(hub_repos) == []


def test_an_owner_may_raise_the_cap(shared, hub_repos, monkeypatch):
    monkeypatch.setenv("KANTELE_CAP_MODEL_GB", "200")
    assert resolve_model(BIG_MODEL).hub_id == BIG_MODEL


def test_on_your_own_machine_no_size_is_asked(local, hub_repos):
    assert resolve_model(BIG_MODEL).hub_id == BIG_MODEL  # whatever its size: your disk, your call
    assert fetch_hub_adapter("mallory/adapter")[1] == BIG_MODEL
    assert fetched(hub_repos) and sizes_asked(hub_repos) == []


def test_a_hub_that_does_not_answer_gives_the_downloads_own_errors(shared, hub_repos):
    """The size can't be asked, so nothing is downloaded: only the cache may serve, and it has nothing."""
    hub_repos.stop()
    with pytest.raises(ModelLoadError, match=f"can't download '{BIG_MODEL}' from the Hugging Face Hub .*the Hub is "
                                             "unreachable"):
        resolve_model(BIG_MODEL)
    with pytest.raises(ModelLoadError, match="can't download 'mallory/adapter': can't reach the Hub .* it did not "
                                             "answer \\(ConnectError\\)"):
        fetch_hub_adapter("mallory/adapter")


# --- a run's LoRA rank and its scorecard are capped -------------------------------------------------------------------

def kalevala(monkeypatch, *overrides):
    monkeypatch.chdir(REPO)  # the recipe's data paths are relative to the repository
    return apply_overrides(load_recipe(REPO / "configs" / "kalevala.yaml"), list(overrides))


@pytest.mark.parametrize("override, refusal", [
    ("lora.r=100000", "LoRA rank is 100,000, over this app's limit of 256 -- lower the LoRA rank"),
    ("training.scorecard_questions=100000",
     "scorecard questions is 100,000, over this app's limit of 500 -- set scorecard questions to 500 or fewer"),
])
def test_a_runs_lora_rank_and_scorecard_are_capped(shared, monkeypatch, override, refusal):
    with pytest.raises(CapError, match=refusal):
        check_recipe_caps(kalevala(monkeypatch, override))
    check_recipe_caps(kalevala(monkeypatch))  # the shipped recipe passes


@pytest.mark.parametrize("validation", ["files", "split off the training data"])
def test_a_scorecard_of_all_questions_counts_them(shared, monkeypatch, validation):
    """Scorecard questions 0 means all of the held-out set: Start counts it (58 Kalevala questions) before it
    estimates anything."""
    monkeypatch.setenv("KANTELE_CAP_SCORECARD_QUESTIONS", "10")
    recipe = kalevala(monkeypatch)
    if validation != "files":
        recipe.data.validation = []
    with pytest.raises(CapError, match=r"the scorecard's questions \(scorecard questions 0: all the held-out ones\) "
                                       r"is \d\d, over this app's limit of 10 -- set scorecard questions to 10 or"):
        preflight(recipe)
