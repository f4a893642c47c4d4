"""Prompt templates (method.md §2, §4)."""

import pytest
from longmab.metrics import extract_answer, extract_probe_answer, probe_matches
from longmab.prompts import (
    DEFAULT_TEMPLATES,
    echo_risks,
    join_chunks,
    load_templates,
    render_answer,
    render_probe,
)

CTX = "Passage 1:\nParis is the capital of France.\n\nPassage 2:\nOslo is the capital of Norway."
Q = "What is the capital of France?"


def test_defaults_loaded_and_independent_copy():
    t = load_templates()
    assert t == DEFAULT_TEMPLATES and t is not DEFAULT_TEMPLATES
    t["answer"] = "changed {context} {question}"
    assert load_templates(None)["answer"] == DEFAULT_TEMPLATES["answer"]
    assert load_templates({"probe": None, "answer": ""}) == DEFAULT_TEMPLATES


def test_render_probe_contains_document_question_and_gold():
    msgs = render_probe(load_templates(), CTX, Q, "Paris")
    assert len(msgs) == 1 and msgs[0]["role"] == "user"
    content = msgs[0]["content"]
    assert CTX in content and Q in content and "Paris" in content.split(Q)[1]
    assert '"The answer is" followed by the correct answer' in content


def test_render_answer_structure():
    msgs = render_answer(load_templates(), CTX, Q)
    assert [m["role"] for m in msgs] == ["user"]
    content = msgs[0]["content"]
    assert CTX in content and Q in content and '"Reasoning"' in content and '"Answer"' in content
    assert content.index(CTX) < content.index(Q)


def test_default_prompts_hold_no_extractable_answer():
    # A model that echoes the instructions must not yield an answer from them (method.md §9).
    answer_prompt = render_answer(load_templates(), CTX, Q)[0]["content"]
    assert extract_answer(answer_prompt) is None
    assert extract_answer(answer_prompt + "\nReasoning: Passage 1 says so.\nAnswer: Paris") == "paris"
    probe_prompt = render_probe(load_templates(), CTX, Q, "Paris")[0]["content"]
    assert not probe_matches(probe_prompt, "Paris")  # an echoed probe prompt is not a correct probe
    assert extract_probe_answer(probe_prompt + "\nThe answer is Paris.") == "paris."


def test_an_echo_of_the_default_probe_template_is_no_answer():
    # Issue #9.5: the default probe template names the marker the model must write ("The answer is"),
    # which the tiny embedded model needs to see (keep rate 0/12 on the tiny fixture without it); an
    # echo of that instruction is never taken as the answer (the template-aware extraction).
    template = DEFAULT_TEMPLATES["probe"]
    sentence = template.rsplit("quote the relevant words. ", 1)[1]
    assert sentence.startswith("Finish with one final sentence") and "The answer is" in sentence
    echo = "Passage 1 names Paris.\n" + sentence
    assert extract_probe_answer(echo) is not None  # the reference's filter would take the echo
    assert extract_probe_answer(echo, template) is None
    assert extract_probe_answer(echo + "\nThe answer is Paris.", template) == "paris."


def test_echo_risk_of_a_marker_right_before_the_answer_field(caplog):
    bad = "{context}\n{question}\nEnd with: The answer is {answer}"
    assert echo_risks("probe", bad) and not echo_risks("answer", bad)
    assert echo_risks("probe", DEFAULT_TEMPLATES["probe"]) == []
    with caplog.at_level("WARNING", logger="longmab"):
        load_templates({"probe": bad})
    assert "right before {answer}" in caplog.text


def test_braces_in_values_are_not_reinterpreted():
    content = render_answer(load_templates(), "code {x} and }{", "q {y}?")[0]["content"]
    assert "code {x} and }{" in content and "q {y}?" in content


def test_override_with_string():
    t = load_templates({"answer": "C: {context}\nQ: {question}"})
    assert render_answer(t, "ctx", "why?") == [{"role": "user", "content": "C: ctx\nQ: why?"}]
    assert t["probe"] == DEFAULT_TEMPLATES["probe"]


def test_override_with_txt_file(tmp_path):
    f = tmp_path / "probe.txt"
    f.write_text("{context}|{question}|{answer}", encoding="utf-8")
    for value in (str(f), f):
        t = load_templates({"probe": value})
        assert render_probe(t, "c", "q", "a")[0]["content"] == "c|q|a"
    with pytest.raises(FileNotFoundError, match="probe"):
        load_templates({"probe": str(tmp_path / "missing.txt")})


def test_validation_errors_name_the_template():
    with pytest.raises(ValueError, match=r"'probe'.*answer"):
        load_templates({"probe": "{context} {question}"})
    with pytest.raises(ValueError, match=r"'answer'.*foo"):
        load_templates({"answer": "{context} {question} {foo}"})
    with pytest.raises(ValueError, match="'answer'"):
        load_templates({"answer": "{context} {question"})
    with pytest.raises(ValueError, match="'answer'"):
        load_templates({"answer": "{} {context} {question}"})
    with pytest.raises(ValueError, match="unknown prompt template 'judge'"):
        load_templates({"judge": "{context}"})
    # Literal braces are fine when doubled.
    t = load_templates({"answer": "{{json}} {context} {question}"})
    assert render_answer(t, "c", "q")[0]["content"] == "{json} c q"


def test_join_chunks_document_order():
    # Chunks as longmab.chunking cuts them: the whitespace after a delimiter begins the next chunk.
    chunks = ["c0 text.", " c1 text.", "\n\nPassage 2:\nc2 text."]
    assert join_chunks(chunks, [2, 0]) == "c0 text.\n\n\nPassage 2:\nc2 text."  # not stripped (reference)
    assert join_chunks(chunks, [1, 1]) == " c1 text."
    assert join_chunks(chunks, []) == ""
    with pytest.raises(IndexError):
        join_chunks(chunks, [3])
    with pytest.raises(IndexError):
        join_chunks(chunks, [-1])
