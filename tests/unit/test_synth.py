"""Synthetic data generator (synth.py) and the committed data/ it produced."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from longmab import synth
from longmab.cli import main
from longmab.io import read_jsonl
from longmab.validate import validate_file

REPO = Path(__file__).resolve().parents[2]
PASSAGE_HEADER = re.compile(r"^Passage (\d+):$", re.MULTILINE)


@pytest.fixture(scope="module")
def data():
    """The default data set (seed 42) with the test-only ``meta`` field."""
    return synth.generate_dataset(seed=42, keep_meta=True)


@pytest.fixture(scope="module")
def worlds():
    return synth.build_worlds(42)


def split_passages(context: str) -> list[str]:
    """Passage texts, checking the exact ``Passage i:\\n<text>`` layout with 1-based numbering."""
    blocks = context.split("\n\n")
    texts = []
    for i, block in enumerate(blocks, start=1):
        header, sep, text = block.partition("\n")
        assert header == f"Passage {i}:" and sep == "\n", block[:40]
        assert text.strip() == text and text and "\n" not in text
        texts.append(text)
    assert synth.format_context(texts) == context
    return texts


def answers_of(row) -> list[str]:
    if "answers" in row:
        return row["answers"]
    if isinstance(row.get("answer"), list):
        return row["answer"]
    return [row["answer"]]


def all_rows(data):
    for name, rows in data.items():
        for row in rows:
            yield name, row


# --- determinism ------------------------------------------------------------------------------------


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jsonl"))}


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    kw = {"n_train": 4, "n_test_per_set": 3}
    synth.write_dataset(tmp_path / "a", seed=7, **kw)
    synth.write_dataset(tmp_path / "b", seed=7, **kw)
    synth.write_dataset(tmp_path / "c", seed=8, **kw)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert sorted(a) == ["test/synth_2wikimqa.jsonl", "test/synth_longbook_qa_eng.jsonl",
                         "test/synth_multifieldqa_en.jsonl", "test/synth_musique.jsonl", "train.jsonl"]
    assert a == b
    assert all(a[k] != c[k] for k in a)


def test_sets_are_independent_and_prefix_stable(data):
    small = synth.generate_dataset(seed=42, n_train=5, n_test_per_set=3, keep_meta=True)
    for name, rows in small.items():
        assert rows == data[name][: len(rows)], name
    more_train = synth.generate_dataset(seed=42, n_train=synth.N_TRAIN + 6, n_test_per_set=synth.N_TEST, keep_meta=True)
    for name in synth.TEST_SETS:
        assert more_train[name] == data[name]


def test_committed_data_matches_generator(tmp_path):
    """data/ must be exactly `longmab synth --out-dir data --seed 42` (so it can never drift)."""
    assert main(["synth", "--out-dir", str(tmp_path), "--seed", "42"]) == 0
    generated = _files(tmp_path)
    committed = {k: v for k, v in _files(REPO / "data").items() if not k.startswith("demo/")}
    assert sorted(committed) == sorted(generated)
    for name, blob in generated.items():
        assert committed[name] == blob, f"data/{name} differs from the generator's output; regenerate it"


def test_committed_demo_data_matches_generator(tmp_path):
    """data/demo/ (make demo) is `longmab synth --out-dir data/demo --seed 42 --n-train 128 --n-test 75`,
    and its first 64 training samples are data/train.jsonl (the generator is prefix-stable)."""
    assert main(["synth", "--out-dir", str(tmp_path), "--seed", "42", "--n-train", "128", "--n-test", "75"]) == 0
    generated = _files(tmp_path)
    committed = _files(REPO / "data" / "demo")
    assert sorted(committed) == sorted(generated)
    for name, blob in generated.items():
        assert committed[name] == blob, f"data/demo/{name} differs from the generator's output; regenerate it"
    small = (REPO / "data" / "train.jsonl").read_bytes()
    assert committed["train.jsonl"].startswith(small)


# --- format -----------------------------------------------------------------------------------------


def test_field_sets_exact(tmp_path):
    paths = synth.write_dataset(tmp_path, seed=3, n_train=3, n_test_per_set=2)
    assert set(paths) == {synth.TRAIN, *synth.TEST_SETS}
    for name, path in paths.items():
        rows = read_jsonl(path)
        assert len(rows) == (3 if name == synth.TRAIN else 2)
        for i, r in enumerate(rows):
            if name == synth.TRAIN:
                assert list(r) == list(synth.TRAIN_FIELDS)
                assert r["id"] == f"train-{i:04d}" and isinstance(r["answer"], str)
            elif name in synth.LONGBENCH_SETS:
                assert list(r) == list(synth.LONGBENCH_FIELDS)
                assert r["dataset"] == name and r["_id"] == f"{name}-{i:04d}"
                assert r["length"] == len(r["context"].split())
                assert isinstance(r["answers"], list) and len(r["answers"]) == 1
            else:
                assert list(r) == list(synth.INFINITEBENCH_FIELDS)
                assert r["id"] == i and r["options"] == []
                assert isinstance(r["answer"], list) and len(r["answer"]) == 1
    assert validate_file(paths[synth.TRAIN]) == []


def test_passage_layout_counts_and_sizes(data):
    for name, row in all_rows(data):
        texts = split_passages(row["context"])
        lo, hi = synth.LONG_PASSAGES if name == "synth_longbook_qa_eng" else synth.PASSAGES
        assert lo <= len(texts) <= hi
        assert [int(n) for n in PASSAGE_HEADER.findall(row["context"])] == list(range(1, len(texts) + 1))
        for text in texts:
            # a passage stops at the first sentence reaching the target (25-40) words
            assert 25 <= len(text.split()) <= 100, len(text.split())


def test_evidence_numbers_point_at_the_right_passages(data):
    for _, row in all_rows(data):
        texts = split_passages(row["context"])
        meta = row["meta"]
        ev = row["evidence"]
        assert ev == sorted(set(ev)) and all(1 <= i <= len(texts) for i in ev)
        assert len(ev) == meta["hops"]
        assert len(meta["passage_entities"]) == len(texts)
        # each passage opens with its own entity's name; evidence passages are those of the needed entities
        for text, entity in zip(texts, meta["passage_entities"]):
            assert text.startswith(entity + " ")
        assert sorted(meta["passage_entities"][i - 1] for i in ev) == sorted(meta["evidence_entities"])
        assert len(set(meta["passage_entities"])) == len(texts)  # no entity twice in a context


def test_evidence_holds_answer_and_linking_fact(data):
    n_two_hop = 0
    for _, row in all_rows(data):
        texts = split_passages(row["context"])
        meta = row["meta"]
        (answer,) = answers_of(row)
        ev_texts = [texts[meta["passage_entities"].index(e)] for e in meta["evidence_entities"]]
        # the question names its first-hop entity, whose passage is evidence
        assert meta["evidence_entities"][0] in row["input"]
        assert meta["evidence_entities"][0] in ev_texts[0]
        if meta["bridge"] is not None:  # compositional 2-hop: bridge links the two passages
            n_two_hop += 1
            assert meta["bridge"] not in row["input"]
            assert meta["bridge"] in ev_texts[0]  # first hop states the bridge ...
            assert ev_texts[1].startswith(meta["bridge"] + " ")  # ... whose passage states the answer
            assert answer in ev_texts[1]
        elif meta["hops"] == 2:  # comparison: both names in the question, the answer is one of them
            assert answer in meta["evidence_entities"] and all(e in row["input"] for e in meta["evidence_entities"])
        else:
            assert answer in ev_texts[0]
    assert n_two_hop > 10


def test_question_mix_per_set(data):
    types = {name: {r["meta"]["type"] for r in rows} for name, rows in data.items()}
    hops = {name: {r["meta"]["hops"] for r in rows} for name, rows in data.items()}
    assert types["synth_musique"] <= set(synth.TWO_HOP_TYPES)
    assert types["synth_multifieldqa_en"] <= set(synth.ONE_HOP_TYPES)
    assert types["synth_longbook_qa_eng"] <= set(synth.ONE_HOP_TYPES)
    assert types["synth_2wikimqa"] & set(synth.COMPARISON_TYPES)
    # default training mix: 1-hop, compositional 2-hop and comparison questions
    for kinds in (synth.ONE_HOP_TYPES, synth.TWO_HOP_TYPES, synth.COMPARISON_TYPES):
        assert types["train"] & set(kinds)
    one_hop = synth.generate_dataset(seed=42, n_train=12, n_test_per_set=1, two_hop_fraction=0.0,
                                     comparison_fraction=0.0, keep_meta=True)
    assert {r["meta"]["hops"] for r in one_hop["train"]} == {1}
    for name, rows in data.items():
        assert len({r["input"] for r in rows}) == len(rows), f"duplicate question in {name}"


def test_lookalike_entities_have_conflicting_facts(worlds):
    """Namesakes (same surname) and twin companies (same stem) exist, with different facts."""
    for world in worlds.values():
        surnames = {}
        for p in world.persons.values():
            surnames.setdefault(p.name.split()[-1], []).append(p)
        pairs = [ps for ps in surnames.values() if len(ps) == 2]
        assert len(pairs) == synth.DEFAULT_WORLD.namesakes // 2
        for a, b in pairs:
            assert a.birth_town != b.birth_town and a.birth_year != b.birth_year
        stems = {}
        for c in world.companies.values():
            stems.setdefault(c.name.split()[0], []).append(c)
        assert sum(len(cs) == 2 for cs in stems.values()) == synth.DEFAULT_WORLD.company_twins // 2


def test_distractors_include_lookalikes_of_the_evidence(data, worlds):
    """Where an evidence entity has a look-alike, its passage is among the distractors (half the
    distractors are related ones): the chunks chosen decide between conflicting facts."""
    with_look, shown = 0, 0
    for name, rows in data.items():
        world = worlds["train" if name == synth.TRAIN else "test"]
        for row in rows:
            meta = row["meta"]
            kinds = {n: k for k, n in world.subjects()}
            looks = {n for e in meta["evidence_entities"] if e in kinds
                     for _, n in synth.lookalikes(world, kinds[e], e)}
            if looks:
                with_look += 1
                shown += bool(looks & set(meta["passage_entities"]))
    assert with_look > 50 and shown == with_look


def test_answers_short_and_comparisons_well_posed(data, worlds):
    for name, row in all_rows(data):
        world = worlds["train" if name == synth.TRAIN else "test"]
        (answer,) = answers_of(row)
        assert 1 <= len(answer.split()) <= 3
        if row["meta"]["type"] == "born_first":
            a, b = row["meta"]["evidence_entities"]
            ya, yb = world.persons[a].birth_year, world.persons[b].birth_year
            assert ya != yb and answer == (a if ya < yb else b)


def test_world_facts_are_consistent_with_text(data, worlds):
    """Every fact sentence agrees with the world (checked on the plain year facts)."""
    for name, rows in data.items():
        world = worlds["train" if name == synth.TRAIN else "test"]
        for row in rows:
            for text, entity in zip(split_passages(row["context"]), row["meta"]["passage_entities"]):
                years = re.findall(r"\b1[0-9]{3}\b|\b20[0-9]{2}\b", text)
                if entity in world.persons:
                    assert years == [str(world.persons[entity].birth_year)]
                    assert world.persons[entity].birth_town in text
                elif entity in world.towns:
                    assert years == [str(world.towns[entity].founded)]
                    assert world.towns[entity].river in text
                else:
                    c = world.companies[entity]
                    assert years == [str(c.founded)] and c.founder in text and c.hq in text


# --- train/test separation --------------------------------------------------------------------------


def test_train_and_test_share_no_entities(data, worlds):
    train_w, test_w = worlds["train"], worlds["test"]
    assert not train_w.entity_names() & test_w.entity_names()
    assert not set(train_w.words) & set(test_w.words)  # not even one name word
    train_text = "\n".join(r["context"] + r["input"] for r in data[synth.TRAIN])
    test_text = "\n".join(r["context"] + r["input"] for n in synth.TEST_SETS for r in data[n])
    assert not [w for w in test_w.words if w in train_text]
    assert not [w for w in train_w.words if w in test_text]


def test_name_words_unique_and_not_substrings_of_each_other(worlds):
    words = [w.lower() for world in worlds.values() for w in world.words]
    assert len(words) == len(set(words))
    for w in words:
        assert 5 <= len(w) <= 11
        assert not [o for o in words if o != w and w in o], w


def test_bad_parameters_rejected():
    with pytest.raises(ValueError):
        synth.generate_dataset(passages_per_context=(5, 3))
    with pytest.raises(ValueError):
        synth.generate_dataset(two_hop_fraction=1.5)


def test_cli_synth_options(tmp_path, capsys):
    rc = main(["synth", "--out-dir", str(tmp_path), "--seed", "1", "--n-train", "2", "--n-test", "1",
               "--passages", "3,4", "--long-passages", "5", "--words", "60,80"])
    assert rc == 0
    train = read_jsonl(tmp_path / "train.jsonl")
    assert len(train) == 2
    assert all(3 <= len(split_passages(r["context"])) <= 4 for r in train)
    (long_row,) = read_jsonl(tmp_path / "test" / "synth_longbook_qa_eng.jsonl")
    assert len(split_passages(long_row["context"])) == 5
    assert "train.jsonl" in capsys.readouterr().out
