"""Shared fixtures: offline Hub, small Kalevala-like data, and one real few-step training run."""

import os
import subprocess
from pathlib import Path

import pytest
import huggingface_hub.constants
from fake_hub import BOB_TOKEN, CANARY, FINE_TOKEN, ORG, READ_TOKEN, FakeHub
from helpers import REPO, TINY_TRAIN, TINY_VALIDATION, train_command, write_jsonl

# Tests never reach the Hugging Face Hub: the embedded model and data we ship are enough.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    """Paths of a tiny train/validation pair."""
    folder = tmp_path_factory.mktemp("tiny-data")
    return {"train": write_jsonl(folder / "train.jsonl", TINY_TRAIN),
            "validation": write_jsonl(folder / "validation.jsonl", TINY_VALIDATION)}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_data) -> Path:
    """A real QLoRA run of the embedded model (6 steps), trained once for the whole session."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    result = subprocess.run(train_command(run_dir, tiny_data), cwd=REPO, capture_output=True, text=True,
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
