"""Chunking against the reference's recorded chunks (``../shared/golden/chunking.jsonl.gz``): speed of
our linear search vs the reference's quadratic re-counting loop, and chunk lengths; one markdown table.

    .venv/bin/python bench/chunking.py                  # ours vs the quadratic loop
    .venv/bin/python bench/chunking.py --also ce8769c^  # plus the chunking.py of a git revision

Rows: ``ours`` = :func:`longmab.chunking.chunk_spans`; ``quadratic`` = the reference's loop
(:func:`longmab.chunking.chunk_spans_quadratic`: re-tokenize the growing chunk string after every
fragment); ``--also REV`` = ``chunk_spans`` of ``workflow_scripts/longmab/chunking.py`` at that git
revision (e.g. the version before issue #9, which summed per-fragment counts).

Columns: long-text time = best of ``--repeat`` runs over the 4 long golden texts (6.4-10.5 K tokens)
at chunk_size 1500, and its ratio to ours; non-final mean = mean token length (``len(encode(chunk))``)
of every chunk but the last, over the real golden texts chunked at 1500, next to the reference's
recorded lengths of the same texts; identical = real golden cases (all sizes, no intended difference)
whose chunk strings equal the reference's. The tokenizer is SmolLM2's (``$LONGMAB_TEST_MODEL``, else
``results/models/policy``, else the embedded GGUF), checked against ``tokenizer_check.jsonl``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))
GOLDEN = ROOT.parent / "shared" / "golden"


def load_tokenizer():
    from transformers import AutoTokenizer

    env = os.environ.get("LONGMAB_TEST_MODEL")
    built = ROOT / "results" / "models" / "policy"
    if env:
        tok = AutoTokenizer.from_pretrained(env)
    elif (built / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(built))
    else:
        from longmab.models import embedded_gguf_path

        gguf = embedded_gguf_path()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with open(GOLDEN / "tokenizer_check.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if tok.encode(row["text"], add_special_tokens=False) != row["ids"]:
                sys.exit(f"tokenizer differs from the golden one on {row['text']!r}")
    return tok


def module_at(rev: str) -> types.ModuleType:
    """``longmab/chunking.py`` as it was at git revision ``rev`` (imported under another name)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:workflow_scripts/longmab/chunking.py"],
                         check=True, capture_output=True, text=True).stdout
    mod = types.ModuleType(f"chunking_at_{rev}")
    exec(compile(src, f"chunking.py@{rev}", "exec"), mod.__dict__)  # noqa: S102 - our own file
    return mod


def best_time(fn, texts, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for text in texts:
            fn(text)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="timing runs, best of (default 3)")
    ap.add_argument("--also", action="append", default=[], metavar="REV",
                    help="also measure chunk_spans of workflow_scripts/longmab/chunking.py at this git revision")
    args = ap.parse_args()
    if not (GOLDEN / "chunking.jsonl.gz").is_file():
        sys.exit(f"golden fixtures absent: {GOLDEN}")
    from longmab import chunking

    tok = load_tokenizer()

    def count(s: str) -> int:
        return len(tok.encode(s, add_special_tokens=False))

    with gzip.open(GOLDEN / "chunking.jsonl.gz", "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    long_texts = [r["text"] for r in rows if r["kind"] == "real_long"]
    real = [r for r in rows if r["kind"] in ("real", "real_long") and r["intended_difference"] is None]
    at_1500 = [r for r in real if r["chunk_size"] == 1500]
    ref_lengths = [n for r in at_1500 for n in r["reference_chunk_token_lengths"][:-1]]

    impls = {"ours": chunking.chunk_spans, "quadratic": chunking.chunk_spans_quadratic}
    for rev in args.also:
        impls[f"chunking.py@{rev}"] = module_at(rev).chunk_spans
    print(f"# {len(long_texts)} long texts ({sum(map(count, long_texts))} tokens), {len(real)} real cases "
          f"({len(at_1500)} at 1500), tokenizer {type(tok).__name__}, timings best of {args.repeat}; "
          f"load {os.getloadavg()[0]:.1f}")
    print("| implementation | long-text time (s) | x ours | non-final mean @1500 (tokens) | reference | "
          "identical real cases |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    ours_time = None
    for name, spans in impls.items():
        t = best_time(lambda text: spans(text, count, 1500), long_texts, args.repeat)
        ours_time = t if ours_time is None else ours_time
        if name == "quadratic":
            # the same boundaries (asserted), so the length columns are those of ours
            assert all(spans(x, count, 1500) == chunking.chunk_spans(x, count, 1500) for x in long_texts)
            print(f"| {name} | {t:.2f} | {t / ours_time:.1f} | (same chunks) | | |")
            continue
        lengths, identical = [], 0
        for r in real:
            chunks = [r["text"][s:e] for s, e in spans(r["text"], count, r["chunk_size"])]
            identical += chunks == r["reference_chunks"]
            if r["chunk_size"] == 1500:
                lengths += [count(c) for c in chunks[:-1]]
        mean = statistics.mean(lengths) if lengths else float("nan")
        print(f"| {name} | {t:.2f} | {t / ours_time:.1f} | {mean:.1f} ({len(lengths)} chunks) | "
              f"{statistics.mean(ref_lengths):.1f} ({len(ref_lengths)} chunks) | {identical} / {len(real)} |")


if __name__ == "__main__":
    main()
