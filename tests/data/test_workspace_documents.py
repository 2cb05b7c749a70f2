"""The documents QA pairs were generated from are kept in the visitor's workspace and named by the dataset state
("documents"), which the Train tab hands the recipe as data.sources (the scorecard's retrieval searches them)."""

from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from helpers import KALEVALA, TINY_TRAIN, write_jsonl

from tuning.data.examples import DataError
from tuning.data.files import UploadLimits
from tuning.data.workspace import (
    DOCUMENTS_DIR,
    documents_named,
    kalevala_source,
    keep_documents,
    new_workspace,
    safe_document_name,
)
from tuning.guards.caps import CAP_ENV_PREFIX
from tuning.qa.sources import PASTED_FILE, PASTED_SOURCE, read_documents

KEY = "sk-test-documents"
OTHER_PASSAGE = ("Ilmarinen the smith forged the Sampo for Louhi, the mistress of Pohjola. The Sampo brought "
                 "grain, salt and coins to the people of the North. The heroes later stole the Sampo back from "
                 "Pohjola by boat.")
PASSAGE = ("Elias Lönnrot compiled the Kalevala from folk poems he collected in Karelia. The first edition of the "
           "epic appeared in 1835 with thirty-two poems. The longer edition of 1849 has fifty poems in all. The "
           "poems were sung by rune singers in the villages of Karelia.")


def document(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def kept_names(workspace: Path) -> list[str]:
    return sorted(path.name for path in (workspace / DOCUMENTS_DIR).iterdir())


@pytest.fixture
def local(monkeypatch):
    """An app on your own machine: not shared, no owner caps (a loopback endpoint is allowed)."""
    import os

    for name in ("KANTELE_SHARED", "SYSTEM", "SPACE_ID", *[k for k in os.environ if k.startswith("KANTELE_CAP_")]):
        monkeypatch.delenv(name, raising=False)


def test_documents_are_copied_under_their_own_names_and_the_same_content_once(tmp_path):
    workspace = new_workspace(tmp_path / "ws")
    notes = document(tmp_path / "upload-a", "notes.md", "# Notes\nLouhi rules Pohjola.\n")
    other_notes = document(tmp_path / "upload-b", "notes.md", "# Other notes\nIlmarinen forged the Sampo.\n")
    same_as_notes = document(tmp_path / "upload-c", "copy.md", notes.read_text(encoding="utf-8"))
    kept = keep_documents(workspace, [notes, other_notes, same_as_notes])
    folder = workspace / DOCUMENTS_DIR
    assert kept == [folder / "notes.md", folder / "02-notes.md"]  # a clash numbered, the same content kept once
    assert kept[0].read_bytes() == notes.read_bytes() and kept[1].read_bytes() == other_notes.read_bytes()
    assert keep_documents(workspace, [same_as_notes, notes]) == [folder / "notes.md"]  # again: nothing new
    assert kept_names(workspace) == ["02-notes.md", "notes.md"]


def test_pasted_text_is_kept_as_a_txt_that_retrieval_names_as_the_generator_does(tmp_path):
    workspace = new_workspace(tmp_path / "ws")
    folder = workspace / DOCUMENTS_DIR
    assert keep_documents(workspace, [], "  \n ") == [] and not folder.exists()  # blank: nothing to keep
    kept = keep_documents(workspace, [], PASSAGE)
    assert kept == [folder / PASTED_FILE] and kept[0].read_text(encoding="utf-8") == PASSAGE
    assert keep_documents(workspace, [], PASSAGE) == kept  # the same text again: kept once
    other = keep_documents(workspace, [], "Väinämöinen is the old and steadfast singer of the poems.")
    assert other == [folder / f"02-{PASTED_FILE}"]
    generated = {chunk.source for chunk in read_documents([], PASSAGE)}
    retrieved = {chunk.source for chunk in read_documents([*kept, *other])}
    assert generated == retrieved == {PASTED_SOURCE}
    assert documents_named(workspace, [PASTED_SOURCE]) == [other[0], kept[0]]


def test_a_kept_name_has_no_path_parts_and_nothing_unprintable():
    assert safe_document_name("../../etc/passwd.md") == "passwd.md"
    assert safe_document_name("C:\\Users\\me\\notes.txt") == "notes.txt"
    assert safe_document_name("bad\nname.md") == "bad_name.md"
    assert safe_document_name("..") == "document"
    long = safe_document_name("x" * 300 + ".md")
    assert long.endswith(".md") and len(long.encode()) <= 200


def test_documents_over_the_workspace_cap_are_refused_with_the_uploads_wording_and_nothing_kept(tmp_path):
    workspace = new_workspace(tmp_path / "ws")
    limits = UploadLimits(workspace_bytes=1000)
    first = document(tmp_path / "up", "first.md", "a" * 600)
    keep_documents(workspace, [first], limits=limits)
    keep_documents(workspace, [first], limits=limits)  # kept already: adds nothing to the workspace
    second = document(tmp_path / "up", "second.md", "b" * 300)
    with pytest.raises(DataError) as caught:
        keep_documents(workspace, [second], "c" * 200, limits=limits)
    assert str(caught.value) == (f"second.md, {PASTED_FILE}: your workspace would hold 1,100 bytes with these files, "
                                 "over the limit of 1,000 bytes per workspace — load fewer or smaller files, reload "
                                 "the page to start a fresh workspace, or ask whoever runs the app to raise "
                                 f"{CAP_ENV_PREFIX}WORKSPACE_MB")
    assert kept_names(workspace) == ["first.md"]


def test_the_kalevala_example_names_its_source_and_own_files_start_without_documents(tmp_path, monkeypatch):
    from ui import data_tab

    monkeypatch.setattr(data_tab, "WORKSPACES_DIR", tmp_path / "ws")
    monkeypatch.setattr(data_tab, "count_tokens_with", lambda: lambda messages: 1)
    empty = data_tab.empty_dataset_state()
    assert empty["documents"] == []
    kalevala, _, message, *_ = data_tab.load_kalevala(empty)
    assert message == "" and kalevala["documents"] == [str(KALEVALA / "source.md")] == [str(kalevala_source())]
    own, _, message, *_ = data_tab.load_uploads([str(write_jsonl(tmp_path / "mine.jsonl", TINY_TRAIN))], 0.25,
                                                kalevala)
    assert message == "" and own["documents"] == [] and own["workspace"] == kalevala["workspace"]


def test_build_recipe_hands_the_datasets_documents_never_the_presets():
    from ui.train_tab import build_recipe

    dataset = {"train_file": "t.jsonl", "validation_file": "v.jsonl", "documents": ["/ws/documents/notes.md"]}
    assert build_recipe("kalevala", {}, dataset).data.sources == ["/ws/documents/notes.md"]
    assert build_recipe("kalevala", {}, {**dataset, "documents": []}).data.sources == []
    assert build_recipe("kalevala", {}, {"train_file": "t.jsonl", "validation_file": "v.jsonl"}).data.sources == []


def test_generating_keeps_the_documents_and_adding_the_pairs_keeps_them_named(tmp_path, monkeypatch, local):
    from ui import data_tab, generate_panel

    monkeypatch.setattr(data_tab, "WORKSPACES_DIR", tmp_path / "ws")
    monkeypatch.setattr(generate_panel, "WORKSPACES_DIR", tmp_path / "ws")
    monkeypatch.setattr(data_tab, "count_tokens_with", lambda: lambda messages: 1)
    upload = document(tmp_path / "gradio-tmp", "lonnrot.md", PASSAGE)
    kalevala, *_ = data_tab.load_kalevala(data_tab.empty_dataset_state())
    with FakeOpenAI(KEY) as endpoint:
        *_, last = generate_panel.generate(
            [str(upload)], OTHER_PASSAGE, generate_panel.OPENAI_CHOICE, endpoint.url, "fake-qa", KEY, 1, 10, 0, 0, "",
            False, 5, 0.9, kalevala, {})
    dataset, review, progress, *_ = last
    assert "Done" in progress and review["rows"], progress
    folder = Path(dataset["workspace"]) / DOCUMENTS_DIR
    expected = [str(KALEVALA / "source.md"), str(folder / "lonnrot.md"), str(folder / PASTED_FILE)]
    assert dataset["documents"] == expected and kept_names(Path(dataset["workspace"])) == ["lonnrot.md", PASTED_FILE]

    # Own files loaded since: a new dataset without documents; adding the generated pairs names theirs again.
    own, *_ = data_tab.load_uploads([str(write_jsonl(tmp_path / "mine.jsonl", TINY_TRAIN))], 0.25, dataset)
    assert own["documents"] == []
    table = [[True, *row[1:]] for row in generate_panel.ReviewSession.from_state(review).table()]
    added, *_, status = generate_panel.add_to_dataset(table, own, review, data_tab.prepare_and_show)
    assert status.startswith("Added") and added["documents"] == expected[1:]
    assert added["train_file"] and len(added["sources"]) == 2
