"""Stage eval (method.md §8) with a fake engine: truncation, one engine call, per-set means."""

import pytest
from longmab.engines import SamplingConfig
from longmab.stages.evaluate import evaluate, fit_context, summarize

TEMPLATES = {"answer": "Doc:\n{context}\nQ: {question}\n", "probe": "{context}{question}{answer}"}


class CharTokenizer:
    """One token per character."""

    def encode(self, s, add_special_tokens=False):
        return [ord(c) for c in s]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "<u>" + messages[0]["content"] + "</u><a>"


class FakeEngine:
    def __init__(self, answers):
        self.tokenizer = CharTokenizer()
        self.answers = answers
        self.calls = []

    def count_tokens(self, text):
        return len(text)

    def generate(self, conversations, sampling, seeds):
        self.calls.append((conversations, sampling, seeds))
        return [self.answers[c[0]["content"].split("Q: ")[1].strip()] for c in conversations]

    def close(self):
        pass


def enc(s):
    return [ord(c) for c in s]


def dec(ids):
    return "".join(chr(i) for i in ids)


def test_fit_context_untouched_when_short():
    prompt, n, cut = fit_context(TEMPLATES, "abc", "q?", enc, dec, 100)
    assert prompt == "Doc:\nabc\nQ: q?\n" and n == len(prompt) and not cut


def test_fit_context_keeps_head_and_tail():
    context = "A" * 50 + "M" * 100 + "Z" * 50
    overhead = len(TEMPLATES["answer"].format(context="", question="q?"))  # 13
    prompt, n, cut = fit_context(TEMPLATES, context, "q?", enc, dec, overhead + 40)
    assert cut and n == overhead + 40
    assert prompt == TEMPLATES["answer"].format(context="A" * 20 + "Z" * 20, question="q?")


def test_fit_context_no_room_for_context():
    prompt, _, cut = fit_context(TEMPLATES, "x" * 100, "q?", enc, dec, 5)
    assert cut and prompt == TEMPLATES["answer"].format(context="", question="q?")


def test_evaluate_scores_and_means():
    bench = {
        "setA": [
            {"id": "1", "input": "who?", "context": "Bob did it.", "answers": ["Bob"]},
            {"id": "2", "input": "when?", "context": "In 1901.", "answers": ["1901"]},
        ],
        "setB": [{"id": "x", "input": "where?", "context": "In Paris.", "answers": ["Paris", "paris france"]}],
    }
    answers = {"who?": "Reasoning: ...\nAnswer: Bob", "when?": "I think 1901.",  # no marker -> all 0
               "where?": "Answer: Paris, France"}
    eng = FakeEngine(answers)
    sampling = SamplingConfig(temperature=0.0, top_p=1.0, presence_penalty=0.0, max_tokens=8)
    preds, metrics = evaluate(bench, eng, TEMPLATES, sampling, max_input_len=1000, seed=1, model_name="base")
    assert len(eng.calls) == 1 and len(eng.calls[0][0]) == 3  # one engine call for every set
    assert [p["id"] for p in preds["setA"]] == ["1", "2"]
    a1, a2 = preds["setA"]
    assert (a1["em"], a1["subem"], a1["pred"]) == (1.0, 1.0, "bob")
    assert (a2["em"], a2["f1"], a2["subem"], a2["pred"]) == (0.0, 0.0, 0.0, None)
    m = metrics["setA"]
    assert m["model"] == "base" and m["benchmark"] == "setA" and m["n"] == 2
    assert m["em"] == pytest.approx(50.0) and m["subem"] == pytest.approx(50.0) and m["f1"] == pytest.approx(50.0)
    assert m["unit"] == "percent"
    b = metrics["setB"]  # "paris france" (normalized) is an exact match of the second gold
    assert b["n"] == 1 and b["em"] == 100.0 and b["subem"] == 100.0


def test_evaluate_caps_budget_by_max_model_len():
    bench = {"s": [{"id": "1", "input": "who?", "context": "B" * 500, "answers": ["Bob"]}]}
    eng = FakeEngine({"who?": "Answer: Bob"})
    sampling = SamplingConfig(temperature=0.0, max_tokens=20)
    preds, _ = evaluate(bench, eng, TEMPLATES, sampling, max_input_len=10_000, seed=0, max_model_len=200)
    overhead = len("<u></u><a>")
    assert preds["s"][0]["truncated"]
    assert preds["s"][0]["prompt_tokens"] <= 200 - 20 - overhead


def test_summarize_empty_and_small():
    assert summarize([], "m", "b")["n"] == 0
    rows = [{"em": 1.0, "f1": 0.5, "subem": 1.0, "subem_char": 1.0, "subem_token": 0.0}]
    s = summarize(rows, "m", "b")
    assert (s["n"], s["em"], s["f1"], s["subem_token"]) == (1, 100.0, 50.0, 0.0)
