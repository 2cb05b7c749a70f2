"""`python -m tuning deploy --space USER/NAME`: Kantele itself as a Gradio Space, from spaces.yaml.

spaces.yaml is the one place the Space's settings live; the Space's README front matter is rendered
from it, so the two can't drift. The app's files go up in one commit (like an adapter push), then the
Space gets its hardware request, the default-model variable and the HF_TOKEN secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import get_type_hints

import yaml

from tuning.config import ConfigError, check_keys, coerce_value
from tuning.hardware.device import ZEROGPU_REASON, is_zerogpu
from tuning.hub.auth import HubError, explain_hub_error, resolve_token
from tuning.hub.push import SPACE, PushPlan
from tuning.models.loading import DEFAULT_MODEL_ENV
from tuning.runs.files import CARD_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]
SPACE_SETTINGS_FILE = "spaces.yaml"
TOKEN_SECRET = "HF_TOKEN"
# What a Space needs to run the app: code, recipes and the worked example. Tests, benches, docs and
# runs stay home (runs may hold a visitor's private data). The accelerate and SLURM files go into the
# Train tab's cluster bundles.
APP_FILE_PATTERNS = ("app.py", "requirements.txt", SPACE_SETTINGS_FILE, "tuning/**/*.py", "ui/*.py",
                     "configs/*.yaml", "configs/accelerate/*.yaml", "configs/slurm/*.sbatch", "datasets/kalevala/*")
# Visitors publish under their own name: "Sign in with Hugging Face" asks for these scopes.
OAUTH_SCOPES = ("write-repos", "manage-repos")


@dataclass
class SpaceSettings:
    """The keys of spaces.yaml (see the comments there)."""

    title: str = "Kantele"
    emoji: str = "🎻"
    colorFrom: str = "blue"  # noqa: N815 -- the Hub's own key names
    colorTo: str = "indigo"  # noqa: N815
    sdk: str = "gradio"
    sdk_version: str = ""
    python_version: str = "3.11"
    app_file: str = "app.py"
    hardware: str = "cpu-basic"
    default_model: str = "auto"
    short_description: str = ""
    license: str = "apache-2.0"
    secrets: list[str] = field(default_factory=lambda: [TOKEN_SECRET])


def read_space_settings(path: str | Path = REPO_ROOT / SPACE_SETTINGS_FILE) -> SpaceSettings:
    """spaces.yaml as SpaceSettings; unknown keys and wrong types are a ConfigError naming the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError:
        raise ConfigError(f"{path}: no such file -- deploy runs from a Kantele checkout") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    check_keys("", raw, SpaceSettings, str(path))
    hints = get_type_hints(SpaceSettings)
    values = {key: coerce_value(value, hints[key], key, str(path)) for key, value in raw.items()}
    settings = SpaceSettings(**{k: str(v) if hints[k] is str else v for k, v in values.items()})
    if settings.sdk != "gradio":
        raise ConfigError(f"{path}: sdk '{settings.sdk}' -- Kantele is a Gradio app, use 'gradio'")
    if not (REPO_ROOT / settings.app_file).is_file():
        raise ConfigError(f"{path}: app_file '{settings.app_file}' does not exist")
    return settings


def render_space_readme(settings: SpaceSettings) -> str:
    """The Space's README.md: the Hub reads its front matter as the Space's configuration."""
    front = {
        "title": settings.title, "emoji": settings.emoji, "colorFrom": settings.colorFrom,
        "colorTo": settings.colorTo, "sdk": settings.sdk, "sdk_version": settings.sdk_version,
        "python_version": settings.python_version, "app_file": settings.app_file,
        "suggested_hardware": settings.hardware, "short_description": settings.short_description,
        "license": settings.license, "pinned": False,
        "hf_oauth": True, "hf_oauth_scopes": list(OAUTH_SCOPES),
    }
    front = {key: value for key, value in front.items() if value not in ("", None)}
    body = (f"# {settings.title}\n\n{settings.short_description}.\n\n"
            "Upload or generate question-answer data, fine-tune a small chat model with QLoRA, chat with the "
            "base and the tuned model side by side, and publish the adapter to the Hub -- all from this page. "
            "Try it with the Kalevala example.\n\n"
            f"Default model: `{settings.default_model}` (TinyLlama on a GPU, SmolLM2-135M-Instruct on a CPU). "
            "Visitors sign in with Hugging Face to publish under their own name.\n")
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n" + body


def app_files(root: Path = REPO_ROOT) -> dict[str, Path]:
    """The files the Space runs, by their path in the Space repository."""
    files = {}
    for pattern in APP_FILE_PATTERNS:
        for path in sorted(root.glob(pattern)):
            if path.is_file() and "__pycache__" not in path.parts:
                files[path.relative_to(root).as_posix()] = path
    return files


def check_trainable_hardware(settings: SpaceSettings) -> None:
    """ConfigError for hardware Kantele can't train on: ZeroGPU (zero-a10g, any zero-*)."""
    if is_zerogpu(settings.hardware):
        raise ConfigError(f"{SPACE_SETTINGS_FILE}: hardware '{settings.hardware}' is ZeroGPU, and Kantele can't train "
                          f"there: {ZEROGPU_REASON} -- ask for a dedicated GPU (t4-small, l4x1, a10g-small) or "
                          "cpu-basic")


def plan_space_deploy(space_id: str, settings: SpaceSettings | None = None, root: Path = REPO_ROOT) -> PushPlan:
    """The app's files plus the rendered README, as one commit to the Space (refused for ZeroGPU hardware)."""
    settings = settings or read_space_settings(root / SPACE_SETTINGS_FILE)
    check_trainable_hardware(settings)
    plan = PushPlan(space_id, SPACE, f"Kantele: deploy app ({settings.title}, {settings.hardware})")
    plan.files.update(app_files(root))
    plan.files[CARD_FILE] = render_space_readme(settings)
    return plan


def deploy_space(space_id: str, token: str | None = None, private: bool = False, set_token_secret: bool = True,
                 progress=None, endpoint: str | None = None) -> str:
    """Create/update the Space, upload the app, request hardware, set the model variable and token secret."""
    from tuning.hub.push import push_plans

    settings = read_space_settings()
    plan = plan_space_deploy(space_id, settings)
    token = resolve_token(token)
    [url] = push_plans([plan], token=token, private=private, progress=progress, endpoint=endpoint,
                       space_options={"space_sdk": settings.sdk, "space_hardware": settings.hardware})
    configure_space(space_id, token, settings, set_token_secret=set_token_secret, endpoint=endpoint)
    return url


def configure_space(space_id: str, token: str, settings: SpaceSettings, set_token_secret: bool = True,
                    endpoint: str | None = None) -> None:
    """Hardware, the default-model variable and (optionally) the HF_TOKEN secret: settings the files can't carry."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    steps = [(f"requesting {settings.hardware}", api.request_space_hardware, settings.hardware),
             (f"setting {DEFAULT_MODEL_ENV}", api.add_space_variable, DEFAULT_MODEL_ENV, settings.default_model)]
    if set_token_secret and TOKEN_SECRET in settings.secrets:
        steps.append((f"setting the {TOKEN_SECRET} secret", api.add_space_secret, TOKEN_SECRET, token))
    for action, call, *args in steps:
        try:
            call(space_id, *args)
        except Exception as exc:  # noqa: BLE001 -- network, HTTP: one message, token scrubbed
            raise HubError(explain_hub_error(exc, token, f"{action} on {space_id}", endpoint)) from None
