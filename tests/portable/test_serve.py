"""`python -m tuning serve`: a trained run behind a real `transformers serve` on loopback, asked with the `openai`
client; its answers are the merged model's, to the prompt training would have built."""

import subprocess
import sys
import urllib.request

import pytest
from helpers import REPO, free_port, stop_process, wait_until_healthy

from tuning.data.chat_template import encode_prompt, with_system_prompt
from tuning.portable.serve import SERVED_MARKER, prepare_served_model, served_chat_template
from tuning.runs.run import Run

STARTUP_S = 240
QUESTIONS = ["Who compiled the Kalevala?", "Which smith forged the Sampo?"]
REPLY_TOKENS = 16


def base_tokenizer(run_dir):
    """The tokenizer the run trained with, its chat template untouched."""
    from transformers import AutoTokenizer

    from tuning.models.loading import resolve_model

    base = Run(run_dir).base_model()
    return AutoTokenizer.from_pretrained(resolve_model(base.name, base.revision).path)


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    """(base URL, model id, merged folder) of `python -m tuning serve --run` on a free loopback port."""
    merged_root = tmp_path_factory.mktemp("served")
    port = free_port()
    log_path = merged_root.parent / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "tuning", "serve", "--run", str(trained_run), "--port",
                                    str(port), "--device", "cpu", "--merged-dir", str(merged_root)],
                                   cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(process, port, STARTUP_S, "python -m tuning serve")
        except RuntimeError as error:
            pytest.fail(f"{error}:\n{log_path.read_text()[-3000:]}")
        yield f"http://127.0.0.1:{port}/v1", merged_root, process, log_path
        stop_process(process)


def test_openai_client_gets_the_merged_models_greedy_answers(server, trained_run):
    import torch
    from openai import OpenAI
    from transformers import AutoModelForCausalLM

    url, merged_root, _, _ = server
    client = OpenAI(base_url=url, api_key="unused")
    listed = "tiny"  # the run's name, as `serve` prints it: a client asks for the run, not a server path
    system_prompt = Run(trained_run).recipe().data.system_prompt
    tokenizer = base_tokenizer(trained_run)
    model = AutoModelForCausalLM.from_pretrained(merged_root / listed, dtype="auto").eval()
    for question in QUESTIONS:
        reply = client.chat.completions.create(model=listed, messages=[{"role": "user", "content": question}],
                                               temperature=0, max_tokens=REPLY_TOKENS)
        # The same answer the merged model gives, locally, to the prompt training builds (with the run's system turn).
        ids = encode_prompt(tokenizer, with_system_prompt([{"role": "user", "content": question}], system_prompt))
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=REPLY_TOKENS, do_sample=False)
        expected = tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()
        assert reply.choices[0].message.content.strip() == expected
        assert reply.usage.prompt_tokens == len(ids)


def test_a_second_start_reuses_the_merge_and_stopping_ends_the_server(server, trained_run):
    url, merged_root, process, log_path = server
    folder = merged_root / "tiny"
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    served = prepare_served_model(trained_run, merged_root)  # as a second `serve --merged-dir` would
    assert served.folder == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert (folder / SERVED_MARKER).is_file()
    assert "as model 'tiny'" in log_path.read_text()
    stop_process(process)  # SIGTERM: the server is stopped with it
    assert process.returncode is not None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/models", timeout=5)


def test_served_template_adds_the_runs_system_turn_only_when_a_chat_has_none(trained_run, tmp_path):
    tokenizer = base_tokenizer(trained_run)
    prompt = "You are a Kalevala scholar."
    template = served_chat_template(tokenizer.chat_template, prompt, bos=None)
    user = [{"role": "user", "content": "Who is Väinämöinen?"}]
    own = [{"role": "system", "content": "Answer in Finnish."}, *user]
    render = lambda messages: tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,  # noqa: E731
                                                            add_generation_prompt=True)
    plain = lambda messages: tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)  # noqa: E731
    assert render(user) == plain(with_system_prompt(user, prompt))
    assert render(own) == plain(own)  # a client's own system turn is kept, the run's not added
    # A model that always saw BOS first (TinyLlama) gets it at the start of every served prompt, once.
    with_bos = served_chat_template(tokenizer.chat_template, None, bos="<s>")
    assert tokenizer.apply_chat_template(user, chat_template=with_bos, tokenize=False).startswith("<s><|im_start|>")


def test_a_folder_that_is_not_a_finished_run_is_refused(tmp_path):
    from tuning.portable.export import ExportError

    with pytest.raises(ExportError, match="not a run folder"):
        prepare_served_model(tmp_path, tmp_path / "merged")
