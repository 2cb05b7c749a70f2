"""`python -m tuning deploy`: the Space's README front matter comes from spaces.yaml, the app's files (and only
those, plus a bundled run when asked) arrive in one commit, and the Space gets its hardware, storage, sleep time,
variables and token secret -- the same plan --dry-run prints."""

import json
import os

import pytest
import yaml
from fake_hub import CANARY
from helpers import REPO
from huggingface_hub import SpaceCard

from tuning.cli import main
from tuning.config import EMBEDDED_MODEL, ConfigError, RecipeConfig, save_recipe
from tuning.errors import UsageError
from tuning.hub.space import (
    SpaceSettings,
    app_files,
    find_run_folder,
    plan_space_deploy,
    read_space_settings,
    render_space_readme,
)
from tuning.models.loading import DEFAULT_MODEL_ENV, EMBEDDED_HUB_ID, GPU_DEFAULT_MODEL, default_model_name
from tuning.runs.files import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    COMPLETED,
    CONFIG_FILE,
    CONSOLE_FILE,
    ENVIRONMENT_FILE,
    LOG_FILE,
    OWNER_FILE,
    RUNNING,
    write_json,
    write_status,
)

SPACE_ID = "alice/kantele"
BUCKET_ID = "alice/kantele-data"  # the storage bucket deploy makes for SPACE_ID (spaces.yaml: storage: bucket)
SPACE_VARIABLES = {DEFAULT_MODEL_ENV: "auto", "KANTELE_EXAMPLE": "auto", "KANTELE_HOME": "/data",
                   "HF_HOME": "/data/.huggingface"}


def front_matter(readme: str) -> dict:
    """The YAML block at the top of a README."""
    return yaml.safe_load(readme.split("---\n")[1])


def test_readme_front_matter_is_rendered_from_spaces_yaml():
    settings = read_space_settings()
    raw = yaml.safe_load((REPO / "spaces.yaml").read_text(encoding="utf-8"))
    meta = front_matter(render_space_readme(settings))
    for key in ("title", "emoji", "colorFrom", "colorTo", "sdk", "app_file", "short_description", "license"):
        assert meta[key] == raw[key], key
    assert meta["sdk_version"] == raw["sdk_version"]
    assert meta["suggested_hardware"] == raw["hardware"]
    assert meta["hf_oauth"] is True and "write-repos" in meta["hf_oauth_scopes"]
    SpaceCard(render_space_readme(settings))  # huggingface_hub parses it


def test_the_space_gets_the_app_and_nothing_else():
    files = app_files()
    assert {"app.py", "requirements.txt", "spaces.yaml", "tuning/hub/push.py", "ui/publish_tab.py",
            "configs/kalevala.yaml", "datasets/kalevala/train.jsonl"} <= set(files)
    assert not [name for name in files if name.startswith(("tests/", "runs/", "bench/", "docs/", ".venv/"))]
    assert not [name for name in files if "__pycache__" in name]
    # The gradio the Space installs (sdk_version) is the one requirements.txt pins.
    pinned = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("gradio")]
    assert pinned and read_space_settings().sdk_version in pinned[0]


def test_unknown_or_wrong_settings_name_the_key(tmp_path):
    bad = tmp_path / "spaces.yaml"
    bad.write_text("sdk: gradio\napp_file: app.py\nhardwar: t4-small\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="hardwar.*did you mean 'hardware'"):
        read_space_settings(bad)
    bad.write_text("sdk: docker\napp_file: app.py\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="sdk 'docker'"):
        read_space_settings(bad)


def test_dry_run_prints_the_files_and_readme_and_sends_nothing(hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", CANARY)
    assert main(["deploy", "--space", SPACE_ID, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "app.py" in out and "tuning/training/train.py" in out and "hf_oauth: true" in out
    assert CANARY not in out
    assert hub.requests == []


def test_deploy_creates_the_space_uploads_the_app_and_sets_variable_and_secret(online, capsys):
    assert main(["deploy", "--space", SPACE_ID]) == 0
    out, err = capsys.readouterr()
    assert CANARY not in out + err
    space = online.repo(SPACE_ID, "space")
    plan = plan_space_deploy(SPACE_ID)
    assert set(space.files) == set(plan.files)
    assert space.files["app.py"] == (REPO / "app.py").read_bytes()
    assert front_matter(space.files["README.md"].decode())["sdk"] == "gradio"
    settings = read_space_settings()
    assert space.sdk == "gradio" and space.hardware == settings.hardware
    assert space.variables == {**SPACE_VARIABLES, DEFAULT_MODEL_ENV: settings.default_model}
    assert space.secrets == {"HF_TOKEN": CANARY}  # the deployer's own token, stored as the Space's secret
    # Deploying again updates the same Space (no 'already exists' error).
    assert main(["deploy", "--space", SPACE_ID, "--no-token-secret"]) == 0


def test_deploy_without_the_secret_and_with_a_read_token(online, capsys, monkeypatch):
    assert main(["deploy", "--space", SPACE_ID, "--no-token-secret"]) == 0
    assert online.repo(SPACE_ID, "space").secrets == {}
    from fake_hub import READ_TOKEN

    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    assert main(["deploy", "--space", "alice/other-space"]) == 2
    assert "read-only" in capsys.readouterr().err


def test_default_model_variable_decides_what_auto_means(monkeypatch):
    monkeypatch.setenv(DEFAULT_MODEL_ENV, "embedded")
    assert default_model_name() == "embedded"
    monkeypatch.setenv(DEFAULT_MODEL_ENV, "some-org/some-model")
    assert default_model_name() == "some-org/some-model"


@pytest.mark.parametrize("hardware", ["zero-a10g", "zero-h200"])
def test_deploy_refuses_zerogpu_and_says_why(hub, capsys, monkeypatch, hardware):
    import tuning.hub.space

    monkeypatch.setattr(tuning.hub.space, "read_space_settings", lambda *args: SpaceSettings(hardware=hardware))
    assert main(["deploy", "--space", SPACE_ID, "--dry-run"]) == 2
    assert main(["deploy", "--space", SPACE_ID]) == 2
    err = capsys.readouterr().err
    assert f"hardware '{hardware}' is ZeroGPU" in err and "its own process" in err and "t4-small" in err
    assert hub.requests == []
    plan_space_deploy(SPACE_ID, SpaceSettings(hardware="t4-small"))  # a dedicated GPU is fine


# -- storage, sleep time and the variables ---------------------------------------------------------------------


def body(request) -> dict:
    return json.loads(request.body)


def test_storage_sleep_time_and_variables_reach_the_hub(online, capsys):
    assert main(["deploy", "--space", SPACE_ID]) == 0
    assert CANARY not in "".join(capsys.readouterr())
    space = online.repo(SPACE_ID, "space")
    # Storage: a private bucket named after the Space, mounted at /data, where KANTELE_HOME and HF_HOME point.
    assert [body(r) for r in online.calls(f"/api/buckets/{BUCKET_ID}", "POST")] == [{"visibility": "private"}]
    assert online.buckets[BUCKET_ID].private
    volume = {"type": "bucket", "source": BUCKET_ID, "mountPath": "/data"}
    assert [body(r) for r in online.calls(f"/api/spaces/{SPACE_ID}/volumes", "PUT")] == [{"volumes": [volume]}]
    assert space.volumes == [volume]
    assert [body(r) for r in online.calls(f"/api/spaces/{SPACE_ID}/sleeptime", "POST")] == [{"seconds": 3600}]
    assert space.sleep_time == 3600
    assert space.variables == SPACE_VARIABLES
    # /data is mounted before KANTELE_HOME points there: a failed mount never leaves the app writing nowhere.
    settings_calls = [r for r in online.requests if r.path.endswith(("/volumes", "/variables"))]
    order = [body(r).get("key", "volumes") for r in settings_calls]
    assert order.index("volumes") < order.index("KANTELE_HOME")


def test_redeploy_keeps_the_bucket_and_other_volumes(online, capsys):
    assert main(["deploy", "--space", SPACE_ID, "--no-token-secret"]) == 0
    other = {"type": "model", "source": "alice/weights", "mountPath": "/models", "readOnly": True}
    space = online.repo(SPACE_ID, "space")
    space.volumes.append(other)  # mounted by hand on the Hub
    assert main(["deploy", "--space", SPACE_ID, "--no-token-secret"]) == 0  # the bucket exists: 409, kept
    assert space.volumes == [other, {"type": "bucket", "source": BUCKET_ID, "mountPath": "/data"}]
    assert list(online.buckets) == [BUCKET_ID]


def test_without_storage_or_sleep_time_nothing_is_asked(online, monkeypatch, capsys):
    import tuning.hub.space

    settings = SpaceSettings(hardware="t4-small", storage=None, sleep_time=None, example_run="off")
    monkeypatch.setattr(tuning.hub.space, "read_space_settings", lambda *args: settings)
    assert main(["deploy", "--space", SPACE_ID]) == 0
    assert online.calls("/api/buckets") == [] and online.calls("/volumes") == [] and online.calls("/sleeptime") == []
    assert online.repo(SPACE_ID, "space").variables == {DEFAULT_MODEL_ENV: "auto", "KANTELE_EXAMPLE": "off"}


def test_cpu_basic_is_not_asked_for_a_sleep_time(hub, monkeypatch, capsys):
    import tuning.hub.space

    monkeypatch.setattr(tuning.hub.space, "read_space_settings", lambda *args: SpaceSettings(sleep_time=600))
    plan = plan_space_deploy(SPACE_ID)
    assert plan.sleep_time is None and "48 hours" in " ".join(plan.notes)


def test_a_failed_storage_step_is_one_line_without_the_token(online, capsys):
    online.fail_next("/volumes", 403, "Volumes are not available for this Space")
    assert main(["deploy", "--space", SPACE_ID]) == 2
    err = capsys.readouterr().err
    assert "mounting alice/kantele-data at /data" in err and "Volumes are not available" in err
    assert CANARY not in err
    assert "KANTELE_HOME" not in online.repo(SPACE_ID, "space").variables


def settings_file(tmp_path, extra: str):
    path = tmp_path / "spaces.yaml"
    path.write_text(f"sdk: gradio\napp_file: app.py\n{extra}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("line, expected", [
    ("storage: small", "storage 'small'.*persistent-disk tiers are gone.*use 'bucket'.*or 'none'"),
    ("storage: huge", "storage 'huge' -- use 'bucket'.*or 'none'"),
    ("sleep_time: 0", "sleep_time 0 -- .*positive whole number.*-1 to never sleep"),
    ("sleep_time: soon", "sleep_time 'soon'"),
    ("sleep_time: yes", "sleep_time True"),
    ("example_run: maybe", "example_run 'maybe' -- use one of: auto, off"),
])
def test_bad_storage_sleep_or_example_values_name_the_key(tmp_path, line, expected):
    with pytest.raises(ConfigError, match=expected):
        read_space_settings(settings_file(tmp_path, line))


def test_good_storage_sleep_and_example_values(tmp_path):
    settings = read_space_settings(settings_file(tmp_path, "storage: none\nsleep_time: -1\nexample_run: off"))
    assert (settings.storage, settings.sleep_time, settings.example_run) == (None, -1, "off")
    settings = read_space_settings(settings_file(tmp_path, "storage:\nsleep_time:"))
    assert (settings.storage, settings.sleep_time, settings.example_run) == (None, None, "auto")
    assert read_space_settings(settings_file(tmp_path, "storage: Bucket")).storage == "bucket"


# -- --with-run: a finished run travels with the app -------------------------------------------------------------


def fake_finished_run(folder, model: str = GPU_DEFAULT_MODEL, state: str = COMPLETED, adapter: bool = True):
    """A run folder as the trainer leaves it (no training: the adapter's bytes are stand-ins), plus what must not
    travel: checkpoints, the console log, a visitor's owner digest and a link out of the folder."""
    folder.mkdir(parents=True)
    recipe = RecipeConfig()
    recipe.model.name = model
    save_recipe(recipe, folder / CONFIG_FILE)
    write_json(folder / ENVIRONMENT_FILE, {"base_model": {
        "name": model, "hub_id": EMBEDDED_HUB_ID if model == EMBEDDED_MODEL else model, "revision": "abc123"}})
    write_status(folder, state)
    (folder / LOG_FILE).write_text("trained\n", encoding="utf-8")
    (folder / "data").mkdir()
    (folder / "data" / "train.jsonl").write_text('{"messages": []}\n', encoding="utf-8")
    if adapter:
        (folder / ADAPTER_DIR).mkdir()
        (folder / ADAPTER_DIR / "adapter_config.json").write_text('{"r": 8}', encoding="utf-8")
        (folder / ADAPTER_DIR / "adapter_model.safetensors").write_bytes(b"\0weights\1" * 50)
    (folder / CHECKPOINTS_DIR / "checkpoint-2").mkdir(parents=True)
    (folder / CHECKPOINTS_DIR / "checkpoint-2" / "trainer_state.json").write_text("{}", encoding="utf-8")
    (folder / CONSOLE_FILE).write_text("raw console\n", encoding="utf-8")
    (folder / OWNER_FILE).write_text("f" * 64, encoding="utf-8")
    outside = folder.parent / "outside.txt"
    outside.write_text("not the run's\n", encoding="utf-8")
    os.symlink(outside, folder / "linked.txt")
    return folder


def test_with_run_uploads_the_run_in_the_same_commit(online, tmp_path, capsys):
    run = fake_finished_run(tmp_path / "runs" / "kalevala-gpu")
    assert main(["deploy", "--space", SPACE_ID, "--with-run", str(run)]) == 0
    space = online.repo(SPACE_ID, "space")
    bundled = {name.removeprefix("bundled_runs/kalevala-gpu/") for name in space.files
               if name.startswith("bundled_runs/")}
    assert bundled == {"config.yaml", "environment.json", "status.json", "train.log", "data/train.jsonl",
                       "adapter/adapter_config.json", "adapter/adapter_model.safetensors"}
    assert space.files["bundled_runs/kalevala-gpu/adapter/adapter_model.safetensors"] == \
        (run / ADAPTER_DIR / "adapter_model.safetensors").read_bytes()
    [commit] = space.commits  # the app and the run arrive together
    assert "app.py" in commit.added and "bundled_runs/kalevala-gpu/status.json" in commit.added
    assert "with run kalevala-gpu" in commit.summary
    assert "f" * 64 not in "".join(capsys.readouterr())


def test_with_run_finds_a_run_by_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = fake_finished_run(tmp_path / "runs" / "here")
    assert find_run_folder("here") == local.relative_to(tmp_path)
    monkeypatch.setenv("KANTELE_HOME", str(tmp_path / "home"))
    app_run = fake_finished_run(tmp_path / "home" / "runs" / "in-app")
    assert find_run_folder("in-app") == app_run
    with pytest.raises(UsageError, match="no such run folder.*runs/missing"):
        find_run_folder("missing")


def test_a_run_on_another_base_model_is_refused_naming_both(hub, tmp_path, capsys):
    run = fake_finished_run(tmp_path / "runs" / "cpu-run", model=EMBEDDED_MODEL)
    assert main(["deploy", "--space", SPACE_ID, "--with-run", str(run), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"trained on {EMBEDDED_HUB_ID}" in err and f"Space will load {GPU_DEFAULT_MODEL}" in err
    assert f"--set model.name={GPU_DEFAULT_MODEL}" in err and f"default_model: {EMBEDDED_HUB_ID}" in err
    assert hub.requests == []
    # On cpu-* hardware 'auto' is the embedded model: the same run fits.
    plan = plan_space_deploy(SPACE_ID, SpaceSettings(hardware="cpu-basic"), with_run=str(run))
    assert plan.bundled_run.base_model == EMBEDDED_HUB_ID


@pytest.mark.parametrize("state, adapter, said", [(RUNNING, True, "it is running"),
                                                  (COMPLETED, False, "it is completed and has no adapter")])
def test_an_unfinished_run_is_refused_with_the_fix(hub, tmp_path, capsys, state, adapter, said):
    run = fake_finished_run(tmp_path / "runs" / "half", state=state, adapter=adapter)
    assert main(["deploy", "--space", SPACE_ID, "--with-run", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"run half can't go to the Space: {said}" in err and "let it finish" in err
    assert hub.requests == []


def test_dry_run_prints_the_space_settings_and_the_bundled_run(hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", CANARY)
    run = fake_finished_run(tmp_path / "runs" / "kalevala-gpu")
    assert main(["deploy", "--space", SPACE_ID, "--with-run", str(run), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "  hardware: t4-small" in out
    assert f"  storage: private bucket {BUCKET_ID}, mounted at /data" in out
    assert "  sleep time: after 3600 s without visitors" in out
    for name, value in SPACE_VARIABLES.items():
        assert f"  variable: {name}={value}" in out
    assert "  secret: HF_TOKEN" in out and CANARY not in out
    assert f"  bundled run: kalevala-gpu (base model {GPU_DEFAULT_MODEL}, 7 files," in out
    assert "bundled_runs/kalevala-gpu/adapter/adapter_model.safetensors" in out
    assert "checkpoint-2" not in out and CONSOLE_FILE not in out and OWNER_FILE not in out
    assert hub.requests == []
