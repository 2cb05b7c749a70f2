"""`python -m tuning deploy --space USER/NAME`: Kantele itself as a Gradio Space, from spaces.yaml.

spaces.yaml is the one place the Space's settings live; the Space's README front matter is rendered
from it, so the two can't drift. `plan_space_deploy` decides everything a deploy does -- the files of the
one commit (the app, and with --with-run a finished run), the hardware, the storage, the sleep time, the
variables and the secret -- and `--dry-run` prints that same plan that `deploy_space` then carries out.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_type_hints

import yaml

from tuning.config import AUTO_MODEL, EMBEDDED_MODEL, ConfigError, check_keys, coerce_value
from tuning.errors import UsageError
from tuning.hardware.device import ZEROGPU_REASON, is_gpu_hardware, is_zerogpu
from tuning.hub.auth import HubError, explain_hub_error, resolve_token
from tuning.hub.push import SPACE, PushPlan
from tuning.models.loading import DEFAULT_MODEL_ENV, EMBEDDED_HUB_ID, GPU_DEFAULT_MODEL
from tuning.models.names import portable_base_name
from tuning.runs.example import EXAMPLE_ENV
from tuning.runs.example import MODES as EXAMPLE_MODES
from tuning.runs.files import (
    BUNDLED_RUNS_DIR,
    CARD_FILE,
    CHECKPOINTS_DIR,
    COMPLETED,
    CONSOLE_FILE,
    DEFAULT_RUNS_DIR,
    OWNER_FILE,
    has_adapter,
    read_status,
)
from tuning.runs.run import Run

REPO_ROOT = Path(__file__).resolve().parents[2]
SPACE_SETTINGS_FILE = "spaces.yaml"
TOKEN_SECRET = "HF_TOKEN"
# What a Space needs to run the app: code, recipes and the worked example. Tests, benches, docs and
# runs stay home (runs may hold a visitor's private data). The accelerate and SLURM files go into the
# Train tab's cluster bundles.
APP_FILE_PATTERNS = ("app.py", "requirements.txt", SPACE_SETTINGS_FILE, "tuning/**/*.py", "ui/*.py",
                     "configs/*.yaml", "configs/accelerate/*.yaml", "configs/slurm/*.sbatch", "datasets/kalevala/*",
                     "datasets/general/*")
# Visitors publish under their own name: "Sign in with Hugging Face" asks for these scopes.
OAUTH_SCOPES = ("write-repos", "manage-repos")

# Persistent storage. huggingface_hub 2.x removed request_space_storage (the small/medium/large disk tiers):
# a Space keeps files across restarts in a storage bucket mounted as a volume. Deploy mounts a private bucket
# (runs may hold visitors' data) named after the Space at /data, where the Hub's persistent disk used to be.
STORAGE_BUCKET = "bucket"
STORAGE_NONE = ("", "none")
RETIRED_STORAGE_TIERS = ("small", "medium", "large")
SPACE_DATA_DIR = "/data"
STORAGE_BUCKET_SUFFIX = "-data"
HOME_ENV = "KANTELE_HOME"  # where the app keeps runs and workspaces (ui/state.py)
HF_HOME_ENV = "HF_HOME"  # the Hugging Face cache: the downloaded base model
NEVER_SLEEP = -1
# The free hardware sleeps after 48 hours whatever is asked; the Hub lets upgraded hardware choose.
FREE_HARDWARE = "cpu-basic"
# What a bundled run leaves home: resumable checkpoints (big, and a finished run needs none), the trainer's raw
# console, and the owner record -- a visitor's id digest must not travel; on the Space the run is everyone's.
LEFT_OUT_OF_BUNDLE = (CHECKPOINTS_DIR, CONSOLE_FILE, OWNER_FILE)


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
    storage: str | None = None  # 'bucket': files under /data survive restarts; None: nothing does
    sleep_time: int | None = None  # seconds idle before the Space sleeps; -1 never; None: the Hub's default
    example_run: str = "auto"  # 'auto': the app trains the Kalevala example at start; 'off': it doesn't


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
    if raw.get("example_run") is False:
        raw["example_run"] = "off"  # YAML 1.1 reads a bare `off` as false
    hints = get_type_hints(SpaceSettings)
    values = {key: coerce_value(value, hints[key], key, str(path)) for key, value in raw.items()}
    settings = SpaceSettings(**{k: str(v) if hints[k] is str else v for k, v in values.items()})
    if settings.sdk != "gradio":
        raise ConfigError(f"{path}: sdk '{settings.sdk}' -- Kantele is a Gradio app, use 'gradio'")
    if not (REPO_ROOT / settings.app_file).is_file():
        raise ConfigError(f"{path}: app_file '{settings.app_file}' does not exist")
    settings.storage = _checked_storage(settings.storage, path)
    _check_sleep_time(settings.sleep_time, path)
    if settings.example_run not in EXAMPLE_MODES:
        raise ConfigError(f"{path}: example_run '{settings.example_run}' -- use one of: {', '.join(EXAMPLE_MODES)}")
    return settings


def _checked_storage(value, path: Path) -> str | None:
    """'bucket', or None for no persistent storage; a ConfigError naming the key, the value and the choices."""
    text = "" if value is None else str(value).strip().lower()
    if text in STORAGE_NONE:
        return None
    if text == STORAGE_BUCKET:
        return STORAGE_BUCKET
    retired = (" -- the Hub's persistent-disk tiers are gone (huggingface_hub 2.x removed request_space_storage); "
               f"a Space now keeps its files in a storage bucket mounted at {SPACE_DATA_DIR}"
               if text in RETIRED_STORAGE_TIERS else "")
    raise ConfigError(f"{path}: storage '{value}'{retired} -- use '{STORAGE_BUCKET}' (files under {SPACE_DATA_DIR} "
                      "survive restarts) or 'none' (leave it empty)")


def _check_sleep_time(value, path: Path) -> None:
    seconds = isinstance(value, int) and not isinstance(value, bool)  # YAML's `yes` is a bool, and a bool an int
    if value is not None and not (seconds and (value > 0 or value == NEVER_SLEEP)):
        raise ConfigError(f"{path}: sleep_time {value!r} -- give seconds of inactivity before the Space sleeps "
                          f"(a positive whole number, e.g. 3600), {NEVER_SLEEP} to never sleep, or leave it empty "
                          "for the Hub's default")


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


# -- the base model: a bundled run must be made on the one the Space loads ------------------------------------


def canonical_model_name(name: str) -> str:
    """One spelling per model, so two names can be compared: 'embedded' is its Hub id, a Hub-cache path owner/name."""
    name = portable_base_name(name)
    return EMBEDDED_HUB_ID if name == EMBEDDED_MODEL else name


def space_base_model(settings: SpaceSettings) -> str:
    """The base model the Space will load: default_model, with 'auto' meaning what it means on that hardware
    (TinyLlama on a GPU, the embedded model on cpu-*), as tuning.models.loading.default_model_name decides there."""
    name = settings.default_model.strip() or AUTO_MODEL
    if name == AUTO_MODEL:
        name = GPU_DEFAULT_MODEL if is_gpu_hardware(settings.hardware) else EMBEDDED_MODEL
    return canonical_model_name(name)


# -- a finished run that travels with the app ---------------------------------------------------------------


@dataclass
class BundledRun:
    """A finished run going into the Space under bundled_runs/<id>/: its files by their path in the Space repo."""

    id: str
    base_model: str
    files: dict[str, Path]
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(path.stat().st_size for path in self.files.values())


def find_run_folder(run: str) -> Path:
    """A run folder path, or a run id under ./runs or KANTELE_HOME/runs; UsageError saying where it looked."""
    places = [Path(run).expanduser(), DEFAULT_RUNS_DIR / run]
    if os.environ.get(HOME_ENV):
        places.append(Path(os.environ[HOME_ENV]) / DEFAULT_RUNS_DIR / run)
    for place in places:
        if place.is_dir():
            return place
    raise UsageError(f"--with-run {run}: no such run folder (looked in {', '.join(str(p) for p in places)}) -- give "
                     "a run folder's path or the id of a run under ./runs")


def plan_bundled_run(run: str, settings: SpaceSettings) -> BundledRun:
    """The run's files for the Space, once it is finished, has an adapter and was made on the Space's model."""
    run_dir = Path(os.path.abspath(find_run_folder(run)))  # '.' has no name to bundle it under; links stay as named
    state = read_status(run_dir).get("state")
    if state != COMPLETED or not has_adapter(run_dir):
        now = f"it is {state}" if state else "it has no status"
        raise UsageError(f"run {run_dir.name} can't go to the Space: {now}"
                         f"{'' if has_adapter(run_dir) else ' and has no adapter'} -- bundle a run that trained to "
                         "the end (status completed, with adapter/), or let it finish first")
    trained_on = Run(run_dir).base_model()
    run_model = canonical_model_name(trained_on.hub_id or trained_on.name)
    space_model = space_base_model(settings)
    if run_model.casefold() != space_model.casefold():
        raise ConfigError(f"run {run_dir.name} was trained on {run_model}, but the Space will load {space_model} "
                          f"(default_model '{settings.default_model}' on {settings.hardware}), and an adapter only "
                          f"fits the model it was trained on -- train the run with --set model.name={space_model}, or "
                          f"set default_model: {run_model} in {SPACE_SETTINGS_FILE}")
    prefix = f"{BUNDLED_RUNS_DIR}/{run_dir.name}"
    files = {f"{prefix}/{name}": path for name, path in bundle_files(run_dir).items()}
    notes = [f"run {run_dir.name} was a visitor's: its data and logs go to the Space (public unless --private), "
             "its owner record stays home"] if Run(run_dir).owner_digest() else []
    return BundledRun(run_dir.name, run_model, files, notes)


def bundle_files(run_dir: Path) -> dict[str, Path]:
    """The run folder's regular files by relative path, without what LEFT_OUT_OF_BUNDLE names. Links, devices and
    the like stay out too: a link could point anywhere on this machine."""
    files = {}
    for folder, subfolders, names in os.walk(run_dir):  # followlinks=False: a linked folder is not the run's
        here = Path(folder)
        top = here == run_dir
        subfolders[:] = sorted(name for name in subfolders if not (top and name in LEFT_OUT_OF_BUNDLE))
        for name in sorted(names):
            path = here / name
            if (top and name in LEFT_OUT_OF_BUNDLE) or not stat.S_ISREG(path.lstat().st_mode):
                continue
            if name.startswith(".") and name.endswith(".tmp"):
                continue  # an atomic write cut short (tuning/atomic.py), not part of the run
            files[path.relative_to(run_dir).as_posix()] = path
    return files


# -- the plan: what deploy does, decided before anything is sent ---------------------------------------------


@dataclass
class SpaceDeployPlan:
    """One deploy: the commit (the app, the README, any bundled run) and the Space settings the files can't carry.
    --dry-run prints this; deploy_space carries out exactly this."""

    space_id: str
    settings: SpaceSettings
    push: PushPlan
    variables: dict[str, str]  # public: never a token
    secrets: list[str]  # names only; the value is the deployer's token, never printed
    storage_bucket: str | None  # the bucket mounted at SPACE_DATA_DIR; None: no persistent storage asked
    sleep_time: int | None  # what deploy asks for; None: nothing asked (the Hub's default)
    bundled_run: BundledRun | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> dict[str, Path | str]:
        return self.push.files

    def describe(self) -> list[tuple[str, str]]:
        """(setting, value) for people: what the Space will be asked for beside the files."""
        storage = (f"private bucket {self.storage_bucket}, mounted at {SPACE_DATA_DIR} (runs and the downloaded base "
                   "model survive restarts)" if self.storage_bucket
                   else "none (files written on the Space are lost when it restarts)")
        if self.sleep_time is None:
            sleep = "the Hub's default (not asked)"
        else:
            sleep = "never" if self.sleep_time == NEVER_SLEEP else f"after {self.sleep_time} s without visitors"
        rows = [("hardware", self.settings.hardware), ("base model", space_base_model(self.settings)),
                ("storage", storage), ("sleep time", sleep)]
        rows += [("variable", f"{name}={value}") for name, value in self.variables.items()]
        rows += [("secret", f"{name} (your token; its value is never shown)") for name in self.secrets]
        if self.bundled_run:
            run = self.bundled_run
            rows.append(("bundled run", f"{run.id} (base model {run.base_model}, {len(run.files)} files, "
                                        f"{run.size / 1024 / 1024:,.1f} MB) under {BUNDLED_RUNS_DIR}/{run.id}/"))
        rows += [("note", note) for note in self.notes]
        return rows


def plan_space_deploy(space_id: str, settings: SpaceSettings | None = None, root: Path = REPO_ROOT,
                      with_run: str | None = None, set_token_secret: bool = True) -> SpaceDeployPlan:
    """Everything one deploy does (refused for ZeroGPU hardware, and for a run the Space can't use)."""
    settings = settings or read_space_settings(root / SPACE_SETTINGS_FILE)
    check_trainable_hardware(settings)
    bundled = plan_bundled_run(with_run, settings) if with_run else None
    what = f"{settings.title}, {settings.hardware}" + (f", with run {bundled.id}" if bundled else "")
    push = PushPlan(space_id, SPACE, f"Kantele: deploy app ({what})")
    push.files.update(app_files(root))
    push.files[CARD_FILE] = render_space_readme(settings)
    if bundled:
        push.files.update(bundled.files)
    variables = {DEFAULT_MODEL_ENV: settings.default_model, EXAMPLE_ENV: settings.example_run}
    bucket = None
    if settings.storage == STORAGE_BUCKET:
        bucket = space_id + STORAGE_BUCKET_SUFFIX
        variables.update({HOME_ENV: SPACE_DATA_DIR, HF_HOME_ENV: f"{SPACE_DATA_DIR}/.huggingface"})
    notes = list(bundled.notes) if bundled else []
    sleep_time = settings.sleep_time
    if sleep_time is not None and settings.hardware == FREE_HARDWARE:
        notes.append(f"sleep_time {sleep_time} is not asked for: {FREE_HARDWARE} sleeps after 48 hours without "
                     "visitors, which the Hub doesn't let you change")
        sleep_time = None
    secrets = [TOKEN_SECRET] if set_token_secret and TOKEN_SECRET in settings.secrets else []
    return SpaceDeployPlan(space_id, settings, push, variables, secrets, bucket, sleep_time, bundled, notes)


def deploy_space(plan: SpaceDeployPlan, token: str | None = None, private: bool = False, progress=None,
                 endpoint: str | None = None) -> str:
    """Create/update the Space, upload the plan's files in one commit, then configure it as the plan says."""
    from tuning.hub.push import push_plans

    token = resolve_token(token)
    [url] = push_plans([plan.push], token=token, private=private, progress=progress, endpoint=endpoint,
                       space_options={"space_sdk": plan.settings.sdk, "space_hardware": plan.settings.hardware})
    configure_space(plan, token, endpoint=endpoint)
    return url


def configure_space(plan: SpaceDeployPlan, token: str, endpoint: str | None = None) -> None:
    """Hardware, storage, sleep time, variables and secret: the settings the files can't carry. Storage comes
    before the variables: KANTELE_HOME must not point at /data before something is mounted there."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    space_id = plan.space_id
    hardware = plan.settings.hardware
    steps = [(f"requesting {hardware}", lambda: api.request_space_hardware(space_id, hardware))]
    if plan.storage_bucket:
        steps += _storage_steps(api, space_id, plan.storage_bucket)
    if plan.sleep_time is not None:
        steps.append((f"setting the sleep time to {plan.sleep_time} s",
                      lambda: api.set_space_sleep_time(space_id, plan.sleep_time)))
    for name, value in plan.variables.items():
        steps.append((f"setting {name}", lambda name=name, value=value: api.add_space_variable(space_id, name, value)))
    for name in plan.secrets:
        steps.append((f"setting the {name} secret", lambda name=name: api.add_space_secret(space_id, name, token)))
    for action, call in steps:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 -- network, HTTP: one message, token scrubbed
            raise HubError(explain_hub_error(exc, token, f"{action} on {space_id}", endpoint)) from None


def _storage_steps(api, space_id: str, bucket: str) -> list[tuple[str, object]]:
    """Create the private bucket (kept if it exists: it holds the runs) and mount it at /data, keeping any other
    volume the owner mounted by hand (set_space_volumes replaces the whole list)."""
    from huggingface_hub import Volume

    def mount() -> None:
        others = [v for v in api.get_space_runtime(space_id).volumes or [] if v.mount_path != SPACE_DATA_DIR]
        api.set_space_volumes(space_id, [*others, Volume(type="bucket", source=bucket, mount_path=SPACE_DATA_DIR)])

    return [(f"creating the storage bucket {bucket}", lambda: api.create_bucket(bucket, private=True, exist_ok=True)),
            (f"mounting {bucket} at {SPACE_DATA_DIR}", mount)]
