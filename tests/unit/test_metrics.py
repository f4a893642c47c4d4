"""Answer extraction, metrics and rewards (method.md §2, §4, §5, §6); numbers computed by hand."""

import pytest
from longmab.metrics import (
    best_over_golds,
    exact_match,
    extract_answer,
    extract_probe_answer,
    f1_score,
    marker_contexts,
    template_word_runs,
    normalize_answer,
    probe_matches,
    rollout_reward,
    score_prediction,
    strict_reward,
    sub_exact_match,
)

# --------------------------------------------------------------------------------------------------
# Normalization


def test_normalize_answer():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("An apple a day, THE end.") == "apple day end"
    assert normalize_answer("theater") == "theater"  # articles only as whole words
    assert normalize_answer("U.S.") == "us"
    assert normalize_answer("  ") == ""


# --------------------------------------------------------------------------------------------------
# Extraction


def test_extract_answer_basic_and_last_occurrence():
    assert extract_answer("Reasoning: it is the capital.\nAnswer: Paris") == "paris"
    assert extract_answer("Answer: London. On second thought...\nAnswer:  Paris ") == "paris"


def test_extract_answer_prefix_order():
    # "answer:" is tried first and wins even though "the answer is:" occurs later.
    assert extract_answer("Answer: Paris. The answer is: Rome") == "paris. the answer is: rome"
    # "the answer is: rome" contains no "answer:", so the second prefix is used.
    assert extract_answer("So the answer is: Rome") == "rome"
    assert extract_answer("My final answer is: 42") == "42"


def test_extract_answer_none_cases():
    assert extract_answer("I think it is Paris.") is None
    assert extract_answer("Reasoning: hmm\nAnswer:") is None
    # The last occurrence is empty: no fallback to an earlier one.
    assert extract_answer("Answer: Paris\nAnswer:   \n") is None
    assert extract_answer("") is None
    assert extract_answer(None) is None
    # Without a colon "the answer is" is not an extraction prefix (method.md §5 lists only these three).
    assert extract_answer("The answer is Paris") is None


def test_extract_answer_prompt_echo():
    echoed = 'Write a line that starts with the word "Answer" followed by a colon.\nReasoning: ok\nAnswer: Oslo'
    assert extract_answer(echoed) == "oslo"
    # A prompt that shows a placeholder would be picked up if echoed: the reason the defaults do not.
    assert extract_answer("Use the form Answer: answer here") == "answer here"


def test_extract_probe_answer():
    assert extract_probe_answer("Step 1: ... The answer is Paris.") == "paris."
    assert extract_probe_answer("The answer is: Paris") == "paris"  # colon allowed (reference rejects it)
    assert extract_probe_answer("The answer is:\nParis\nThanks") == "paris"
    assert extract_probe_answer("The answer is London. Wait, the answer is Paris") == "paris"  # last marker
    assert extract_probe_answer("the answer is x; no, the answer is y") == "y"  # last marker on one line
    assert extract_probe_answer("Paris. The answer is") is None  # empty capture
    assert extract_probe_answer("the answer isn't clear") is None
    assert extract_probe_answer("no marker") is None
    assert extract_probe_answer("") is None


#: The probe template before issue #9.5 (as a user template now): it wrote the marker itself.
OLD_PROBE = (
    "Document:\n{context}\n\nQuestion: {question}\nCorrect answer: {answer}\n\nExplain step by step how the "
    "correct answer follows from the document. In each step, cite the passage of the document that supports "
    "it and quote the relevant words. Finish with one final sentence that begins with the words \"The "
    "answer is\" followed by the correct answer."
)
#: The paper's probe instruction (reference src/syn_po_data/template.py, gen_probe).
PAPER_PROBE = (
    "You are provided with a long document, a complex logical reasoning question, and the correct answer. "
    "Your task is to read the document and perform step-by-step reasoning and finally reach the correct "
    "answer.\nInstructions:1.Each reasoning step should explicitly refer to the document.\n2.End your "
    "reasoning with `The answer is` followed by the correct answer.\nDocument: {context}\n"
    "Question: {question}\nAnswer: {answer}"
)
OBSERVED_ECHO = (
    "Step 1: Passage 2 says the river rises in the hills.\n... Finish with one final sentence that begins "
    "with the words \"The answer is\" followed by the correct answer."
)


def test_probe_echo_of_the_instruction_is_not_the_answer():
    """Issue #9.5: the echo observed in the embedded run was taken as the final answer."""
    assert extract_probe_answer(OBSERVED_ECHO) == '" followed by the correct answer.'  # without the template
    assert extract_probe_answer(OBSERVED_ECHO, OLD_PROBE) is None
    assert not probe_matches(OBSERVED_ECHO, "the correct answer", template=OLD_PROBE)
    # A real answer before or after the echo is still found (the last non-echo marker).
    assert extract_probe_answer("So the answer is Thames.\n" + OBSERVED_ECHO, OLD_PROBE) == "thames."
    assert extract_probe_answer(OBSERVED_ECHO + "\nThe answer is Thames", OLD_PROBE) == "thames"
    # A partial echo (without the sentence's start) is recognised by the words after the marker...
    assert extract_probe_answer('End with "The answer is" followed by the correct answer', OLD_PROBE) is None
    # ...and an echo that changes what follows by the words before it.
    assert extract_probe_answer('begins with the words "The answer is" and so on', OLD_PROBE) is None
    # Ordinary answers are not echoes.
    for text, want in [("Therefore, the answer is Paris.", "paris."), ("The answer is: 1999", "1999"),
                       ("the answer is followed", "followed")]:
        assert extract_probe_answer(text, OLD_PROBE) == want


def test_probe_echo_of_the_papers_template():
    echo = "1.Each reasoning step should explicitly refer to the document.\n2.End your reasoning with `The answer is` followed by the correct answer."
    assert extract_probe_answer(echo) is not None
    assert extract_probe_answer(echo, PAPER_PROBE) is None
    assert probe_matches(echo + "\nPassage 3 gives it. The answer is Oslo.", "Oslo", template=PAPER_PROBE)


def test_probe_answer_that_quotes_the_instructions_is_no_answer():
    # observed in the embedded make run (2026-12-03): the capture is our own instruction sentence
    from longmab.prompts import DEFAULT_TEMPLATES

    probe = DEFAULT_TEMPLATES["probe"]
    quote = "Step 1 ... The answer is in each step, cite the passage of the document that supports it and quote the re"
    assert extract_probe_answer(quote).startswith("in each step, cite")  # without the template: reference rule
    assert extract_probe_answer(quote, probe) is None
    # a real answer before the quote is found again (the last marker that is neither echo nor quote)
    assert extract_probe_answer("So the answer is Poheimford.\n" + quote, probe) == "poheimford."
    assert probe_matches("So the answer is Poheimford.\n" + quote, "Poheimford", template=probe)
    # words of the fields never count: a capture quoting the question or the gold is an answer
    assert extract_probe_answer("The answer is the river that runs through the city", "Q: {question}\n{answer}") \
        == "the river that runs through the city"
    # fewer than ECHO_QUOTE_WORDS words in common with the instructions is an answer
    assert extract_probe_answer("The answer is the passage of Hollin.", probe) == "the passage of hollin."
    assert template_word_runs(None) == frozenset()
    assert ("in", "each", "step", "cite", "the") in template_word_runs(probe)
    assert not any("{" in w for run in template_word_runs(probe) for w in run)


def test_marker_contexts():
    assert marker_contexts(OLD_PROBE) == [(("with", "the", "words"), ("followed", "by", "the"))]
    assert marker_contexts(PAPER_PROBE) == [(("end", "your", "reasoning", "with")[-3:], ("followed", "by", "the"))]
    assert marker_contexts(None) == [] and marker_contexts("no marker {context}") == []
    # A field ends the context: the words after {answer} are not next to the marker in the prompt.
    assert marker_contexts("Say the answer is {answer} please") == [(("say",), ())]


def test_probe_matches():
    assert probe_matches("... The answer is Paris, France.", "Paris")  # gold in pred
    assert probe_matches("The answer is: Paris", "Paris, France")  # pred in gold
    assert probe_matches("The answer is Rome", ["Paris", "Rome"])
    assert not probe_matches("The answer is London", "Paris")
    assert not probe_matches("The answer is", "Paris")  # empty capture matches nothing (reference defect)
    assert not probe_matches("The answer is Paris", "")  # empty gold matches nothing
    assert not probe_matches("The answer is the", "Paris")  # normalizes to ""
    assert probe_matches("The answer is thus", "U.S.")  # char mode (default)
    assert not probe_matches("The answer is thus", "U.S.", mode="token")


# --------------------------------------------------------------------------------------------------
# EM / F1 / SubEM


def test_exact_match():
    assert exact_match("The Paris.", "paris") == 1.0
    assert exact_match("Paris France", "Paris") == 0.0
    assert exact_match("rome", ["Paris", "Rome"]) == 1.0
    assert exact_match(None, "Paris") == 0.0
    assert exact_match("", "") == 0.0  # empty gold never matches
    assert exact_match("the", "a") == 0.0


def test_f1_hand_computed():
    # pred "cat sat on mat" (4 tokens), gold "cat on hat" (3); common {cat, on} = 2
    # P = 2/4, R = 2/3, F1 = 2PR/(P+R) = (2/3)/(7/6) = 4/7
    assert f1_score("The cat sat on the mat", "cat on the hat") == pytest.approx(4 / 7)
    # Multiset overlap: "x x y" vs "x y y" -> common min counts x:1, y:1 = 2; P = R = 2/3 -> F1 = 2/3
    assert f1_score("x x y", "x y y") == pytest.approx(2 / 3)
    assert f1_score("Paris", "paris!") == 1.0
    assert f1_score("London", "Paris") == 0.0


def test_f1_max_over_golds_and_empty():
    # vs "london": 0; vs "paris": P = 1/2, R = 1 -> 2/3
    assert f1_score("Paris France", ["London", "Paris"]) == pytest.approx(2 / 3)
    assert f1_score(None, "Paris") == 0.0
    assert f1_score("", "Paris") == 0.0
    assert f1_score("Paris", "") == 0.0
    assert f1_score("Paris", []) == 0.0


def test_subem_char_vs_token():
    assert sub_exact_match("thus it is", "U.S.") == 1.0  # "us" in "thus it is": char false positive
    assert sub_exact_match("thus it is", "U.S.", mode="token") == 0.0
    assert sub_exact_match("the U.S. army", "U.S.", mode="token") == 1.0
    assert sub_exact_match("born in new york city", "New York", mode="token") == 1.0
    assert sub_exact_match("york new", "New York", mode="token") == 0.0  # order matters
    with pytest.raises(ValueError):
        sub_exact_match("x", "x", mode="word")


def test_subem_golds_and_empty():
    assert sub_exact_match("it was in Rome, Italy", ["Paris", "Rome"]) == 1.0
    assert sub_exact_match("it was in Rome", ["Paris", "London"]) == 0.0
    assert sub_exact_match("anything", "") == 0.0  # empty gold must not match everything
    assert sub_exact_match("anything", "The") == 0.0  # normalizes to ""
    assert sub_exact_match("anything", ["", "thing"], mode="token") == 0.0
    assert sub_exact_match(None, "Paris") == 0.0


def test_best_over_golds():
    assert best_over_golds(lambda p, g: len(g), "x", ["a", "abc", "ab"]) == 3.0
    assert best_over_golds(lambda p, g: 1.0, "x", []) == 0.0


# --------------------------------------------------------------------------------------------------
# Rewards


def test_rollout_reward():
    assert rollout_reward("Reasoning: Paris is the capital.\nAnswer: Paris", "Paris") == 1.0
    # No marker: SubEM on the whole output counts, F1 = 0 -> (1 + 0) / 2
    assert rollout_reward("I think it is Paris.", "Paris") == 0.5
    # Extracted "paris france": F1 = 2/3 -> (1 + 2/3) / 2 = 5/6
    assert rollout_reward("Reasoning: x\nAnswer: Paris France", "Paris") == pytest.approx(5 / 6)
    # Gold only in the reasoning: (1 + 0) / 2
    assert rollout_reward("Reasoning: not Paris.\nAnswer: London", "Paris") == 0.5
    assert rollout_reward("Answer: London", "Paris") == 0.0


def test_strict_reward():
    assert strict_reward("Reasoning: Paris is big.\nAnswer: Paris", "Paris") == 1.0
    assert strict_reward("I think it is Paris.", "Paris") == 0.0  # no marker
    assert strict_reward("Reasoning: not Paris.\nAnswer: London", "Paris") == 0.0
    assert strict_reward("Reasoning: x\nAnswer: Paris France", "Paris") == pytest.approx(5 / 6)
    # char SubEM false positive: (1 + 0) / 2 vs (0 + 0) / 2
    assert strict_reward("Answer: thus", "U.S.") == 0.5
    assert strict_reward("Answer: thus", "U.S.", subem_mode="token") == 0.0


def test_score_prediction():
    s = score_prediction("Reasoning: r\nAnswer: Paris", ["paris", "Paris, France"])
    assert s == {"em": 1.0, "f1": 1.0, "subem": 1.0, "subem_char": 1.0, "subem_token": 1.0, "pred": "paris"}
    # F1 vs "new york": P = 2/3, R = 1 -> 0.8; EM 0; SubEM 1
    s = score_prediction("Answer: New York City", "New York")
    assert s["em"] == 0.0 and s["subem"] == 1.0 and s["f1"] == pytest.approx(0.8)
    s = score_prediction("it is Paris", "Paris")
    assert s == {"em": 0.0, "f1": 0.0, "subem": 0.0, "subem_char": 0.0, "subem_token": 0.0, "pred": None}
    s = score_prediction("Answer: thus", "U.S.", subem_mode="token")
    assert (s["subem"], s["subem_char"], s["subem_token"]) == (0.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        score_prediction("Answer: x", "x", subem_mode="bogus")
