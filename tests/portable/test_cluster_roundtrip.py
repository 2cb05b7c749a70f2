"""The cluster round trip with real parts: a bundle unzipped elsewhere trains with its own train.sh (and
with train.sbatch under a real one-node SLURM), and the adapter it made comes back into Chat and Publish."""

import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from cluster_runs import QUICK_RUN, make_run_folder, zip_folder
from helpers import REPO
from local_slurm import local_slurm

from tuning.chat.side_by_side import GenerationSettings, SideBySideChat
from tuning.config import load_recipe
from tuning.models.loading import cache_dir
from tuning.portable.bundle import plan_bundle, write_bundle_zip
from tuning.runs.files import COMPLETED, CONFIG_FILE, DATA_FILE, has_adapter, read_json, read_status
from tuning.runs.owner import Owner, new_visitor_id
from tuning.runs.queue import TrainingQueue
from tuning.runs.visitor_runs import VisitorRuns

RUN_NAME = "20250101-000000-kalevala-abcdef"
ALICE, BOB = Owner(new_visitor_id()), Owner(new_visitor_id())


def cluster_env() -> dict:
    """What a cluster shell has: the venv's bin on PATH (accelerate), the Hub offline, no token, one thread."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "PYTHONPATH")}
    return {**env, "PATH": f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """The bundle of a run, unzipped somewhere that is not the repository."""
    home = tmp_path_factory.mktemp("cluster")
    run = make_run_folder(home / "runs" / RUN_NAME)
    archive = write_bundle_zip(plan_bundle(run), home / "bundle.zip")
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(home / "cluster")
    return home / "cluster" / f"{RUN_NAME}-cluster"


@pytest.fixture(scope="module")
def cluster_run(bundle_dir) -> Path:
    """The bundle trained by its train.sh (N=1, CPU), started from another folder: it must cd itself."""
    result = subprocess.run(["bash", str(bundle_dir / "train.sh"), *QUICK_RUN], cwd="/", env=cluster_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return bundle_dir / "runs" / RUN_NAME


def test_the_bundle_trains_unchanged_with_its_train_sh(cluster_run):
    assert has_adapter(cluster_run) and read_status(cluster_run)["state"] == COMPLETED
    assert read_status(cluster_run)["step"] == 2
    assert load_recipe(cluster_run / CONFIG_FILE).data.train == ["data/train.jsonl"]  # the bundled copy
    assert read_json(cluster_run / DATA_FILE)["train_examples"] == 8


def test_its_adapter_comes_back_answers_in_chat_and_is_only_its_importers(cluster_run, tmp_path, monkeypatch):
    from ui import chat_tab, publish_tab

    queue = TrainingQueue(tmp_path / "app-runs")
    for module in (chat_tab, publish_tab):
        monkeypatch.setattr(module, "RUNS", VisitorRuns(queue))
    upload = zip_folder(cluster_run, tmp_path / f"{RUN_NAME}.zip")  # checkpoints/ left out, as README.txt says

    message, picker = chat_tab.import_trained_adapter(str(upload), ALICE)
    assert message.startswith("Imported as") and "base model `embedded`" in message, message
    run_id = picker["value"]
    assert chat_tab.RUNS.finished(ALICE) == [run_id] and chat_tab.RUNS.finished(BOB) == []
    assert publish_tab.refresh_runs(ALICE, None)["value"] == run_id
    assert publish_tab.refresh_runs(BOB, run_id)["value"] is None
    assert "no run of yours" in chat_tab.describe_panes(BOB, run_id)
    rows, card = publish_tab.show_plan(ALICE, run_id, "alice/kalevala", [], "")
    assert any(row[2] == "adapter_model.safetensors" for row in rows) and "How to use" in card

    chat = SideBySideChat.from_run(queue.owned_run_dir(run_id, ALICE))
    answer = chat.answer("Who compiled the Kalevala?", adapter_on=True, settings=GenerationSettings(max_new_tokens=8))
    assert isinstance(answer, str) and answer.strip()


def test_an_upload_before_the_page_knows_its_visitor_imports_nothing(tmp_path):
    from ui import chat_tab

    assert "reload the page" in chat_tab.import_trained_adapter(str(tmp_path / "x.zip"), None)[0]


def test_the_sbatch_trains_the_bundle_on_a_local_slurm(bundle_dir, tmp_path):
    """sbatch --wait of the bundle's train.sbatch on a one-node SLURM (CPU, no GPUs: the GPU request is overridden)."""
    with local_slurm(tmp_path / "slurm") as slurm_env:
        # KANTELE_CACHE: the embedded model converted once already (the template would keep it under HF_HOME)
        env = {**cluster_env(), **slurm_env, "RUN_NAME": "from-sbatch", "SCRATCH": str(tmp_path / "scratch"),
               "KANTELE_CACHE": str(cache_dir())}
        result = subprocess.run(["sbatch", "--wait", "--gpus-per-node=0", "--cpus-per-task=2", "--time=00:10:00",
                                 "train.sbatch", *QUICK_RUN], cwd=bundle_dir, env=env, capture_output=True,
                                text=True, timeout=600)
    logs = "\n".join(path.read_text(errors="replace") for path in bundle_dir.glob("kantele-train-*.out"))
    assert result.returncode == 0, result.stdout + result.stderr + logs[-5000:]
    assert "kantele: 1 node(s) x 1 GPU(s) = 1 processes" in logs and "run copied to runs/from-sbatch" in logs
    run = bundle_dir / "runs" / "from-sbatch"  # copied back from scratch
    assert has_adapter(run) and read_status(run)["state"] == COMPLETED
    assert (tmp_path / "scratch").is_dir()
