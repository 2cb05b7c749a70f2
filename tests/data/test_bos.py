"""BOS: a tokenizer that starts plain text with BOS (TinyLlama's) gets it in front of every rendered
conversation -- training, chat, the scorecard and the GGUF export alike -- while a chat template that
writes BOS itself, or a tokenizer without one (the embedded SmolLM2), keeps exactly its own ids."""


import pytest
from helpers import ZEPHYR, write_bos_tokenizer

from tuning.chat.context import fit_prompt
from tuning.data.chat_template import IGNORE_INDEX, bos_to_add, count_tokens, encode_for_training, encode_prompt

WITH_BOS = "{{ bos_token }}" + ZEPHYR  # as Llama 2's and Llama 3's templates do
QUESTION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who forged the Sampo?"}]
CONVERSATION = [*QUESTION, {"role": "assistant", "content": "Ilmarinen."},
                {"role": "user", "content": "For whom?"}, {"role": "assistant", "content": "For Louhi."}]


@pytest.fixture(scope="module")
def spm_folder(tmp_path_factory):
    """A SentencePiece Llama tokenizer (tokenizer.model trained here) that adds BOS as TinyLlama's does."""
    return write_bos_tokenizer(tmp_path_factory.mktemp("spm-bos"))


@pytest.fixture
def tinyllama_like(spm_folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spm_folder)


def rendered(tokenizer, messages, generation_prompt):
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True,
                                              return_dict=False))


def test_the_tokenizer_adds_bos_and_the_template_does_not(tinyllama_like):
    bos = tinyllama_like.bos_token_id
    assert tinyllama_like("x").input_ids[0] == bos and bos_to_add(tinyllama_like) == bos
    assert bos not in rendered(tinyllama_like, QUESTION, True)  # the premise of the fix


def test_chat_prompts_start_with_one_bos(tinyllama_like):
    bos = tinyllama_like.bos_token_id
    expected = [bos, *rendered(tinyllama_like, QUESTION, True)]
    assert encode_prompt(tinyllama_like, QUESTION) == expected
    # The chat panes and the scorecard encode through fit_prompt, also when it has to cut the question.
    assert fit_prompt(tinyllama_like, QUESTION, budget=10_000).ids == expected
    long = [QUESTION[0], {"role": "user", "content": "Väinämöinen sang. " * 200}]
    cut = fit_prompt(tinyllama_like, long, budget=60)
    assert cut.cut_question and len(cut.ids) <= 60 and cut.ids[0] == bos and cut.ids.count(bos) == 1


def test_training_ids_start_with_bos_and_the_labels_shift_with_them(tinyllama_like):
    bos, eos = tinyllama_like.bos_token_id, tinyllama_like.eos_token_id
    example = encode_for_training(tinyllama_like, CONVERSATION, max_length=10_000)
    plain = rendered(tinyllama_like, CONVERSATION, False)
    assert example.input_ids == [bos, *plain] and example.labels[0] == IGNORE_INDEX
    assert all(label in (IGNORE_INDEX, token) for label, token in zip(example.labels, example.input_ids))
    learned = [i for i, label in enumerate(example.labels) if label != IGNORE_INDEX]
    spans = tinyllama_like.decode([example.input_ids[i] for i in learned])
    assert "Ilmarinen." in spans and "For Louhi." in spans and "Sampo" not in spans and "whom" not in spans
    # Each answer's labels begin right after the prompt the chat would have fed (BOS included) ...
    prompt = encode_prompt(tinyllama_like, CONVERSATION[:2])
    assert example.input_ids[: len(prompt)] == prompt and learned[0] == len(prompt)
    # ... and hold that answer and its end token.
    end = learned[0]
    while end + 1 in learned:
        end += 1
    answer = example.labels[learned[0]: end + 1]
    assert eos in answer and tinyllama_like.decode(answer[: answer.index(eos)]).strip() == "Ilmarinen."
    assert count_tokens(tinyllama_like, CONVERSATION) == len(example.input_ids)


def test_a_template_that_writes_bos_itself_keeps_one(tinyllama_like):
    tinyllama_like.chat_template = WITH_BOS
    bos = tinyllama_like.bos_token_id
    ids = rendered(tinyllama_like, QUESTION, True)
    assert ids[0] == bos and encode_prompt(tinyllama_like, QUESTION) == ids
    assert encode_for_training(tinyllama_like, CONVERSATION, 10_000).input_ids == rendered(tinyllama_like,
                                                                                          CONVERSATION, False)


def test_a_tokenizer_without_bos_on_plain_text_keeps_its_ids(spm_folder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spm_folder, add_bos_token=False)
    assert bos_to_add(tokenizer) is None
    assert encode_prompt(tokenizer, QUESTION) == rendered(tokenizer, QUESTION, True)


def test_the_embedded_model_is_unchanged():
    from tuning.models.loading import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model("embedded").path)
    assert bos_to_add(tokenizer) is None
    assert encode_prompt(tokenizer, QUESTION) == rendered(tokenizer, QUESTION, True)
    example = encode_for_training(tokenizer, CONVERSATION, 10_000)
    assert example.input_ids == rendered(tokenizer, CONVERSATION, False)
    assert fit_prompt(tokenizer, QUESTION, budget=10_000).ids == rendered(tokenizer, QUESTION, True)


@pytest.mark.parametrize("adds_bos", [True, False])
def test_the_gguf_starts_prompts_as_training_does(spm_folder, tmp_path, adds_bos):
    """llama.cpp (and Ollama) tokenize the rendered template without special tokens and put BOS in front
    when the GGUF says add_bos_token: that must be the ids training and chat use."""
    import shutil

    import gguf
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tuning.portable.gguf import write_gguf
    from tuning.portable.gguf_check import verify_gguf

    folder = tmp_path / "model"
    shutil.copytree(spm_folder, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, add_bos_token=adds_bos)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
                                 tie_word_embeddings=False)).save_pretrained(folder)
    path = write_gguf(folder, tmp_path / "tiny.gguf", "f32")
    fields = gguf.GGUFReader(path).fields
    add_bos = bool(fields["tokenizer.ggml.add_bos_token"].contents())
    bos = fields["tokenizer.ggml.bos_token_id"].contents()
    text = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    as_llama_cpp = [bos] * add_bos + tokenizer(text, add_special_tokens=False).input_ids
    assert add_bos == adds_bos and encode_prompt(tokenizer, QUESTION) == as_llama_cpp
    check = verify_gguf(folder, path, [QUESTION[1]["content"]], system_prompt="Be brief.", max_new_tokens=2)
    assert check.prompts_equal and not check.token_mismatches


def test_the_model_cards_snippet_sends_the_bos_training_used(spm_folder, trained_run, tmp_path):
    """A TinyLlama-like adapter's card tokenizes the rendered chat with special tokens (BOS first); the
    embedded model's card keeps the plain apply_chat_template call."""
    import shutil

    from tuning.hub.card import BOS_INPUTS, PLAIN_INPUTS, render_model_card

    assert PLAIN_INPUTS in render_model_card(trained_run) and BOS_INPUTS not in render_model_card(trained_run)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (run / "adapter" / name).unlink(missing_ok=True)
    for item in spm_folder.iterdir():
        shutil.copy(item, run / "adapter" / item.name)
    assert BOS_INPUTS in render_model_card(run)
