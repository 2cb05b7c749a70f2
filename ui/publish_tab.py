"""Publish: see exactly what goes to the Hub (files + rendered card), then push it; export for Ollama."""

from __future__ import annotations

import os

import gradio as gr

from tuning.errors import KanteleError
from tuning.guards.caps import is_shared
from tuning.hub.auth import on_space, resolve_token
from tuning.hub.push import HubError, plan_pushes, push_plans
from tuning.portable.gguf import DEFAULT_GGUF_DTYPE
from tuning.runs.owner import Owner
from ui.messages import for_visitor
from ui.state import RUNS
from ui.storage_note import storage_note
from ui.untrusted import inert_markdown

INCLUDE_DATASET = "Dataset (the run's train/validation rows + dataset card)"
INCLUDE_MERGED = "Merged full model (adapter folded into the base)"
INCLUDE_CHOICES = [INCLUDE_DATASET, INCLUDE_MERGED]
REPO_PLACEHOLDER = "YOUR-NAME/kalevala-adapter"
EXPORT_DIR = "export"  # inside the run folder: the export belongs to its run
# The GGUF weight types (tuning.portable.gguf.GGUF_DTYPES), for people; f16 stays the default. Sizes and
# faithfulness measured on the Kalevala run: bench/gguf_quality.py.
EXPORT_DTYPES = [("f16: 16-bit floats", "f16"), ("q8_0: 8-bit, about half the f16 size", "q8_0"),
                 ("q5_0: 5-bit, about 40% of f16; answers drift more", "q5_0"),
                 ("q4_0: 4-bit, about a third of f16; answers drift most", "q4_0"),
                 ("f32: 32-bit floats, twice f16", "f32")]
TOKEN_HELP = ("Write token from huggingface.co/settings/tokens. Used for this push only: never stored, "
              "logged or shown again.")


def sign_in_available() -> bool:
    """A Space with hf_oauth on (the Hub then sets OAUTH_CLIENT_ID): gradio's LoginButton works there. Elsewhere
    gradio would mock it with the machine's own login, which is no sign-in at all."""
    return on_space() and bool(os.environ.get("OAUTH_CLIENT_ID"))


def ambient_token_note() -> str:
    """Where a push's token comes from when the visitor gives none."""
    if is_shared():
        how = "Sign in with Hugging Face (button) or paste a write token" if sign_in_available() \
            else "Paste a write token"
        owner = "Space owner" if on_space() else "app's owner"
        return f"{how}: adapters are published under your name, never the {owner}'s."
    return ("No token pasted: the push uses `HF_TOKEN` or your `hf auth login` from the machine running the app.")


def dataset_repo_for(repo_id: str) -> str:
    """A default dataset repo next to the model repo."""
    return f"{repo_id.strip()}-data" if repo_id.strip() else ""


def plan_for(owner: Owner | None, run_id: str | None, repo_id: str, include: list[str], dataset_repo: str):
    """The push plans for the current choices (HubError when something is missing or the run isn't theirs)."""
    if not run_id:
        raise HubError("finish a training run first: its adapter and card appear here")
    try:
        run_dir = RUNS.run(run_id, owner).path
    except ValueError as error:
        raise HubError(str(error)) from None
    return plan_pushes(run_dir, repo_id.strip() or REPO_PLACEHOLDER,
                       dataset_repo=dataset_repo.strip() if INCLUDE_DATASET in include else None,
                       merged=INCLUDE_MERGED in include)


def show_plan(owner, run_id, repo_id, include, dataset_repo):
    """Dry run: every file each repository will receive, and the card as the Hub will show it."""
    try:
        plans = plan_for(owner, run_id, repo_id, include or [], dataset_repo or "")
    except KanteleError as error:
        return [], f"**{for_visitor(error)}**"
    rows = [[plan.repo_type, plan.repo_id, name, size] for plan in plans for name, size in plan.describe()]
    return rows, card_preview(plans[0].card())


def card_preview(card: str) -> str:
    """The card as a page shows it on the Hub: metadata in a box, then the body -- inert, since its answers
    and names come from the run (an imported one's scorecard too): images and HTML show as their source."""
    _, front, body = card.split("---\n", 2)
    front = front.replace("`", "'")  # a name holding ``` would end the code box early
    return f"**Card metadata**\n```yaml\n{front}```\n{inert_markdown(body)}"


def push(owner, run_id, repo_id, private, include, dataset_repo, pasted_token,
         oauth_token: gr.OAuthToken | None, progress=gr.Progress(track_tqdm=True)):
    """Check the token, then push; the result links to what was published. Errors never echo the token."""
    try:
        plans = plan_for(owner, run_id, repo_id, include or [], dataset_repo or "")
        if not repo_id.strip() or repo_id.strip() == REPO_PLACEHOLDER:
            raise HubError("name the repository first, e.g. your-name/kalevala-adapter")
        token = resolve_token(pasted_token or (oauth_token.token if oauth_token else None),
                              allow_ambient=not is_shared())
        urls = push_plans(plans, token=token, private=bool(private),
                          progress=lambda done, total, what: progress((done, total), desc=what))
    except KanteleError as error:
        return f"❌ Not pushed: {for_visitor(error)}"
    links = "\n".join(f"- [{plan.repo_id}]({plan.repo_url()}) — [this commit]({url})"
                      for plan, url in zip(plans, urls))
    return f"✅ Pushed{' (private)' if private else ''}:\n{links}"


def export_for_ollama(owner: Owner | None, run_id: str | None, dtype: str = DEFAULT_GGUF_DTYPE,
                      progress=gr.Progress()):
    """Merge + GGUF (of the chosen weight type) + Modelfile into the run's export/ folder; offer the GGUF and
    Modelfile for download."""
    from tuning.portable.export import export_run

    if not run_id:
        return "Finish a training run first.", None
    progress(0, desc=f"merging the adapter into the base, then writing the {dtype} GGUF")
    try:
        run_dir = RUNS.run(run_id, owner).path
        result = export_run(run_dir, run_dir / EXPORT_DIR, dtype=dtype or DEFAULT_GGUF_DTYPE)
    except (KanteleError, OSError, ValueError) as error:
        return f"❌ Export failed: {for_visitor(error)}", None
    fallbacks = "".join(f"\n- F16 instead of {result.dtype}: {line}" for line in result.gguf_fallbacks)
    return (f"✅ Exported in {sum(result.seconds.values()):.0f} s: {result.gguf.name}, "
            f"{result.gguf.stat().st_size / 1e6:.0f} MB.{fallbacks}\nDownload both files into one folder, then:\n"
            f"```sh\nollama create {result.name} -f Modelfile\nollama run {result.name}\n```",
            [str(result.gguf), str(result.modelfile)])


def refresh_runs(owner: Owner | None, current: str | None):
    """Dropdown update listing the asker's finished runs."""
    runs = RUNS.finished(owner)
    return gr.update(choices=runs, value=current if current in runs else (runs[0] if runs else None))


def build_publish_tab(owner_state: gr.State) -> dict:
    """The Publish tab."""
    with gr.Tab("Publish", id="publish") as tab:
        storage_note("publish-storage-note")
        with gr.Row():
            run = gr.Dropdown([], label="Run", elem_id="publish-run")
            repo = gr.Textbox(placeholder=REPO_PLACEHOLDER, label="Model repository (user/name)",
                              elem_id="publish-repo")
            private = gr.Checkbox(True, label="Private", elem_id="publish-private")
        with gr.Row():
            include = gr.CheckboxGroup(INCLUDE_CHOICES, label="Also publish (the adapter + model card always go)",
                                       elem_id="publish-include")
            dataset_repo = gr.Textbox(label="Dataset repository (user/name)", elem_id="publish-dataset-repo")
        with gr.Row():
            if sign_in_available():
                gr.LoginButton()
            token = gr.Textbox(type="password", label="Hugging Face write token (optional)", info=TOKEN_HELP,
                               elem_id="publish-token")
        gr.Markdown(ambient_token_note())
        files = gr.Dataframe(headers=["kind", "repository", "file", "size"], label="Files to upload (dry run)",
                             interactive=False, elem_id="publish-files")
        push_button = gr.Button("Push to the Hub", variant="primary", elem_id="push-button")
        result = gr.Markdown(elem_id="push-result")
        card = gr.Markdown(label="Model card", elem_id="model-card")
        with gr.Accordion("Export for Ollama / llama.cpp (merged model as GGUF)", open=False):
            export_dtype = gr.Dropdown(EXPORT_DTYPES, value=DEFAULT_GGUF_DTYPE, label="GGUF weights",
                                       info="quantized types shrink the file; norms stay 32-bit either way",
                                       elem_id="export-dtype")
            export_button = gr.Button("Export GGUF + Modelfile", elem_id="export-button")
            export_status = gr.Markdown(elem_id="export-status")
            export_files = gr.File(label="Files", file_count="multiple", interactive=False, elem_id="export-files")
        plan_inputs = [owner_state, run, repo, include, dataset_repo]
        tab.select(refresh_runs, [owner_state, run], run)
        for trigger in (run.change, include.change, repo.submit, dataset_repo.blur):
            trigger(show_plan, plan_inputs, [files, card])
        repo.blur(lambda r, d: d or dataset_repo_for(r), [repo, dataset_repo], dataset_repo).then(
            show_plan, plan_inputs, [files, card])
        push_button.click(push, [owner_state, run, repo, private, include, dataset_repo, token], result)
        export_button.click(export_for_ollama, [owner_state, run, export_dtype], [export_status, export_files])
    return {"run": run}
