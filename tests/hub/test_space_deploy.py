"""`python -m tuning deploy`: the Space's README front matter comes from spaces.yaml, the app's files (and only
those) arrive in one commit, and the Space gets its hardware, default-model variable and token secret."""

import pytest
import yaml
from fake_hub import CANARY
from helpers import REPO
from huggingface_hub import SpaceCard

from tuning.cli import main
from tuning.config import ConfigError
from tuning.hub.space import SpaceSettings, app_files, plan_space_deploy, read_space_settings, render_space_readme
from tuning.models.loading import DEFAULT_MODEL_ENV, default_model_name

SPACE_ID = "alice/kantele"


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
    assert space.variables == {DEFAULT_MODEL_ENV: settings.default_model}
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
