"""Raw training JSONL validation (validate.py) and the `longmab validate` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from longmab.cli import main
from longmab.validate import DataError, load_samples, validate_file


def row(**overrides):
    base = {"id": "s1", "input": "Who?", "answer": "Velmora", "context": "Passage 1:\nVelmora did it."}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def write_lines(tmp_path, lines, name="raw.jsonl", newline="\n"):
    path = tmp_path / name
    text = newline.join(x if isinstance(x, str) else json.dumps(x) for x in lines) + newline
    path.write_bytes(text.encode("utf-8"))
    return path


def errors_for(tmp_path, lines, **kw):
    path = write_lines(tmp_path, lines)
    return path, validate_file(path, **kw)


def test_valid_file_with_bom_crlf_and_blank_lines(tmp_path):
    path = tmp_path / "ok.jsonl"
    rows = [row(id=1, evidence=[1, 2]), row(id="b", extra="kept")]
    body = json.dumps(rows[0]) + "\r\n\r\n" + json.dumps(rows[1]) + "\r\n\r\n  \r\n\n"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    assert validate_file(path) == []
    samples = load_samples(path)
    assert [s["id"] for s in samples] == ["1", "b"]
    assert samples[0]["evidence"] == [1, 2] and samples[1]["extra"] == "kept"


def test_raw_u2028_inside_a_string_is_not_a_line_break(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_text(json.dumps(row(context="a\u2028b"), ensure_ascii=False) + "\n", encoding="utf-8")
    assert validate_file(path) == []


def test_malformed_json_reports_line_and_json_message(tmp_path):
    path, errs = errors_for(tmp_path, [row(), '{"id": "x", "input": ', row(id="s3")])
    assert len(errs) == 1
    assert errs[0].startswith(f"{path}:2: malformed JSON: ")
    assert "line 1 column" in errs[0]  # json's own message is kept


@pytest.mark.parametrize("line", ["[1, 2]", "42", '"text"', "null"])
def test_line_not_an_object(tmp_path, line):
    path, errs = errors_for(tmp_path, [line])
    assert len(errs) == 1 and errs[0].startswith(f"{path}:1: line is not a JSON object")


@pytest.mark.parametrize("field", ["id", "input", "answer", "context"])
def test_missing_field(tmp_path, field):
    second = row(id="s2")
    second.pop(field)
    path, errs = errors_for(tmp_path, [row(), second])
    assert errs == [f"{path}:2: missing field '{field}'"]


@pytest.mark.parametrize("field", ["input", "answer", "context", "id"])
@pytest.mark.parametrize("value", ["", "   \t"])
def test_empty_field(tmp_path, field, value):
    path, errs = errors_for(tmp_path, [row(**{field: value})])
    assert errs == [f"{path}:1: field '{field}' is empty"]


@pytest.mark.parametrize(
    "field,value",
    [("input", 3), ("answer", ["a"]), ("context", None), ("answer", {"x": 1}), ("input", True)],
)
def test_text_field_wrong_type(tmp_path, field, value):
    path, errs = errors_for(tmp_path, [row(**{field: value})])
    assert len(errs) == 1
    assert errs[0].startswith(f"{path}:1: field '{field}' must be a string")


@pytest.mark.parametrize("value", [True, False, 1.5, None, [1], {"a": 1}])
def test_id_wrong_type(tmp_path, value):
    path, errs = errors_for(tmp_path, [row(id=value)])
    assert len(errs) == 1
    assert errs[0].startswith(f"{path}:1: field 'id' must be a string or an integer")


def test_int_and_str_ids_are_valid(tmp_path):
    _, errs = errors_for(tmp_path, [row(id=0), row(id="zero"), row(id=-7)])
    assert errs == []


@pytest.mark.parametrize("value", ["1,2", [1, "2"], [1.0], [True], {"a": 1}, 3])
def test_evidence_must_be_list_of_ints(tmp_path, value):
    path, errs = errors_for(tmp_path, [row(evidence=value)])
    assert errs == [f"{path}:1: field 'evidence' must be a list of integers"]


def test_empty_evidence_list_is_valid(tmp_path):
    _, errs = errors_for(tmp_path, [row(evidence=[])])
    assert errs == []


def test_duplicate_ids_compared_as_strings_and_name_first_line(tmp_path):
    path, errs = errors_for(tmp_path, [row(id=7), row(id="x"), "", row(id="7"), row(id="x")])
    assert errs == [
        f"{path}:4: duplicate id '7' (first seen on line 1)",
        f"{path}:5: duplicate id 'x' (first seen on line 2)",
    ]


def test_line_numbers_count_blank_lines(tmp_path):
    path, errs = errors_for(tmp_path, ["", row(), "", "", row(id="s2", input="")])
    assert errs == [f"{path}:5: field 'input' is empty"]


def test_several_problems_on_one_line_are_all_reported(tmp_path):
    path, errs = errors_for(tmp_path, [{"id": True, "input": "", "context": 5}])
    assert errs == [
        f"{path}:1: field 'id' must be a string or an integer (got bool)",
        f"{path}:1: field 'input' is empty",
        f"{path}:1: missing field 'answer'",
        f"{path}:1: field 'context' must be a string (got integer)",
    ]


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\xef\xbb\xbf", b"\r\n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    errs = validate_file(path)
    assert len(errs) == 1 and errs[0].startswith(f"{path}:1: empty file")


def test_invalid_utf8(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(row()).encode() + b"\n" + b'{"id": "\xff"}\n')
    errs = validate_file(path)
    assert len(errs) == 1 and errs[0].startswith(f"{path}:2: not valid UTF-8")


def test_max_errors_caps_the_list_and_says_how_many_it_left_out(tmp_path):
    lines = ["not json"] * 30
    path, errs = errors_for(tmp_path, lines)
    assert len(errs) == 21
    assert errs[-2].startswith(f"{path}:20: ")
    assert errs[-1] == f"{path}: 10 more problem(s) not listed (--max-errors 0 lists all)"
    assert validate_file(path, max_errors=3)[-1].startswith(f"{path}: 27 more problem(s)")
    assert len(validate_file(path, max_errors=0)) == 30


def test_benchmark_files_are_checked_in_their_own_format(tmp_path, capsys):
    from longmab.cli import main

    good = {"input": "q?", "context": "c.", "answers": ["a"], "_id": "x1"}
    path = write_lines(tmp_path, [json.dumps(good), json.dumps({"input": "q?", "context": "c."})])
    assert main(["validate", "--benchmark", "longbench", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:2: " in err and "answers" in err and f"{path}:1:" not in err
    path.write_text(json.dumps(good) + "\n")
    assert main(["validate", "--benchmark", "longbench", str(path)]) == 0
    assert "OK (1 items)" in capsys.readouterr().out
    assert main(["validate", str(path)]) == 1  # as a training file it lacks id / answer


def test_load_samples_raises_data_error_with_all_messages(tmp_path):
    lines = ["oops"] * 25 + [row(id="a"), row(id="a")]
    path = write_lines(tmp_path, lines)
    with pytest.raises(DataError) as info:
        load_samples(path)
    assert isinstance(info.value, ValueError)
    messages = str(info.value).split("\n")
    assert len(messages) == 26  # not capped at max_errors
    assert messages[0].startswith(f"{path}:1: malformed JSON")
    assert messages[-1] == f"{path}:27: duplicate id 'a' (first seen on line 26)"


# --- CLI --------------------------------------------------------------------------------------------


def test_cli_validate_ok(tmp_path, capsys):
    path = write_lines(tmp_path, [row(id=1), row(id=2), ""])
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == f"{path}: OK (2 samples)"
    assert out.err == ""


def test_cli_validate_errors_go_to_stderr_and_exit_1(tmp_path, capsys):
    good = write_lines(tmp_path, [row()], name="good.jsonl")
    bad = write_lines(tmp_path, [row(), row(id="s2", answer="")], name="bad.jsonl")
    assert main(["validate", str(good), str(bad)]) == 1
    out = capsys.readouterr()
    assert out.out.strip() == f"{good}: OK (1 samples)"
    assert out.err.strip() == f"{bad}:2: field 'answer' is empty"


def test_cli_validate_missing_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.jsonl")]) == 1
    assert "nope.jsonl: cannot read" in capsys.readouterr().err


def test_cli_as_module_subprocess(tmp_path):
    good = write_lines(tmp_path, [row()], name="good.jsonl")
    bad = write_lines(tmp_path, ["[]"], name="bad.jsonl")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    ok = subprocess.run([sys.executable, "-m", "longmab.cli", "validate", str(good)],
                        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert ok.returncode == 0 and ok.stdout.strip() == f"{good}: OK (1 samples)"
    fail = subprocess.run([sys.executable, "-m", "longmab.cli", "validate", str(bad)],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert fail.returncode == 1
    assert fail.stderr.strip().startswith(f"{bad}:1: line is not a JSON object")


def test_cli_requires_a_subcommand(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
