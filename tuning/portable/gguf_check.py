"""Check a GGUF file against the merged folder it was written from, both read by transformers (`gguf_file=`, which
dequantizes): the tokenizers' ids, the chat prompts and the greedy answers side by side."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class GGUFCheck:
    answers: list[tuple[str, str, str, bool]]  # (question, merged answer, GGUF answer, equal)
    token_mismatches: list[tuple[str, list[int], list[int]]]  # (text, merged ids, GGUF ids)
    prompts_equal: bool  # the GGUF's own chat template renders the questions to the same ids

    @property
    def ok(self) -> bool:
        return self.prompts_equal and not self.token_mismatches and all(a[3] for a in self.answers)


TOKENIZER_PROBES = ["Who compiled the Kalevala?", "Elias Lönnrot", "Väinämöinen sang the Sampo ÄÖÅ äöå",
                    "  two spaces, tabs\tand\nnewlines 1849 3.14", "<|im_start|>user\nhi<|im_end|>", "emoji 🦙 ok"]


def verify_gguf(merged_dir: str | os.PathLike, gguf_path: str | os.PathLike, questions: list[str],
                system_prompt: str | None = None, max_new_tokens: int = 32) -> GGUFCheck:
    """Greedy answers of the merged folder and of the GGUF (both loaded by transformers) side by side,
    and the two tokenizers' ids on TOKENIZER_PROBES."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuning.data.chat_template import encode_prompt, with_system_prompt

    gguf_path = Path(gguf_path)
    sides = []
    for path, kwargs in ((Path(merged_dir), {}), (gguf_path.parent, {"gguf_file": gguf_path.name})):
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs).eval()
        sides.append((tokenizer, model))
    (merged_tok, _), (gguf_tok, _) = sides
    mismatches = []
    for text in TOKENIZER_PROBES:
        a, b = merged_tok(text)["input_ids"], gguf_tok(text)["input_ids"]
        if list(a) != list(b):
            mismatches.append((text, list(a), list(b)))
    answers, prompts_equal = [], True
    for question in questions:
        messages = with_system_prompt([{"role": "user", "content": question}], system_prompt)
        replies, prompts = [], []
        for tokenizer, model in sides:
            pad = tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id
            ids = encode_prompt(tokenizer, messages)  # as chat and training encode it, BOS included
            prompts.append(list(ids))
            with torch.inference_mode():
                out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                                     top_k=None, pad_token_id=pad)
            replies.append(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip())
        prompts_equal &= prompts[0] == prompts[1]
        answers.append((question, replies[0], replies[1], replies[0] == replies[1]))
    return GGUFCheck(answers, mismatches, prompts_equal)


def read_back_answers(merged_dir: str | os.PathLike, questions: list, system_prompt: str | None = None,
                      gguf_path: str | os.PathLike | None = None, max_new_tokens: int = 128,
                      batch_size: int = 8) -> list[str]:
    """Greedy answers of the merged folder, or (gguf_path) of a GGUF of it read back by transformers, which
    dequantizes it to fp32: the prompts chat and the scorecard build, in their left-padded batches
    (SideBySideChat with no adapter), computed in fp32 either way so only the weights differ."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuning.chat.side_by_side import GenerationSettings, SideBySideChat
    from tuning.config import ModelConfig
    from tuning.models.loading import ResolvedModel
    from tuning.models.memory import free_memory

    merged_dir = Path(merged_dir)
    gguf_path = Path(gguf_path) if gguf_path else None

    class ReadBack(SideBySideChat):
        def _load_base(self):
            if gguf_path is None:
                return super()._load_base()
            model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                         dtype=torch.float32)
            return model.to("cuda") if torch.cuda.is_available() else model  # where the merged one goes

    chat = ReadBack(ResolvedModel(name=str(gguf_path or merged_dir), path=merged_dir),
                    ModelConfig(name=str(merged_dir), load_in_4bit=False, compute_dtype="float32"), system_prompt)
    if gguf_path is not None:  # the GGUF's own tokenizer and chat template, as llama.cpp reads them
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        chat.tokenizer = tokenizer
    answers = chat.answer_many(questions, adapter_on=False, settings=GenerationSettings(max_new_tokens=max_new_tokens),
                               batch_size=batch_size)
    del chat
    free_memory()
    return answers
