"""What the LLM is asked: N grounded pairs per chunk, a 1-10 judgement of pairs, and off-topic redirects."""

from __future__ import annotations

import random

from tuning.errors import UsageError
from tuning.qa.sources import Chunk

MIN_PAIRS, MAX_PAIRS = 10, 20  # per batch: small enough to stay information-rich, as the guides advise
MAX_PREVIOUS_SHOWN = 40  # earlier questions listed so the next batch asks new ones; more only costs context
TOKENS_PER_PAIR = 90  # a short question and a one-sentence answer in JSON, with headroom
REPLY_OVERHEAD_TOKENS = 60
JUDGE_TOKENS_PER_PAIR = 45

GENERATOR_SYSTEM = "You write question-and-answer pairs for training a chat assistant. You reply with JSON only."

GENERATOR_RULES = """Rules:
- Every answer must come from the text alone. Do not add facts that are not in the text.
- Cover different parts of the text, not only its first sentences.
- Each question must make sense on its own: name the people, places and things it asks about. Never write "according to the text", "in the passage" or "the author".
- Vary the phrasing: who, what, when, where, why and how questions, and requests such as "Explain ..." or "Name ...".
- Answers are short and factual: one or two sentences."""  # noqa: E501 -- the prompt, word for word

JUDGE_SYSTEM = "You check training data for a chat assistant. You reply with JSON only."

# Off-topic prompts teach the tuned model to steer back to its subject ("moderation by data").
OFF_TOPIC_QUESTIONS = (
    "What's the weather going to be like tomorrow?", "Can you write me a Python function that sorts a list?",
    "What is the capital of Australia?", "Give me a recipe for chocolate chip cookies.",
    "Who won the last football World Cup?", "How do I fix a flat bicycle tyre?",
    "What's a good stock to invest in right now?", "Can you help me with my calculus homework?",
    "Tell me a joke about programmers.", "How many calories are in a banana?",
    "What's the best smartphone to buy this year?", "Translate 'good morning' into Japanese.",
    "How do I reset my router?", "Recommend a TV series to watch tonight.",
    "What's the fastest way to lose weight?", "Write a limerick about a cat.",
    "How far is the Moon from the Earth?", "Can you book me a table at a restaurant?",
    "What should I name my new puppy?", "Explain how a car engine works.",
)
OFF_TOPIC_ANSWER = ("I'm sorry, I can only help with questions about {topic}. "
                    "Is there something about {topic} you would like to know?")


def pair_budget(pairs: int) -> int:
    """max_tokens for a reply holding `pairs` pairs."""
    return REPLY_OVERHEAD_TOKENS + pairs * TOKENS_PER_PAIR


def generation_messages(chunk: Chunk, pairs: int, previous_questions: list[str] = ()) -> list[dict]:
    """The chat asking for exactly `pairs` pairs from one chunk, new ones when it was asked before."""
    if not MIN_PAIRS <= pairs <= MAX_PAIRS:
        raise UsageError(f"pairs per batch must be {MIN_PAIRS}-{MAX_PAIRS}, got {pairs}")
    parts = [f'Text (from "{chunk.source}", part {chunk.chunk_id + 1}):\n"""\n{chunk.text.strip()}\n"""',
             f"Write exactly {pairs} question-and-answer pairs about the text above.", GENERATOR_RULES]
    if previous_questions:
        shown = list(previous_questions)[-MAX_PREVIOUS_SHOWN:]
        listed = "\n".join(f"- {q}" for q in shown)
        parts.append(f"These questions were already written. Ask about other facts, with new questions:\n{listed}")
    parts.append(f'Reply with only a JSON array of {pairs} objects and nothing else:\n'
                 '[{"question": "...", "answer": "..."}, {"question": "...", "answer": "..."}]')
    return [{"role": "system", "content": GENERATOR_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def retry_messages(messages: list[dict], problem: str) -> list[dict]:
    """The same request once more, saying what was wrong with the first reply."""
    reminder = (f"\n\nYour previous reply could not be used ({problem}). Reply with the JSON array only, "
                'starting with [ and ending with ].')
    return [*messages[:-1], {"role": "user", "content": messages[-1]["content"] + reminder}]


def judge_messages(chunk: Chunk, pairs: list[dict]) -> list[dict]:
    """The chat asking for a 1-10 score and a reason for each pair, given the chunk it came from."""
    listed = "\n".join(f"{i}. Question: {p['question']}\n   Answer: {p['answer']}" for i, p in enumerate(pairs, 1))
    content = (f'Text:\n"""\n{chunk.text.strip()}\n"""\n\nQuestion-and-answer pairs written from the text:\n{listed}\n\n'
               "Score each pair from 1 to 10 as training data: 10 = the answer is correct and fully supported "
               "by the text and the question is clear on its own; 5 = partly supported or vague; 1 = wrong, "
               "made up or unclear. Give a short reason.\n\n"
               f'Reply with only a JSON array of {len(pairs)} objects:\n[{{"id": 1, "score": 8, "reason": "..."}}]')
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}]


def judge_budget(pairs: int) -> int:
    """max_tokens for a judgement of `pairs` pairs."""
    return REPLY_OVERHEAD_TOKENS + pairs * JUDGE_TOKENS_PER_PAIR


def off_topic_pairs(count: int, topic: str, seed: int = 0) -> list[dict]:
    """`count` off-topic questions (no repeats) with a polite answer that steers back to `topic`."""
    topic = topic.strip() or "this subject"
    questions = random.Random(seed).sample(OFF_TOPIC_QUESTIONS, min(count, len(OFF_TOPIC_QUESTIONS)))
    return [{"question": q, "answer": OFF_TOPIC_ANSWER.format(topic=topic)} for q in questions]
