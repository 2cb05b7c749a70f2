"""Data tab, "From the Hugging Face Hub": a dataset by id -> its columns' roles detected (and correctable) -> the
workspace's dataset, as an upload. The Gradio wiring only: fetching, caps, tokens and mapping are
tuning/data/hub_dataset.py's (and hub_workspace.py's), as they are for a recipe's `hub:` entry."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from tuning.data.files import upload_limits
from tuning.data.hub_dataset import dataset_token
from tuning.data.hub_spec import ROLES, hub_spec
from tuning.data.hub_workspace import HubLoad, load_hub_into_workspace, remap_hub_load
from tuning.data.workspace import new_workspace
from tuning.errors import KanteleError
from tuning.guards.caps import is_shared
from ui.messages import for_visitor
from ui.state import WORKSPACES_DIR
from ui.untrusted import inert_markdown

ROLE_LABELS = {"prompt": "Question (prompt)", "input": "Extra input (added to the question)",
               "response": "Answer (response)", "system": "System prompt", "messages": "Conversation (messages)"}
MAPPING_COLUMNS = ["role", "column", "first row"]
SHOWN_CHARS = 120  # of a first-row value in the mapping preview
DATA_OUTPUTS = 7  # what the Data tab's prepare_and_show returns


def token_note() -> str:
    """Whose token a load uses when the visitor gives none."""
    if is_shared():
        return ("Private or gated set? Paste your own read token: it is used for this load only and never stored. "
                "Without one, only public sets load.")
    return "Without a token, private sets load with `HF_TOKEN` or your `hf auth login` on this machine."


def _first_value(value) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return inert_markdown(text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…")


def mapping_rows(load: HubLoad) -> list[list[str]]:
    """The preview of the mapping: each role, its column and what the first row holds there (inert)."""
    return [[ROLE_LABELS[role], inert_markdown(str(column)), _first_value(load.first_row.get(column))]
            for role, column in load.mapping.items()]


def describe(load: HubLoad) -> str:
    """Where the rows came from, what is left out, and the same load as a recipe entry (inert)."""
    lines = [f"Loaded **{len(load.columns)} columns** of `{load.spec.label}` at revision `{load.revision}`."]
    if not load.mapping:
        lines.append("No known shape fits its columns: pick the question and answer columns (or one conversation "
                     "column) below, then **Apply this mapping**.")
    else:
        if load.unused:
            lines.append("Not used: " + ", ".join(f"`{name}`" for name in load.unused[:30]) + ".")
        lines.append(f"In a recipe: `data.train: [{load.recipe_entry}]`")
    return inert_markdown("\n\n".join(lines))


def _panel(load: HubLoad | None, note: str):
    choices = [""] + [str(c) for c in load.columns] if load else [""]
    mapping = load.mapping if load else {}
    drops = [gr.update(choices=choices, value=mapping.get(role, "")) for role in ROLES]
    return [load, note, mapping_rows(load) if load else [], *drops]


def _unchanged(load: HubLoad | None, note: str):
    return [*[gr.update()] * DATA_OUTPUTS, load, note, gr.update(), *[gr.update()] * len(ROLES)]


def _visitor_token(pasted: str, oauth_token) -> str | None:
    return (pasted or "").strip() or (oauth_token.token if oauth_token else None)


def _message(error: KanteleError, token: str | None) -> str:
    text = str(error).replace(token, "***") if token else str(error)
    return f"❌ Nothing was loaded: {for_visitor(text)}"


def _show(prepare_and_show, workspace: Path, load: HubLoad, fraction, state: dict):
    outputs = prepare_and_show(workspace, [load.kept_file], [], fraction, state, load.spec.label)
    return [*outputs, *_panel(load, describe(load))]


def load_from_hub(prepare_and_show, repo_id, config, split, rows, pasted_token, fraction, state: dict,
                  oauth_token=None) -> list:
    """Fetch the split (with the visitor's token, or none on a shared app), keep it in their workspace, and show
    its mapping and, when the roles are known, the cleaned dataset."""
    token = _visitor_token(pasted_token, oauth_token)
    try:
        spec = hub_spec(repo_id, split, config, rows=int(rows) if rows else None)
        workspace = Path(state.get("workspace") or new_workspace(WORKSPACES_DIR))
        load = load_hub_into_workspace(workspace, spec, dataset_token(token), upload_limits())
    except KanteleError as error:
        return _unchanged(None, _message(error, token))
    if load.kept_file is None:  # no shape fits: the visitor picks the columns
        return [*[gr.update()] * DATA_OUTPUTS, *_panel(load, describe(load))]
    return _show(prepare_and_show, workspace, load, fraction, state)


def apply_mapping(prepare_and_show, load: HubLoad | None, fraction, state: dict, *columns) -> list:
    """Map the kept rows again as picked (no second download) and show the dataset they make."""
    if load is None:
        return _unchanged(None, "Load a dataset from the Hub first.")
    workspace = Path(state.get("workspace") or load.raw_file.parents[1])
    try:
        load = remap_hub_load(workspace, load, dict(zip(ROLES, columns, strict=True)), upload_limits())
    except KanteleError as error:
        return _unchanged(load, _message(error, None))
    return _show(prepare_and_show, workspace, load, fraction, state)


def build_hub_dataset_panel(dataset_state: gr.State, data_outputs: list, prepare_and_show, fraction) -> None:
    """The panel; `data_outputs` are the Data tab's outputs that `prepare_and_show` fills, `fraction` its
    held-out slider."""
    hub_state = gr.State(None)

    def load_clicked(repo_id, config, split, rows, pasted_token, fraction_value, state: dict,
                     oauth_token: gr.OAuthToken | None):  # the type hint is how gradio passes the sign-in token
        return load_from_hub(prepare_and_show, repo_id, config, split, rows, pasted_token, fraction_value, state,
                             oauth_token)

    def apply_clicked(load, fraction_value, state: dict, *columns):
        return apply_mapping(prepare_and_show, load, fraction_value, state, *columns)

    with gr.Accordion("From the Hugging Face Hub", open=False, elem_id="hub-dataset-panel"):
        gr.Markdown("Load a dataset by its Hub id. Its columns are matched to question and answer as an upload's "
                    "are; correct the match below if it is wrong. " + token_note())
        with gr.Row():
            repo = gr.Textbox(label="Dataset id", placeholder="OWNER/NAME", elem_id="hub-dataset-id")
            config = gr.Textbox(label="Config (optional)", elem_id="hub-dataset-config")
            split = gr.Textbox(label="Split", value="train", elem_id="hub-dataset-split")
            rows = gr.Number(None, label="Rows (the first N; empty: all)", precision=0, minimum=1,
                             elem_id="hub-dataset-rows")
        token = gr.Textbox(type="password", label="Your Hugging Face read token (optional)",
                           elem_id="hub-dataset-token")
        load = gr.Button("Load from the Hub", elem_id="hub-dataset-load")
        note = gr.Markdown(elem_id="hub-dataset-note")
        mapping = gr.Dataframe(headers=MAPPING_COLUMNS, label="Detected mapping", interactive=False, wrap=True,
                               elem_id="hub-dataset-mapping")
        with gr.Row():
            drops = [gr.Dropdown([""], value="", label=ROLE_LABELS[role], elem_id=f"hub-dataset-{role}")
                     for role in ROLES]
        apply = gr.Button("Apply this mapping", elem_id="hub-dataset-apply")
    outputs = [*data_outputs, hub_state, note, mapping, *drops]
    load.click(load_clicked, [repo, config, split, rows, token, fraction, dataset_state], outputs)
    apply.click(apply_clicked, [hub_state, fraction, dataset_state, *drops], outputs)
