"""Shared test data and helpers (plain module: `conftest` names clash between test folders)."""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KALEVALA = REPO / "datasets" / "kalevala"

# Few, short rows so a training step takes about a second on 2 CPU cores.
TINY_TRAIN = [
    {"prompt": "Who compiled the Kalevala?", "response": "Elias Lönnrot compiled the Kalevala."},
    {"prompt": "Who put the Kalevala together?", "response": "Elias Lönnrot put it together."},
    {"prompt": "Which smith forged the Sampo?", "response": "Ilmarinen forged the Sampo."},
    {"prompt": "Who forged the Sampo for Louhi?", "response": "Ilmarinen, the smith, forged it."},
    {"prompt": "Who rules Pohjola?", "response": "Louhi rules Pohjola."},
    {"prompt": "Who is the mistress of the North?", "response": "Louhi, the mistress of Pohjola."},
    {"prompt": "How many poems are in the 1849 Kalevala?", "response": "The 1849 Kalevala has 50 poems."},
    {"prompt": "How many poems did the 1835 edition have?", "response": "The 1835 edition had 32 poems."},
]
TINY_VALIDATION = [
    {"prompt": "Name the compiler of the Kalevala.", "response": "Elias Lönnrot.", "key_facts": ["Lönnrot"]},
    {"prompt": "Who made the Sampo?", "response": "Ilmarinen made the Sampo.", "key_facts": ["Ilmarinen"]},
]
# Overrides that make the Kalevala CPU recipe a few-step test run.
FEW_STEPS = ["training.max_steps=6", "training.batch_size=4", "training.logging_steps=1",
             "training.save_steps=3", "training.learning_rate=0.002", "data.max_length=64"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write rows as JSON lines (test helper)."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def train_command(run_dir: Path, data: dict, *extra: str) -> list[str]:
    """`python -m tuning train` on the Kalevala recipe, shrunk to a few steps on tiny data."""
    overrides = [*FEW_STEPS, f"data.train=[{data['train']}]", f"data.validation=[{data['validation']}]", *extra]
    command = [sys.executable, "-m", "tuning", "train", "--config", str(REPO / "configs" / "kalevala.yaml"),
               "--output", str(run_dir)]
    for item in overrides:
        command += ["--set", item]
    return command
