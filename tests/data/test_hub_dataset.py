"""A Hub dataset by id (tuning/data/hub_spec.py, hub_dataset.py, hub_workspace.py): the real `datasets` and
`huggingface_hub` against the fake Hub on loopback -- shapes detected and corrected, config and split, the trainer's
own load recording the commit, the visitor's token and never the owner's, clear offline and missing messages, hostile
ids refused before any request."""

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
from fake_hub import BOB_TOKEN, CANARY
from helpers import TINY_TRAIN

from datasets import config as datasets_config
from tuning.config import ConfigError, recipe_from_dict
from tuning.data.examples import load_examples
from tuning.data.files import upload_limits
from tuning.data.hub_dataset import dataset_token, detect_columns, fetch_hub_rows
from tuning.data.hub_spec import HubDatasetError, HubDatasetNotFoundError, HubOfflineError, hub_spec, parse_hub_spec
from tuning.data.hub_workspace import load_hub_into_workspace, remap_hub_load
from tuning.data.workspace import UPLOADS_DIR, new_workspace

PUBLIC = "alice/kalevala-qa"
MULTI = "alice/kalevala-configs"
BOBS = "bob/secret-qa"
ALICES_PRIVATE = "alice/private-qa"
HOSTILE = ["../x", "/etc/passwd", "http://127.0.0.1/x", "a/b/c", "..", "a/../b", "~/x", "a/b:c", "a\\b", "", "a/b\nc",
           "https://huggingface.co/datasets/a/b", "file:///etc/passwd", "a//b", "./a/b"]
# Two configs, each with its own splits, named in the card's YAML as the Hub does; their columns fit no known shape.
CARD = """---
configs:
- config_name: easy
  data_files:
  - split: train
    path: easy/train.jsonl
  - split: test
    path: easy/test.jsonl
- config_name: hard
  data_files:
  - split: train
    path: hard/train.jsonl
  - split: test
    path: hard/test.jsonl
---
# Kalevala questions in two configs
"""


def jsonl(rows) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


def qa(rows):
    return [{"question": row["prompt"], "answer": row["response"], "category": "epic"} for row in rows]


def odd(prefix: str, count: int):
    return [{"q_text": f"{prefix} question {i}?", "a_text": f"{prefix} answer {i}."} for i in range(count)]


@pytest.fixture
def hub_sets(online, monkeypatch, tmp_path):
    """The fake Hub, online for huggingface_hub and datasets both, holding a public set (question/answer), one with
    two configs, bob's private set and alice's private set; HF_TOKEN is alice's (the owner's) canary."""
    url = online.url
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        url + "/{repo_id}/resolve/{revision}/{filename}")  # built from the endpoint at import
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(datasets_config, "HF_ENDPOINT", url)
    monkeypatch.setattr(datasets_config, "HUB_DATASETS_URL", url + "/datasets/{repo_id}/resolve/{revision}/{path}")
    monkeypatch.setattr(datasets_config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets_config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.delenv("KANTELE_SHARED", raising=False)
    online.add_dataset(PUBLIC, {"data/train.jsonl": jsonl(qa(TINY_TRAIN)), "data/test.jsonl": jsonl(qa(TINY_TRAIN[:2]))})
    online.add_dataset(MULTI, {"README.md": CARD.encode(), "easy/train.jsonl": jsonl(odd("easy", 4)),
                               "easy/test.jsonl": jsonl(odd("easy-test", 2)), "hard/train.jsonl": jsonl(odd("hard", 5)),
                               "hard/test.jsonl": jsonl(odd("hard-test", 3))})
    online.add_dataset(BOBS, {"train.jsonl": jsonl(qa(TINY_TRAIN[:3]))}, private=True)
    online.add_dataset(ALICES_PRIVATE, {"train.jsonl": jsonl(qa(TINY_TRAIN[:3]))}, private=True)
    return online


def tokens_sent(hub) -> set:
    return {request.authorization for request in hub.requests}


def test_a_public_set_loads_with_its_shape_detected_and_its_commit(hub_sets):
    fetched = fetch_hub_rows(parse_hub_spec(f"hub:{PUBLIC}"), token=False)
    assert fetched.revision == hub_sets.repo(PUBLIC, "dataset").sha
    assert [row for _, row in fetched.rows] == qa(TINY_TRAIN)
    assert detect_columns(fetched.rows) == {"prompt": "question", "response": "answer"}

    loaded = load_examples([f"hub:{PUBLIC}:train"])  # the recipe's form, through the loader every caller uses
    assert [e["messages"][0]["content"] for e in loaded.examples] == [r["prompt"] for r in TINY_TRAIN]
    assert loaded.report.shape_counts == {"prompt/response": len(TINY_TRAIN)}
    assert loaded.report.revisions == {f"hub:{PUBLIC}:train": fetched.revision}
    assert fetched.revision in loaded.report.summary()
    assert "category" not in json.dumps(loaded.examples)  # a column no role uses is left out ...


def test_a_config_and_split_load_and_the_mapping_can_be_corrected(hub_sets):
    entry = f"hub:{MULTI}:hard:test"
    with pytest.raises(HubDatasetError, match="can't tell which columns") as caught:  # no shape fits q_text/a_text
        load_examples([entry])
    assert "q_text" in str(caught.value) and "?prompt=COLUMN&response=COLUMN" in str(caught.value)

    loaded = load_examples([f"{entry}?prompt=q_text&response=a_text"])
    assert [e["messages"][1]["content"] for e in loaded.examples] == [f"hard-test answer {i}." for i in range(3)]
    first = load_examples([f"hub:{MULTI}:easy:train?prompt=q_text&response=a_text&rows=2"]).examples
    assert [e["messages"][0]["content"] for e in first] == ["easy question 0?", "easy question 1?"]

    with pytest.raises(HubDatasetNotFoundError, match="no config 'medium'.*easy, hard"):
        load_examples([f"hub:{MULTI}:medium:train?prompt=q_text&response=a_text"])
    with pytest.raises(HubDatasetNotFoundError, match="no split 'validation'.*train, test"):
        load_examples([f"hub:{MULTI}:easy:validation?prompt=q_text&response=a_text"])
    with pytest.raises(HubDatasetError, match="no column 'nope'"):
        load_examples([f"hub:{MULTI}:easy:train?prompt=nope&response=a_text"])


def test_the_trainer_loads_a_hub_entry_and_its_run_records_the_commit(hub_sets, tmp_path):
    from tuning.data.chat_template import encode_for_training  # noqa: F401 -- what prepare_data tokenizes with
    from tuning.models.loading import load_tokenizer, resolve_model
    from tuning.runs.files import DATA_FILE, RUN_DATA_DIR, RUN_TRAIN_FILE, read_json
    from tuning.training.train import prepare_data

    recipe = recipe_from_dict({"data": {"train": [f"hub:{PUBLIC}:train"], "validation": [f"hub:{PUBLIC}:test"],
                                        "max_length": 64}})
    run_dir = tmp_path / "run"
    train, validation = prepare_data(recipe, load_tokenizer(resolve_model("embedded").path), run_dir)
    assert (len(train), len(validation)) == (len(TINY_TRAIN), 2)
    data = read_json(run_dir / DATA_FILE)
    sha = hub_sets.repo(PUBLIC, "dataset").sha
    assert data["train_files"] == [f"hub:{PUBLIC}:train"]
    assert f"hub:{PUBLIC}:train at revision {sha}" in data["train_report"]
    assert data["hub_revisions"] == {f"hub:{PUBLIC}:train": sha, f"hub:{PUBLIC}:test": sha}
    from tuning.hub.card import _data_source  # the model card links the set instead of printing "name:train"

    assert _data_source(f"hub:{PUBLIC}:train") == f"[{PUBLIC}](https://huggingface.co/datasets/{PUBLIC}) (train)"
    kept = (run_dir / RUN_DATA_DIR / RUN_TRAIN_FILE).read_text(encoding="utf-8")
    assert all(row["prompt"] in kept for row in TINY_TRAIN)


def test_a_recipe_refuses_a_malformed_hub_entry():
    for entry in ("hub:../x", "hub:a/b:c:d:e", "hub:a/b:train?prompt=q", "hub:a/b:train?rows=0"):
        with pytest.raises(ConfigError, match="data.validation"):
            recipe_from_dict({"data": {"validation": [entry]}})


def test_a_private_set_loads_with_the_visitors_token_and_without_it_says_so(hub_sets, monkeypatch):
    monkeypatch.setenv("KANTELE_SHARED", "1")  # a shared app: HF_TOKEN (the canary) is the owner's
    spec = parse_hub_spec(f"hub:{BOBS}")
    fetched = fetch_hub_rows(spec, token=dataset_token(BOB_TOKEN))
    assert len(fetched.rows) == 3
    assert tokens_sent(hub_sets) <= {f"Bearer {BOB_TOKEN}", None}

    hub_sets.requests.clear()
    with pytest.raises(HubDatasetNotFoundError, match=f"hub:{BOBS}:train: no such dataset.*read token"):
        fetch_hub_rows(spec, token=dataset_token(None))
    assert hub_sets.requests and tokens_sent(hub_sets) == {None}


def test_the_owners_token_never_loads_for_a_visitor(hub_sets, monkeypatch):
    """HF_TOKEN could read alice's private set; on a shared app a visitor without a token gets nothing with it."""
    assert len(fetch_hub_rows(parse_hub_spec(f"hub:{ALICES_PRIVATE}"), token=dataset_token(None)).rows) == 3  # local
    monkeypatch.setenv("KANTELE_SHARED", "1")
    hub_sets.requests.clear()
    assert dataset_token(None) is False and dataset_token("  ") is False
    with pytest.raises(HubDatasetNotFoundError):
        load_examples([f"hub:{ALICES_PRIVATE}:train"])  # the recipe's path (the trainer's process) chooses the same
    with pytest.raises(HubDatasetNotFoundError):
        fetch_hub_rows(parse_hub_spec(f"hub:{ALICES_PRIVATE}"), token=dataset_token(BOB_TOKEN))
    assert hub_sets.requests
    assert not [r for r in hub_sets.requests if CANARY in (r.authorization or "")]


def test_offline_and_unreachable_and_missing_say_which_and_the_fix(hub_sets, monkeypatch):
    spec = parse_hub_spec(f"hub:{PUBLIC}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubOfflineError, match=f"hub:{PUBLIC}:train: the Hub is switched off.*unset HF_HUB_OFFLINE"):
        fetch_hub_rows(spec, token=False)
    assert hub_sets.requests == []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    with pytest.raises(HubDatasetNotFoundError) as caught:
        fetch_hub_rows(parse_hub_spec("hub:alice/no-such-set:train"), token=False)
    assert str(caught.value).startswith("hub:alice/no-such-set:train: no such dataset on the Hub")
    assert "\n" not in str(caught.value)

    from helpers import free_port  # a port nothing listens on: the Hub can't be reached

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(HubOfflineError, match=f"hub:{PUBLIC}:train: can't reach the Hub.*check the network"):
        fetch_hub_rows(spec, token=False)


def test_hostile_ids_are_refused_before_any_request(hub_sets, tmp_path):
    for hostile in HOSTILE:
        with pytest.raises(HubDatasetError, match="not a Hub dataset id|not a .* name|too many"):
            hub_spec(hostile)
        if hostile != "a/b:c":  # in a recipe, hub:a/b:c:train is config c of a/b
            with pytest.raises(HubDatasetError):
                load_examples([f"hub:{hostile}:train"])
    (tmp_path / "alice" / "kalevala-qa").mkdir(parents=True)  # a local folder of the same name is never read
    for bad_part in ("a/b:../../etc:train", "a/b:train:x:y", "a/b@../main:train", "a/b:train?prompt=a&x=b"):
        with pytest.raises(HubDatasetError):
            parse_hub_spec(f"hub:{bad_part}")
    assert hub_sets.requests == []


def test_a_visitor_is_capped_before_the_files_are_read(hub_sets, monkeypatch):
    monkeypatch.setenv("KANTELE_SHARED", "1")
    big = hub_sets.add_dataset("mallory/huge", {"train.jsonl": jsonl(qa(TINY_TRAIN))})
    big.claimed_sizes["train.jsonl"] = 40 * 10**9
    with pytest.raises(HubDatasetError, match="over the limit"):
        fetch_hub_rows(parse_hub_spec("hub:mallory/huge"), token=False, limits=upload_limits())
    assert not hub_sets.calls("/resolve/", method="GET")  # sized from the Hub's listing, never downloaded

    monkeypatch.setenv("KANTELE_CAP_REQUEST_ROWS", "5")
    with pytest.raises(HubDatasetError, match="over the limit of 5 rows per load.*rows=5"):
        fetch_hub_rows(parse_hub_spec(f"hub:{PUBLIC}"), token=False, limits=upload_limits())
    taken = fetch_hub_rows(parse_hub_spec(f"hub:{PUBLIC}:train?rows=5"), token=False, limits=upload_limits())
    assert len(taken.rows) == 5


def test_a_loading_script_is_refused(hub_sets):
    hub_sets.add_dataset("mallory/script", {"script.py": b"import os; os.system('echo pwned')\n",
                                            "train.jsonl": jsonl(qa(TINY_TRAIN))})
    with pytest.raises(HubDatasetError, match="loading script"):
        fetch_hub_rows(parse_hub_spec("hub:mallory/script"), token=False)


def test_the_workspace_keeps_the_rows_and_a_corrected_mapping_needs_no_download(hub_sets, tmp_path):
    workspace = new_workspace(tmp_path / "ws")
    load = load_hub_into_workspace(workspace, hub_spec(MULTI, "train", "easy"), token=False)
    assert load.mapping == {} and load.kept_file is None and load.columns == ["q_text", "a_text"]
    hub_sets.requests.clear()
    load = remap_hub_load(workspace, load, {"prompt": "q_text", "response": "a_text"})
    assert hub_sets.requests == []
    assert load.kept_file.parent == workspace / UPLOADS_DIR and load.revision[:12] in load.kept_file.name
    assert parse_hub_spec(load.recipe_entry).columns == {"prompt": "q_text", "response": "a_text"}
    assert load.recipe_entry.startswith(f"hub:{MULTI}@{load.revision}:easy:train?")
    assert len(load_examples([load.kept_file]).examples) == 4


def test_the_data_tab_panel_loads_shows_the_mapping_inert_and_takes_a_correction(hub_sets, tmp_path, monkeypatch):
    import gradio as gr

    from ui import data_tab, hub_dataset_panel

    monkeypatch.setattr(data_tab, "WORKSPACES_DIR", tmp_path / "ws")
    monkeypatch.setattr(hub_dataset_panel, "WORKSPACES_DIR", tmp_path / "ws")
    monkeypatch.setattr(data_tab, "count_tokens_with", lambda: lambda messages: 1)
    beacon = "![x](http://127.0.0.1:9/beacon.png) <img src=x onerror=alert(1)>"
    rows = [{"q_text": f"{beacon} question {i}?", "a_text": f"answer {i}.", "lang": "en"} for i in range(4)]
    hub_sets.add_dataset("mallory/beacons", {"train.jsonl": jsonl(rows)})
    state = data_tab.empty_dataset_state()

    out = hub_dataset_panel.load_from_hub(data_tab.prepare_and_show, "mallory/beacons", "", "train", None, "", 0.25,
                                          state)
    load, note = out[7], out[8]
    assert load.mapping == {} and "pick the question and answer columns" in note
    assert out[:7] == [gr.update()] * 7  # the dataset is untouched until the columns are picked
    out = hub_dataset_panel.apply_mapping(data_tab.prepare_and_show, load, 0.25, state, "q_text", "", "a_text", "", "")
    new_state, preview, errors, _, _, _, _, load, note, table, *drops = out
    assert errors == "" and len(drops) == 5
    assert Path(new_state["train_file"]).is_file() and new_state["name"] == "hub:mallory/beacons:train"
    assert any(Path(source).parent.name == UPLOADS_DIR for source in new_state["sources"])  # joined like an upload
    assert [row[0] for row in table] == ["Question (prompt)", "Answer (response)"]
    shown = table[0][2] + note
    assert "![" not in shown and "<img" not in shown  # inert: no image fetched, no HTML
    assert "`lang`" in note and "data.train: [hub:mallory/beacons@" in note  # nothing left out unsaid

    out = hub_dataset_panel.load_from_hub(data_tab.prepare_and_show, "../../etc", "", "train", None, "", 0.25, state)
    assert out[7] is None and "not a Hub dataset id" in out[8]
    out = hub_dataset_panel.load_from_hub(data_tab.prepare_and_show, PUBLIC, "", "train", 3, "hf_Visitor0123456789",
                                          0.25, state)
    assert len(out[0]["rows"]) == 3 and out[7].mapping == {"prompt": "question", "response": "answer"}
    assert "hf_Visitor0123456789" not in json.dumps([str(part) for part in out])
