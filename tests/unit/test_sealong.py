"""SeaLong baseline (method.md §10): MBR scores and pair selection on hand-computed cases."""

import json
from pathlib import Path

import numpy as np
import pytest
from longmab.sealong import mbr_scores, sealong_question, select_sealong_pair
from longmab.stages.sealong import build_sealong_pairs, score_sealong

REPO = Path(__file__).resolve().parents[2]


def test_mbr_is_mean_cosine_to_the_others():
    # unit vectors at 0, 90 and 45 degrees: cos(a,b)=0, cos(a,c)=cos(b,c)=1/sqrt(2)
    e = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # scale must not matter
    s = mbr_scores(e)
    r = 1 / np.sqrt(2)
    assert s == pytest.approx([(0 + r) / 2, (0 + r) / 2, (r + r) / 2])
    assert int(np.argmax(s)) == 2  # the "central" output


def test_mbr_edge_cases():
    assert mbr_scores(np.zeros((0, 3))).shape == (0,)
    assert mbr_scores(np.ones((1, 3))).tolist() == [0.0]
    z = mbr_scores(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))  # a zero embedding: similarity 0
    assert z.tolist() == pytest.approx([0.0, 0.5, 0.5])
    with pytest.raises(ValueError):
        mbr_scores(np.ones(3))


def test_select_pair_highest_vs_lower_half():
    scores = [0.9, 0.1, 0.5, 0.2, 0.8, 0.3, 0.7, 0.4]  # lower half (4 lowest): 1, 3, 5, 7
    picks = set()
    for seed in range(200):
        chosen, rejected = select_sealong_pair(scores, np.random.default_rng(seed))
        assert chosen == 0
        picks.add(rejected)
    assert picks == {1, 3, 5, 7}
    a = select_sealong_pair(scores, np.random.default_rng(7))
    assert a == select_sealong_pair(scores, np.random.default_rng(7))  # seeded


def test_select_pair_ties_and_small_n():
    assert select_sealong_pair([0.5, 0.5, 0.5], np.random.default_rng(0)) is None  # all agree equally
    assert select_sealong_pair([0.3], np.random.default_rng(0)) is None
    assert select_sealong_pair([0.9, 0.2, 0.5], np.random.default_rng(0)) == (0, 1)  # n//2 = 1 lowest


def test_question_with_instruction():
    assert sealong_question("Who?", "Plan first.") == "Who?\nPlan first."
    assert sealong_question("Who?", "") == "Who?"


def test_score_and_pairs_end_to_end_with_a_fake_embedder():
    # embedding = letter counts: the two "paris" answers agree, "rome" is the outlier
    def encode(texts):
        return np.array([[t.count("a"), t.count("r"), t.count("o"), t.count("m") + 0.01] for t in texts], float)

    rows = [
        {"id": "1", "input": "Capital of France?", "answer": "Paris", "context": "Passage 1:\nParis is ...",
         "responses": ["Answer: Paris", "Answer: Rome", "Answer: Paris indeed"]},
        {"id": "2", "input": "q?", "answer": "x", "context": "c.", "responses": ["same", "same", "same"]},
    ]
    scored = score_sealong(rows, encode)
    assert [len(r["mbr"]) for r in scored] == [3, 3]
    assert np.argmax(scored[0]["mbr"]) in (0, 2)
    pairs, stats = build_sealong_pairs(scored, {"answer": "{context}\n{question}"}, lambda s: s.split(),
                                       lambda ids: " ".join(ids), 4096, 32, "Plan.", seed=1)
    assert stats["pairs"] == 1 and stats["ties_skipped_ids"] == ["2"] and stats["generations"] == 6
    p = pairs[0]
    assert p["rejected"] == "Answer: Rome" and p["chosen"].startswith("Answer: Paris")
    assert p["chosen_subem"] == 1.0 and p["rejected_subem"] == 0.0  # logged, never used to pick
    assert p["prompt"].endswith("Capital of France?\nPlan.")
    assert p["chosen_reward"] > p["rejected_reward"]


def test_mbr_embedder_reads_whole_outputs_and_counts_the_cut_ones():
    """SeaLong's MBR embedding: max_seq_length raised to cover the outputs (capped at the model's
    position embeddings), outputs still longer counted; no query prefix is added by the stage."""
    from longmab.stages.embed import load_encoder

    counts: dict = {}
    encode = load_encoder("embedded", device="cpu", max_seq_length=10_000, counts=counts)
    long_text, short = "word " * 600, "a short answer"
    emb = encode([short, long_text])
    assert emb.shape[0] == 2 and counts["max_seq_length"] == 512  # MiniLM's 512 positions
    assert counts == {"texts": 2, "cut": 1, "max_seq_length": 512}
    counts.clear()
    load_encoder("embedded", device="cpu", max_seq_length=64, counts=counts)([short, "x " * 100])
    assert counts["cut"] == 1 and counts["max_seq_length"] == 64
    counts.clear()  # "at least 128": MiniLM's own 256 stays
    load_encoder("embedded", device="cpu", min_seq_length=128, counts=counts)([short])
    assert counts["max_seq_length"] == 256


def test_runs_choose_their_own_mbr_embedder():
    import yaml
    from longmab.config import validate_config, validate_runs
    from longmab.runs import build_plan

    cfg = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    cfg["runs"] = {"own": {"pairs": {"method": "sealong", "sealong": {"mbr_embedder": "org/jina"}}},
                   "shared": {"pairs": {"method": "sealong"}}}
    plan = build_plan(cfg, configs=validate_runs(cfg))
    mbr = {r: plan.stages["mbr"][plan.runs[r]["mbr"]] for r in ("own", "shared")}
    assert mbr["own"]["embedder"] == "org/jina" and mbr["shared"]["embedder"] == "embedded"
    assert mbr["shared"]["max_seq_length"] is None
    assert mbr["shared"]["min_seq_length"] == cfg["pairs"]["sealong"]["max_tokens"] + 32
    assert "prefix" not in mbr["own"] and plan.runs["own"]["sealong"] == plan.runs["shared"]["sealong"]


def test_sealong_prompt_mode_uses_sealongs_own_prompt_and_whole_output_subem():
    """pairs.sealong.prompt: sealong = SEALONG's prompt (context, blank line, question, instruction;
    nothing of our template) for sampling and pairs; the logged SubEM reads the whole output."""
    from longmab.prompts import load_templates
    from longmab.sealong import SEALONG_PROMPT, sealong_templates

    ours = load_templates()
    theirs = sealong_templates(ours, "sealong")
    assert theirs["answer"] == SEALONG_PROMPT and sealong_templates(ours, "ours") == ours
    with pytest.raises(ValueError, match="unknown SeaLong prompt mode"):
        sealong_templates(ours, "plain")
    rows = [{"id": "s1", "input": "Who?", "answer": "Ada", "context": "Passage 1:\nAda wrote it.",
             "responses": ["It was Ada, plainly.", "Nobody knows.", "Bob did it.", "Ada? Maybe Bob."],
             "mbr": [0.9, 0.1, 0.2, 0.8]}]

    def words(s):
        return s.split(" ")

    def unwords(ids):
        return " ".join(ids)

    for mode, subem in (("sealong", 1.0), ("ours", 0.0)):  # no answer line: ours scores 0
        pairs, stats = build_sealong_pairs(rows, ours, words, unwords, 200, 8, "Plan first.", 3,
                                           prompt_mode=mode)
        assert stats["prompt_mode"] == mode and pairs[0]["chosen"] == "It was Ada, plainly."
        assert pairs[0]["chosen_subem"] == subem
    prompt = build_sealong_pairs(rows, ours, words, unwords, 200, 8, "Plan first.", 3,
                                 prompt_mode="sealong")[0][0]["prompt"]
    assert prompt == "\nPassage 1:\nAda wrote it.\n\nWho?\nPlan first.\n"


def test_sample_sealong_sends_the_prompt_of_its_mode(tmp_path):
    """A real (tiny random) transformers engine: in sealong mode the conversation is SEALONG's
    prompt alone; in ours mode our answer template wraps the same question."""
    from longmab.engines import HFEngine, SamplingConfig
    from longmab.gpucheck import build_tiny_llama, byte_level_chatml_tokenizer
    from longmab.prompts import load_templates
    from longmab.sealong import SEALONG_PROMPT
    from longmab.stages.sealong import sample_sealong

    byte_level_chatml_tokenizer().save_pretrained(tmp_path / "tok")
    model = build_tiny_llama(tmp_path / "model", seed=0, tokenizer_dir=tmp_path / "tok")
    engine = HFEngine(str(model), dtype="float32", max_model_len=None, seed=0)
    sample = {"id": "s1", "input": "Who?", "answer": "Ada", "context": "Passage 1:\nAda wrote it."}
    sampling = SamplingConfig(temperature=0.7, top_p=1.0, presence_penalty=0.0, max_tokens=3)
    templates = load_templates()
    tokens = {}
    for mode in ("sealong", "ours"):
        rows, stats = sample_sealong([sample], engine, templates, sampling, 3, "Plan first.", 1, prompt_mode=mode)
        assert len(rows[0]["responses"]) == 3 and stats["generations"] == 3
        tokens[mode] = rows[0]["prompt_tokens"]
    want = SEALONG_PROMPT.format(context=sample["context"], question="Who?\nPlan first.")
    assert tokens["sealong"] == engine.count_tokens(want)
    ours = templates["answer"].format(context=sample["context"], question="Who?\nPlan first.")
    assert tokens["ours"] == engine.count_tokens(ours) > tokens["sealong"]


GOLDEN = json.loads((REPO / "tests" / "fixtures" / "sealong_golden.json").read_text())


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[f"{c['kind']}-n{len(c['predictions'])}" for c in GOLDEN["cases"]])
def test_selection_matches_sealongs_own_code_case_by_case(case):
    """tests/fixtures/sealong_golden.json: SEALONG's synthesize.py run unmodified on fixed embeddings
    (tests/fixtures/sealong_golden.py). Same MBR scores up to SEALONG's constant self-similarity
    term, the same chosen output, a rejected output from the same lower half. The one intended
    difference: we L2-normalise the embeddings (cosine), SEALONG takes raw dot products, which is the
    same for the normalised embeddings jina-embeddings-v3 returns; on raw-scale embeddings we equal
    SEALONG's code applied to the normalised rows."""
    emb = np.asarray(case["embeddings"])
    n = len(emb)
    ours = mbr_scores(emb)
    theirs = np.asarray(case["mbr_scores"])
    if case["kind"].startswith("normalized"):
        np.testing.assert_allclose((ours * (n - 1) + 1.0) / n, theirs, atol=1e-12)
        reference = theirs
    else:  # intended: cosine, not raw dot products
        unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        reference = (unit @ unit.T).mean(1)
        np.testing.assert_allclose((ours * (n - 1) + 1.0) / n, reference, atol=1e-12)
        assert not np.allclose(reference, theirs)
    chosen, rejected = select_sealong_pair(ours, np.random.default_rng(0))
    if case["kind"].startswith("normalized"):
        assert chosen == case["chosen_index"]
        assert set(np.argsort(ours, kind="stable")[: n // 2]) == set(case["rejected_pool"])
        assert rejected in case["rejected_pool"] and case["rejected_index"] in case["rejected_pool"]
    else:
        assert chosen == int(np.argmax(reference))
    draws = {select_sealong_pair(ours, np.random.default_rng(s))[1] for s in range(200)}
    assert draws == set(np.argsort(ours, kind="stable")[: n // 2].tolist())  # uniform over the lower half
