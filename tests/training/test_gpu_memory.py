"""GPU memory of the app process and the trainer: a dropped model is really freed, models a visitor picks load
in 4 bits on a GPU and are sized before they load, and a plain training process sees one GPU.

No GPU here: CUDA is faked by monkeypatching torch.cuda's functions, after any real model has loaded."""

import gc
import json
import subprocess
import sys
import weakref

import pytest
import torch
from helpers import REPO, train_command

from tuning.chat import switcher as chat_switcher
from tuning.chat.switcher import ChatSwitcher
from tuning.config import ModelConfig, RecipeConfig
from tuning.guards.caps import CAP_ENV_PREFIX, CapError
from tuning.models.loading import ModelLoadError, embedded_model_dir, resolve_model
from tuning.models.memory import check_model_params, count_parameters
from tuning.qa import backends as qa_backends
from tuning.runs.queue import TrainingQueue, child_environment
from tuning.training.distributed import Placement, effective_batch, gpus_per_process


class Weights(torch.nn.Module):
    """A stand-in model in a reference cycle (as a model is while a frame that loaded it is held, e.g. by a
    logged exception's traceback)."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 4)
        self.__dict__["me"] = self  # outside nn.Module's bookkeeping: a plain cycle


class FakeChat:
    """SideBySideChat without loading a model: holds one Weights and records what it was asked to load."""

    loaded: list = []

    def __init__(self, model, model_cfg, system_prompt=None):
        self.model_ref, self.model_cfg, self.model = model, model_cfg, Weights()
        FakeChat.loaded.append((model.name, model_cfg.load_in_4bit))

    def use_adapter(self, adapter_dir, label=None):
        self.adapter_dir = adapter_dir


@pytest.fixture
def fake_chat(monkeypatch):
    FakeChat.loaded = []
    monkeypatch.setattr(chat_switcher, "SideBySideChat", FakeChat)
    return FakeChat


@pytest.fixture
def no_automatic_gc():
    """Only an explicit gc.collect() may free a cycle, so a test can't pass by the collector's timing."""
    gc.disable()
    yield
    gc.enable()


def test_release_frees_the_chat_model_and_the_gpu_cache(fake_chat, monkeypatch, no_automatic_gc):
    switcher = ChatSwitcher()
    chat, _ = switcher.select_base()
    old = weakref.ref(chat.model)
    del chat
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # faked after the load: nothing went to a GPU
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    switcher.release()
    assert old() is None, "the released chat model is still in memory"
    assert calls == ["empty_cache"]


def test_release_leaves_nothing_holding_the_real_chat_model(no_automatic_gc):
    # Imported before the model loads: bitsandbytes' first import (here, inside from_pretrained) logs a warning
    # holding an ImportError, whose traceback holds the frames that imported it, from_pretrained's among them,
    # and so its model -- a cycle in the app, and kept for good by pytest's log capture.
    import bitsandbytes  # noqa: F401

    switcher = ChatSwitcher()
    chat, _ = switcher.select_base()
    old = weakref.ref(chat.model)
    del chat
    switcher.release()
    assert old() is None, "something still holds the released chat model"


def test_replacing_the_base_frees_the_old_one_before_the_new_one_loads(fake_chat, monkeypatch, no_automatic_gc):
    switcher = ChatSwitcher()
    chat, _ = switcher.select_base()
    old = weakref.ref(chat.model)
    del chat
    alive_at_load = []
    original = FakeChat.__init__

    def load_after_check(self, model, model_cfg, system_prompt=None):
        alive_at_load.append(old() is not None)
        original(self, model, model_cfg, system_prompt)

    monkeypatch.setattr(FakeChat, "__init__", load_after_check)
    switcher.select_base()  # same base: nothing reloads
    assert alive_at_load == []
    switcher._ensure_base("embedded", ModelConfig(load_in_4bit=False), "another system prompt")
    assert alive_at_load == [False]


def test_a_hub_adapters_base_loads_in_4_bits_on_a_gpu_full_precision_on_a_cpu(fake_chat, tmp_path, monkeypatch):
    folder = tmp_path / "adapter"
    folder.mkdir()
    monkeypatch.setattr(chat_switcher, "fetch_hub_adapter", lambda repo_id: (folder, "embedded"))
    switcher = ChatSwitcher()
    switcher.select_hub_adapter("alice/kalevala-lora")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # faked after the first load, as a GPU machine
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    switcher.select_hub_adapter("alice/kalevala-lora")
    assert fake_chat.loaded == [("embedded", False), ("embedded", True)]


def test_the_parameter_count_comes_from_the_config_alone(tmp_path):
    config = json.loads((embedded_model_dir() / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))  # no weights in this folder
    count = count_parameters(tmp_path)
    assert 134_000_000 < count < 136_000_000  # SmolLM2-135M, tied embeddings counted once
    wider = {**config, "num_hidden_layers": config["num_hidden_layers"] * 100}
    (tmp_path / "config.json").write_text(json.dumps(wider))
    assert count_parameters(tmp_path) > 100 * (count - config["vocab_size"] * config["hidden_size"])


def big_model_folder(tmp_path):
    """Llama-2-13B's config.json and nothing else: loading its weights would fail loudly."""
    folder = tmp_path / "big-model"
    folder.mkdir()
    config = json.loads((embedded_model_dir() / "config.json").read_text())
    config.pop("head_dim", None)  # hidden_size / heads
    config.update(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                  num_key_value_heads=40, vocab_size=32000, tie_word_embeddings=False)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_visitors_model_over_the_parameter_cap_is_refused_naming_the_cap(tmp_path, monkeypatch):
    folder = big_model_folder(tmp_path)
    monkeypatch.setenv(CAP_ENV_PREFIX + "MODEL_PARAMS", "2e9")
    with pytest.raises(CapError) as refused:
        check_model_params("someone/big-model", folder)
    assert isinstance(refused.value, ModelLoadError)  # the loaders' callers report it as they report those
    assert "13,015,864,320" in str(refused.value) and "2,000,000,000" in str(refused.value)  # Llama-2-13B's own count
    assert f"{CAP_ENV_PREFIX}MODEL_PARAMS" in str(refused.value)
    check_model_params("embedded", folder)  # the owner's pick is theirs to size
    monkeypatch.setenv(CAP_ENV_PREFIX + "MODEL_PARAMS", "none")
    check_model_params("someone/big-model", folder)


def test_a_hub_adapter_on_a_too_big_base_is_refused_before_loading_and_the_chat_stays(fake_chat, tmp_path,
                                                                                      monkeypatch):
    folder = big_model_folder(tmp_path)
    monkeypatch.setenv(CAP_ENV_PREFIX + "MODEL_PARAMS", "2e9")
    monkeypatch.setattr(chat_switcher, "fetch_hub_adapter", lambda repo_id: (tmp_path, "someone/big-model"))
    monkeypatch.setattr(chat_switcher, "resolve_model",
                        lambda name, revision=None: resolve_model(str(folder) if name == "someone/big-model" else name))
    switcher = ChatSwitcher()
    chat, _ = switcher.select_base()
    with pytest.raises(CapError, match=f"{CAP_ENV_PREFIX}MODEL_PARAMS"):
        switcher.select_hub_adapter("someone/big-model-lora")
    assert [name for name, _ in fake_chat.loaded] == ["embedded"]  # nothing else loaded
    assert switcher.select_base()[0] is chat


def test_the_local_qa_model_loads_in_4_bits_on_a_gpu_and_is_sized_first(tmp_path, monkeypatch):
    loads = []
    monkeypatch.setattr("tuning.models.loading.load_base_model",
                        lambda path, cfg, placement=None, work=None: loads.append(cfg.load_in_4bit) or torch.nn.Linear(1, 1))
    qa_backends.LocalBackend("embedded")._load()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # load_base_model is the fake: nothing goes to a GPU
    qa_backends.LocalBackend("embedded")._load()
    assert loads == [False, True]

    folder = big_model_folder(tmp_path)
    (folder / "tokenizer.json").write_text("not read: the count comes first")
    monkeypatch.setenv(CAP_ENV_PREFIX + "MODEL_PARAMS", "2e9")
    with pytest.raises(CapError, match=f"{CAP_ENV_PREFIX}MODEL_PARAMS"):
        qa_backends.LocalBackend(str(folder))._load()
    assert loads == [False, True]


def test_the_training_model_is_freed_before_the_scorecard_loads_its_own(tmp_path, tiny_data):
    """A real few-step run; the scorecard is replaced by a check of what is still alive when it would start.

    With the libraries installed here the Trainer's own cleanup leaves the model free of cycles on a CPU (then
    `del` is enough); a forward hook that refers back to the model, as library hooks may, puts it in one, so
    the test holds whatever the libraries do."""
    driver = """
import gc, json, sys, weakref
import tuning.training.train as train
gc.disable()  # only the trainer's own gc.collect() may free a cycle: the result can't hang on the collector's timing
refs, load = [], train.load_model_for_training
def load_recording(*args, **kwargs):
    model = load(*args, **kwargs)
    refs.extend([weakref.ref(model), weakref.ref(model.get_base_model())])
    model.get_base_model().register_forward_hook(lambda module, inputs, output: model and None)  # a cycle
    return model
def scorecard_checking(run_dir, training):
    (run_dir / "alive.json").write_text(json.dumps([ref() is not None for ref in refs]))
train.load_model_for_training, train.write_scorecard = load_recording, scorecard_checking
from tuning.cli import main
sys.exit(main(sys.argv[1:]))
"""
    run_dir = tmp_path / "run"
    command = train_command(run_dir, tiny_data, "training.max_steps=2")
    result = subprocess.run([sys.executable, "-c", driver, *command[3:]], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "alive.json").read_text()) == [False, False]


def test_a_plain_training_process_is_pinned_to_one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert child_environment({"PATH": "/bin"}) == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0"}
    # The person who chose the GPUs, or a launcher that places processes, decides.
    assert child_environment({"CUDA_VISIBLE_DEVICES": "2,3"})["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert "CUDA_VISIBLE_DEVICES" not in child_environment({"WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert child_environment({"PATH": "/bin"}) == {"PATH": "/bin"}


def test_the_queue_starts_the_trainer_with_that_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    started = []

    class Process:
        pid, returncode = 12345, None

        def poll(self):
            return None

    monkeypatch.setattr(subprocess, "Popen", lambda command, **kwargs: started.append(kwargs) or Process())
    TrainingQueue(tmp_path / "runs").submit(RecipeConfig())
    assert started[0]["env"]["CUDA_VISIBLE_DEVICES"] == "0"


def test_the_logged_batch_counts_the_gpus_a_plain_run_splits_it_over(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert gpus_per_process(Placement()) == 2  # the Trainer's DataParallel: batch_size per GPU
    assert gpus_per_process(Placement(world_size=2)) == 1  # launched: one GPU per process
    assert effective_batch(8, 2, 1, gpus_per_process(Placement())) == 32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpus_per_process(Placement()) == 1
