"""Shared fixtures: offline Hub, small Kalevala-like data, and one real few-step training run."""

import os
import subprocess
from pathlib import Path

import huggingface_hub.constants
import pytest
from fake_hub import BOB_TOKEN, CANARY, FINE_TOKEN, ORG, READ_TOKEN, FakeHub
from helpers import REPO, TINY_TRAIN, TINY_VALIDATION, train_command, write_jsonl

# Tests never reach the Hugging Face Hub: the embedded model and data we ship are enough.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# The app trains the shared Kalevala example when it starts; only the tests of that example turn it on.
os.environ["KANTELE_EXAMPLE"] = "off"


# The longest test files first (work seconds measured with --durations, one thread each): `--dist loadfile` hands
# files to the two workers in collection order, and a long file started last leaves one worker running it alone.
LONGEST_FIRST = ["qa/test_generate_remote.py", "e2e/test_app_flow.py", "data/test_fuzz_input.py", "runs/test_faults.py",
                 "qa/test_generate_local.py", "hub/test_hub.py", "runs/test_queue.py", "portable/test_export.py",
                 "portable/test_cluster_roundtrip.py", "app/test_concurrent_visitors.py", "app/test_app_faults.py",
                 "training/test_distributed.py", "e2e/test_generate_flow.py", "training/test_train.py", "test_cli.py",
                 "chat/test_chat.py"]


def pytest_collection_modifyitems(config, items):
    tests_dir = Path(__file__).parent
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.relative_to(tests_dir).as_posix(), len(rank)))  # stable


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    """Paths of a tiny train/validation pair."""
    folder = tmp_path_factory.mktemp("tiny-data")
    return {"train": write_jsonl(folder / "train.jsonl", TINY_TRAIN),
            "validation": write_jsonl(folder / "validation.jsonl", TINY_VALIDATION)}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A real QLoRA run of the embedded model (6 steps), trained once for the whole session -- once for all
    pytest-xdist workers too: the first to get here trains under a file lock, the others wait and reuse it.
    Tests only read it (one that writes takes a copy)."""
    from filelock import FileLock

    from tuning.runs.files import read_status

    basetemp = tmp_path_factory.getbasetemp()
    shared = (basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp) / "shared-trained-run"
    shared.mkdir(exist_ok=True)
    run_dir = shared / "runs" / "tiny"
    with FileLock(str(shared / "train.lock")):
        if read_status(run_dir).get("state") != "completed":
            data = {"train": write_jsonl(shared / "train.jsonl", TINY_TRAIN),
                    "validation": write_jsonl(shared / "validation.jsonl", TINY_VALIDATION)}
            # Every probe in the trainer's own scorecard, in quick mode (2 questions of each set).
            probes = ("training.probes=[forgetting, limits, memorised, retrieval]", "training.scorecard_questions=2")
            result = subprocess.run(train_command(run_dir, data, *probes), cwd=REPO, capture_output=True, text=True,
                                    timeout=600)
            assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture
def hub():
    """A fake Hub that knows alice's tokens (write, read-only, fine-grained) and bob's."""
    with FakeHub() as fake:
        fake.add_token(CANARY, "alice", "write", orgs=(ORG,))
        fake.add_token(READ_TOKEN, "alice", "read")
        # Fine-grained: write on the org, only read on alice's own namespace.
        fake.add_token(FINE_TOKEN, "alice", "fineGrained", orgs=(ORG,),
                       scopes={"alice": ("repo.content.read",), ORG: ("repo.content.read", "repo.write")})
        fake.add_token(BOB_TOKEN, "bob", "write")
        yield fake


@pytest.fixture
def online(hub, monkeypatch, tmp_path):
    """In-process huggingface_hub pointed at the fake Hub, online, with HF_TOKEN=CANARY and no saved login."""
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN", CANARY)
    return hub


@pytest.fixture(scope="session")
def shared_app(tmp_path_factory):
    """`python app.py` as a shared app (KANTELE_SHARED=1, the caps of tuning/guards/caps.py) with the owner's
    HF_TOKEN set to the canary: hostile-visitor tests attack it through its HTTP API (gradio_client).
    One per pytest worker; tests must leave it serving. Yields (url, home)."""
    from helpers import start_app_server, stop_process

    home = tmp_path_factory.mktemp("shared-app")
    server, url = start_app_server(home, {"KANTELE_SHARED": "1", "HF_TOKEN": CANARY, "KANTELE_EXAMPLE": "off"})
    try:
        yield url, home
    finally:
        stop_process(server)


@pytest.fixture
def cpu_measures(monkeypatch, tmp_path):
    """Make this CPU measure bf16's speed-up as the test says: `cpu_measures(training, generation)` fakes the
    micro-benchmark (its cache goes to a temp file) and returns the list of shapes it was asked to measure."""
    import torch

    import tuning.hardware.cpu_precision as cpu_precision

    cache = tmp_path / "cpu-cache" / cpu_precision.CACHE_FILE
    monkeypatch.setattr(cpu_precision._measurements, "path", lambda: cache)

    def fake(training: float, generation: float | None = None) -> list:
        speed = cpu_precision.CpuBf16Speed(training=training, generation=training if generation is None else generation,
                                           fp32_gflops=100.0, bf16_gflops=100.0 * training, seconds=0.01,
                                           threads=torch.get_num_threads())
        asked = []
        monkeypatch.setattr(cpu_precision, "measure", lambda shapes, repeats=0: asked.append(shapes) or speed)
        cpu_precision.forget_measurements()
        cache.unlink(missing_ok=True)  # a machine that measures this for the first time
        return asked

    yield fake
    cpu_precision.forget_measurements()  # the next test measures (or reads the real cache) afresh


@pytest.fixture
def asked(monkeypatch) -> list:
    """What both chat panes were really asked: (base messages, tuned messages) per question, the real model
    answering."""
    from tuning.chat.side_by_side import SideBySideChat

    seen = []
    original = SideBySideChat.stream_both

    def recording(self, base_question, tuned_question, *args, **kwargs):
        seen.append((base_question, tuned_question))
        return original(self, base_question, tuned_question, *args, **kwargs)

    monkeypatch.setattr(SideBySideChat, "stream_both", recording)
    return seen
