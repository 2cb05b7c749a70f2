"""Push a run to the Hugging Face Hub: the adapter with its model card, optionally the dataset.

Every Hub call goes through huggingface_hub. A push is planned first (the exact files and the card,
shown by --dry-run and the Publish tab), the token is checked for identity and write access, the repos
are created if missing, and each repository gets its files in ONE commit named after the run -- a commit
lands whole or not at all, a push never touches the run folder, and a failed push can simply be retried.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tuning.config import DPO
from tuning.errors import first_line
from tuning.hub.auth import HubError, check_repo_id, check_write_access, explain_hub_error, resolve_token, whoami
from tuning.hub.card import render_dataset_card, render_model_card
from tuning.runs.files import (
    ADAPTER_DIR,
    CARD_FILE,
    CHECKPOINTS_DIR,
    RUN_DATA_DIR,
    RUN_TRAIN_FILE,
    RUN_VALIDATION_FILE,
)
from tuning.runs.run import Run
from tuning.training.curves import LOSS_PNG

MODEL, DATASET, SPACE = "model", "dataset", "space"
ADAPTER_CONFIG = "adapter_config.json"
MERGED_SUFFIX = "-merged"  # the merged model gets its own repo: PEFT and transformers would both claim one repo
MERGED_FILES = "model*.safetensors, config.json, generation_config.json, tokenizer files"
URL_PREFIXES = {MODEL: "", DATASET: "datasets/", SPACE: "spaces/"}


@dataclass
class PushPlan:
    """One commit: files to upload (local path or generated text) under their names in the repo."""

    repo_id: str
    repo_type: str
    commit_message: str
    files: dict[str, Path | str] = field(default_factory=dict)  # path in repo -> local file or text
    merge_from: Path | None = None  # a run whose adapter is merged into its base at push time

    def describe(self) -> list[tuple[str, str]]:
        """(path in repo, size or 'generated') for people."""
        rows = [(MERGED_FILES, "merged from the run when you push")] if self.merge_from else []
        for name, source in sorted(self.files.items()):
            rows.append((name, f"{source.stat().st_size / 1024:,.1f} KB" if isinstance(source, Path)
                         else f"generated, {len(source.encode('utf-8')) / 1024:,.1f} KB"))
        return rows

    def card(self) -> str:
        """The README.md that goes with this commit."""
        return self.files[CARD_FILE]

    def repo_url(self, endpoint: str | None = None) -> str:
        """The repository's page on the Hub."""
        from huggingface_hub import constants

        return f"{endpoint or constants.ENDPOINT}/{URL_PREFIXES[self.repo_type]}{self.repo_id}"


def plan_adapter_push(run_dir: str | Path, repo_id: str, dataset_repo: str | None = None) -> PushPlan:
    """The adapter files, the loss curve and the model card of a finished run."""
    check_repo_id(repo_id)
    if dataset_repo:
        check_repo_id(dataset_repo)
    run_dir = Path(run_dir)
    adapter = run_dir / ADAPTER_DIR
    if not (adapter / "adapter_config.json").is_file():
        raise HubError(f"{run_dir.name} has no adapter yet -- push a finished (or stopped) run")
    plan = PushPlan(repo_id, MODEL, f"Kantele: adapter from run {run_dir.name}")
    for path in sorted(adapter.rglob("*")):
        # PEFT writes a stub README.md into the adapter folder; our card replaces it.
        if path.is_file() and CHECKPOINTS_DIR not in path.parts and path.name != CARD_FILE:
            plan.files[path.relative_to(adapter).as_posix()] = path
    plan.files[ADAPTER_CONFIG] = _adapter_config_for_hub(run_dir)
    if (run_dir / LOSS_PNG).is_file():
        plan.files[LOSS_PNG] = run_dir / LOSS_PNG
    plan.files[CARD_FILE] = render_model_card(run_dir, repo_id, dataset_repo=dataset_repo)
    return plan


def _adapter_config_for_hub(run_dir: Path) -> Path | str:
    """adapter_config.json with base_model_name_or_path pointing at the Hub id instead of this machine's
    folder, so AutoPeftModelForCausalLM.from_pretrained(repo) finds the base anywhere."""
    import json

    path = run_dir / ADAPTER_DIR / ADAPTER_CONFIG
    base = Run(run_dir).base_model()
    config = json.loads(path.read_text(encoding="utf-8"))
    if not base.hub_id or config.get("base_model_name_or_path") == base.hub_id:
        return path
    config["base_model_name_or_path"] = base.hub_id
    if base.revision and base.name != "embedded":
        config["revision"] = base.revision
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def plan_dataset_push(run_dir: str | Path, repo_id: str) -> PushPlan:
    """The exact train/validation rows the run saw, with a dataset card; a DPO run's preference pairs (its data/
    train.jsonl is its parent's rows, copied for the scorecard: the parent's to publish, not this run's)."""
    check_repo_id(repo_id)
    run_dir = Path(run_dir)
    data = run_dir / RUN_DATA_DIR
    if Run(run_dir).data_summary().get("method") == DPO:
        pairs = Run(run_dir).preferences_file
        if not pairs.is_file():
            raise HubError(f"{run_dir.name} has no copy of its preference pairs ({RUN_DATA_DIR}/{pairs.name})")
        plan = PushPlan(repo_id, DATASET, f"Kantele: preference pairs of run {run_dir.name}")
        plan.files[f"data/{pairs.name}"] = pairs
        plan.files[CARD_FILE] = render_dataset_card(run_dir, repo_id)
        return plan
    if not (data / RUN_TRAIN_FILE).is_file():
        raise HubError(f"{run_dir.name} has no copy of its data ({RUN_DATA_DIR}/{RUN_TRAIN_FILE})")
    plan = PushPlan(repo_id, DATASET, f"Kantele: data of run {run_dir.name}")
    for name in (RUN_TRAIN_FILE, RUN_VALIDATION_FILE):
        if (data / name).is_file():
            plan.files[f"data/{name}"] = data / name
    plan.files[CARD_FILE] = render_dataset_card(run_dir, repo_id)
    return plan


def plan_merged_push(run_dir: str | Path, repo_id: str, dataset_repo: str | None = None) -> PushPlan:
    """The full model (base + adapter folded in) with its own card; the weights are merged at push time."""
    check_repo_id(repo_id)
    run_dir = Path(run_dir)
    if not (run_dir / ADAPTER_DIR / "adapter_config.json").is_file():
        raise HubError(f"{run_dir.name} has no adapter yet -- push a finished (or stopped) run")
    plan = PushPlan(repo_id, MODEL, f"Kantele: merged model from run {run_dir.name}", merge_from=run_dir)
    if (run_dir / LOSS_PNG).is_file():
        plan.files[LOSS_PNG] = run_dir / LOSS_PNG
    plan.files[CARD_FILE] = render_model_card(run_dir, repo_id, dataset_repo=dataset_repo, merged=True)
    return plan


def plan_pushes(run_dir: str | Path, repo_id: str, dataset_repo: str | None = None,
                merged: bool = False) -> list[PushPlan]:
    """Everything one Publish click sends: the adapter, optionally the dataset and the merged model."""
    plans = [plan_adapter_push(run_dir, repo_id, dataset_repo=dataset_repo)]
    if dataset_repo:
        plans.append(plan_dataset_push(run_dir, dataset_repo))
    if merged:
        plans.append(plan_merged_push(run_dir, repo_id + MERGED_SUFFIX, dataset_repo=dataset_repo))
    return plans


def validate_card(card: str, repo_type: str = MODEL) -> None:
    """Check the card's YAML metadata with huggingface_hub's card classes (locally: no Hub call)."""
    import yaml
    from huggingface_hub import DatasetCard, ModelCard, SpaceCard

    try:
        parsed = {MODEL: ModelCard, DATASET: DatasetCard, SPACE: SpaceCard}[repo_type](card)
    except (ValueError, yaml.YAMLError) as exc:  # a YAML syntax error is not a ValueError
        reason = first_line(exc)
        raise HubError(f"the {repo_type} card's metadata is not valid YAML: {reason}") from None
    metadata = parsed.data.to_dict()
    if repo_type == MODEL:
        missing = [key for key in ("base_model", "library_name", "pipeline_tag", "license") if not metadata.get(key)]
        if missing:
            raise HubError(f"the model card lacks {', '.join(missing)} in its metadata")


def push_plans(plans: list[PushPlan], token: str | None = None, private: bool = False, progress=None,
               endpoint: str | None = None, space_options: dict | None = None) -> list[str]:
    """Check the cards and the token, create the repos if missing, then upload each plan in one commit.

    Datasets go first, so the model card's link to its dataset never points at nothing. Returns the
    commit URLs in the order of `plans`. `endpoint` overrides HF_ENDPOINT (tests point it at a fake Hub);
    `space_options` (space_sdk, space_hardware...) go to create_repo for Space plans.
    """
    from huggingface_hub import HfApi

    token = resolve_token(token)
    for plan in plans:
        validate_card(plan.files[CARD_FILE], plan.repo_type)
        check_repo_id(plan.repo_id)
    who = whoami(token, endpoint)  # once: the Hub rate-limits whoami hard
    for plan in plans:
        check_write_access(plan.repo_id, token, plan.repo_type, endpoint, who=who)
    api = HfApi(endpoint=endpoint, token=token)
    for plan in plans:  # every repo exists (and is as private as asked) before the first upload
        _call(token, endpoint, f"creating {plan.repo_type} {plan.repo_id}", _ensure_repo, api, plan, private,
              space_options if plan.repo_type == SPACE else None)
    order = sorted(range(len(plans)), key=lambda i: plans[i].repo_type != DATASET)
    urls: dict[int, str] = {}
    with tempfile.TemporaryDirectory(prefix="kantele-merge-") as scratch:
        for done, index in enumerate(order):
            plan = plans[index]
            if progress:
                progress(done, len(plans), f"pushing {plan.repo_type} {plan.repo_id}")
            if plan.merge_from:
                plan = _with_merged_weights(plan, Path(scratch) / str(index))
            urls[index] = _call(token, endpoint, f"pushing to {plan.repo_id}", _commit, api, plan)
    if progress:
        progress(len(plans), len(plans), "done")
    return [urls[index] for index in range(len(plans))]


def _with_merged_weights(plan: PushPlan, scratch: Path) -> PushPlan:
    """The plan plus the merged model's files, written to a scratch folder (never into the run folder)."""
    from tuning.portable.export import ExportError, merge_run

    try:
        merged = merge_run(plan.merge_from, scratch)
    except (ExportError, OSError) as exc:
        raise HubError(f"merging {plan.merge_from.name} for {plan.repo_id} failed: {exc}") from None
    files = {path.relative_to(merged).as_posix(): path for path in sorted(merged.rglob("*"))
             if path.is_file() and path.name != CARD_FILE}
    return PushPlan(plan.repo_id, plan.repo_type, plan.commit_message, {**files, **plan.files})


def _ensure_repo(api, plan: PushPlan, private: bool, space_options: dict | None = None) -> None:
    """Create the repo unless it exists; refuse to upload into an existing public repo when asked for private."""
    # private=None (not False) when not asked: the account's default visibility decides for a new repo.
    api.create_repo(plan.repo_id, repo_type=plan.repo_type, private=True if private else None, exist_ok=True,
                    **(space_options or {}))
    if private and not api.repo_info(plan.repo_id, repo_type=plan.repo_type).private:
        raise HubError(f"{plan.repo_type} {plan.repo_id} already exists and is public; pushing as private doesn't "
                       "change an existing repository -- make it private in its settings on the Hub, "
                       "or pick a new name")


def _commit(api, plan: PushPlan) -> str:
    from huggingface_hub import CommitOperationAdd

    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=_content(source))
                  for name, source in plan.files.items()]
    commit = api.create_commit(plan.repo_id, operations, commit_message=plan.commit_message, repo_type=plan.repo_type)
    return commit.commit_url


def _call(token: str, endpoint: str | None, action: str, function, *args):
    """function(*args), with any Hub, network or protocol error turned into a HubError without the token."""
    try:
        return function(*args)
    except HubError:
        raise
    except Exception as exc:  # noqa: BLE001 -- any failure of the Hub client: one HubError, token scrubbed
        raise HubError(explain_hub_error(exc, token, action, endpoint)) from None


def _content(source: Path | str):
    return str(source) if isinstance(source, Path) else source.encode("utf-8")
