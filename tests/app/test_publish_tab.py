"""The Publish tab's token rules: on a shared Space a visitor signs in or pastes a token, and the Space owner's
HF_TOKEN is never used for them; on one's own machine the ambient token is fine."""

import gradio as gr
import pytest
from fake_hub import CANARY

from tuning.runs.owner import Owner, new_visitor_id
from tuning.runs.run import Run
from ui import publish_tab, storage_note
from ui.storage_note import storage_warning

VISITOR = Owner(new_visitor_id())  # the trained run is ownerless (made from the shell): open to every visitor


def build_tab() -> gr.Blocks:
    with gr.Blocks() as demo:
        publish_tab.build_publish_tab(gr.State(None))
    return demo


def login_buttons(demo: gr.Blocks) -> list:
    return [block for block in demo.blocks.values() if isinstance(block, gr.LoginButton)]


def on_a_space(monkeypatch, oauth: bool = True) -> None:
    """The variables the Hub sets in a Space (OAUTH_CLIENT_ID only with hf_oauth: true in its README)."""
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "alice/kantele")
    if oauth:
        monkeypatch.setenv("OAUTH_CLIENT_ID", "client-id")
    # Gradio read its own OAuth settings at import; the routes themselves are gradio's business.
    monkeypatch.setattr(gr.routes, "attach_oauth", lambda app: None)


def test_sign_in_button_only_on_a_space_with_oauth(monkeypatch):
    for name in ("SYSTEM", "SPACE_ID", "OAUTH_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    assert login_buttons(build_tab()) == []
    on_a_space(monkeypatch, oauth=False)
    assert login_buttons(build_tab()) == []
    on_a_space(monkeypatch)
    assert len(login_buttons(build_tab())) == 1
    assert "never the Space owner's" in publish_tab.ambient_token_note()


@pytest.fixture
def finished_run(monkeypatch, trained_run):
    """The Publish tab pointed at the session's trained run."""
    monkeypatch.setattr(publish_tab.RUNS, "run", lambda run_id, asker: Run(trained_run))
    return "tiny"


def test_on_a_space_the_owners_token_is_not_used_for_a_visitor(monkeypatch, finished_run):
    on_a_space(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_SpaceOwnersSecretToken000000000")
    message = publish_tab.push(VISITOR, finished_run, "visitor/adapter", True, [], "", "", None)
    assert message.startswith("❌") and "sign in with Hugging Face or paste a write token" in message
    assert "hf_SpaceOwners" not in message


def test_on_any_shared_app_the_owners_token_is_not_used_for_a_visitor(monkeypatch, finished_run):
    """KANTELE_SHARED=1 (a shared machine that isn't a Space) keeps the owner's HF_TOKEN to the owner too."""
    for name in ("SYSTEM", "SPACE_ID", "OAUTH_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KANTELE_SHARED", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_SharedOwnersSecretToken00000000")
    message = publish_tab.push(VISITOR, finished_run, "visitor/adapter", True, [], "", "", None)
    assert message.startswith("❌") and "paste a write token" in message and "hf_SharedOwners" not in message
    assert "Paste a write token" in publish_tab.ambient_token_note()


def test_a_repository_name_is_required(monkeypatch, finished_run):
    message = publish_tab.push(VISITOR, finished_run, "", True, [], "", "hf_x", None)
    assert "name the repository first" in message


def test_dry_run_lists_every_repository(finished_run):
    include = [publish_tab.INCLUDE_DATASET, publish_tab.INCLUDE_MERGED]
    rows, card = publish_tab.show_plan(VISITOR, finished_run, "alice/a", include, "alice/a-data")
    assert {row[1] for row in rows} == {"alice/a", "alice/a-data", "alice/a-merged"}
    assert any("merged from the run" in row[3] for row in rows)
    assert "How to use" in card


def test_a_signed_in_visitor_pushes_with_their_own_oauth_token(monkeypatch, online, finished_run):
    """On a Space, the visitor's sign-in token is the one the Hub sees, not the Space's HF_TOKEN."""
    on_a_space(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_SpaceOwnersSecretToken000000000")
    visitor = gr.OAuthToken(token=CANARY, scope="openid profile write-repos manage-repos", expires_at=0)
    message = publish_tab.push(VISITOR, finished_run, "alice/from-the-space", False, [], "", "", visitor)
    assert message.startswith("✅") and "alice/from-the-space" in message and CANARY not in message
    assert online.repo("alice/from-the-space").files
    assert {call.authorization for call in online.calls("/commit/")} == {f"Bearer {CANARY}"}


def notes(demo: gr.Blocks, elem_id: str) -> list:
    return [block for block in demo.blocks.values() if getattr(block, "elem_id", None) == elem_id]


def test_no_storage_note_off_a_space(tmp_path):
    assert storage_warning({}, tmp_path / "kantele", data_dir=tmp_path / "none") is None
    assert storage_warning({"SYSTEM": "spaces"}, tmp_path, is_mount=lambda path: False) is None  # no SPACE_ID


def test_a_space_without_persistent_storage_says_runs_are_lost(tmp_path):
    space = {"SPACE_ID": "alice/kantele"}
    data = tmp_path / "data"
    warning = storage_warning(space, tmp_path / "app", data_dir=data)  # no /data at all
    assert "no persistent storage" in warning and "restarts" in warning and "publish" in warning
    assert "KANTELE_HOME" not in warning
    data.mkdir()
    # A /data the image merely made is not persistent storage.
    assert storage_warning(space, data / "kantele", data_dir=data, is_mount=lambda path: False) == warning
    # Storage mounted, but the app keeps its data elsewhere: the owner is told how to use it.
    elsewhere = storage_warning(space, tmp_path / "app", data_dir=data, is_mount=lambda path: True)
    assert elsewhere.startswith(warning) and "KANTELE_HOME" in elsewhere
    assert str(tmp_path / "app") not in elsewhere  # where the app keeps its data is no visitor's business
    # The real defaults: a temporary folder is not under /data.
    assert storage_warning(space, tmp_path) is not None


def test_a_space_with_its_data_on_persistent_storage_says_nothing(tmp_path):
    data = tmp_path / "data"
    (data / "kantele").mkdir(parents=True)
    assert storage_warning({"SPACE_ID": "alice/kantele"}, data / "kantele", data_dir=data,
                           is_mount=lambda path: path == data.resolve()) is None
    assert storage_warning({"SPACE_ID": "alice/kantele"}, data, data_dir=data, is_mount=lambda path: True) is None


def test_the_publish_tab_shows_the_storage_note_only_where_runs_are_lost(monkeypatch, tmp_path):
    for name in ("SYSTEM", "SPACE_ID", "OAUTH_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(storage_note, "APP_DATA", tmp_path)
    [note] = notes(build_tab(), "publish-storage-note")
    assert note.visible is False
    on_a_space(monkeypatch)
    [note] = notes(build_tab(), "publish-storage-note")
    assert note.visible is True and "no persistent storage" in note.value


def test_export_offers_every_gguf_dtype_with_f16_the_default():
    from tuning.portable.gguf import DEFAULT_GGUF_DTYPE, GGUF_DTYPES

    demo = build_tab()
    dtype = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "export-dtype")
    assert sorted(value for _, value in dtype.choices) == sorted(GGUF_DTYPES)
    assert dtype.value == DEFAULT_GGUF_DTYPE == "f16"
    export = next(fn for fn in demo.fns.values() if fn.fn is publish_tab.export_for_ollama)
    assert dtype in export.inputs, "the export uses the chosen dtype"
