"""Stage `eval` (method §8): answer every benchmark item from its full context, greedy, and score it.

Prompt: the ``answer`` template over the item's full context and question. When the rendered prompt
is longer than ``max_input_len`` tokens, the *context* is middle-truncated (its first and last
halves kept) so that the rendered prompt fits; the instructions and the question are never cut
(LongBench truncates the whole prompt the same way; with the question after the context, cutting
the context is what keeps it). Lengths are counted with the policy tokenizer, chat template
excluded; the engine's context window (``max_model_len``) further caps the budget at
``max_model_len - max_tokens - chat template tokens``.

Per item: EM, F1, SubEM on the extracted answer (0 without an answer marker). Per set: means over
the items, reported in **percent** (0-100, as in the paper's tables), for any number of items.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from statistics import fmean

from ..engines import Engine, SamplingConfig
from ..logs import get_logger
from ..metrics import score_prediction
from ..pairs import middle_truncate
from ..seeds import derive_seed

log = get_logger("eval")

#: Per-item scores averaged into the metrics row (all reported in percent).
SCORE_KEYS = ("em", "f1", "subem", "subem_char", "subem_token")


def fit_context(
    templates: Mapping[str, str],
    context: str,
    question: str,
    encode: Callable[[str], list],
    decode: Callable[[list], str],
    max_input_len: int,
) -> tuple[str, int, bool]:
    """The user message of the answer prompt, its context middle-truncated to fit ``max_input_len``.

    Returns
    -------
    (str, int, bool)
        The rendered prompt, its length in tokens (``len(encode(prompt))``) and whether the context
        was truncated. Decoding and re-encoding can shift a token or two at the cut, so the budget is
        re-checked and tightened (a few passes at most); if even an empty context does not fit, the
        context is dropped entirely.
    """
    prompt = templates["answer"].format(context=context, question=question)
    n = len(encode(prompt))
    if n <= max_input_len:
        return prompt, n, False
    ids = encode(context)
    overhead = len(encode(templates["answer"].format(context="", question=question)))
    budget = max_input_len - overhead
    for _ in range(4):
        kept = middle_truncate(ids, budget)
        prompt = templates["answer"].format(context=decode(kept), question=question)
        n = len(encode(prompt))
        if n <= max_input_len or budget <= 0:
            break
        budget -= n - max_input_len
    return prompt, n, True


def chat_overhead(engine: Engine) -> int:
    """Tokens the chat template adds around a user message (0 if it cannot be measured)."""
    tok = getattr(engine, "tokenizer", None)
    try:
        text = tok.apply_chat_template([{"role": "user", "content": ""}], tokenize=False, add_generation_prompt=True)
        return engine.count_tokens(text)
    except Exception:  # noqa: BLE001 - any tokenizer without a chat template
        return 0


def evaluate(
    benchmarks: Mapping[str, Sequence[dict]],
    engine: Engine,
    templates: Mapping[str, str],
    sampling: SamplingConfig,
    max_input_len: int,
    seed: int,
    subem: str = "char",
    max_model_len: int | None = None,
    model_name: str = "model",
) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """Generate and score answers for every item of every benchmark, in one engine call.

    Parameters
    ----------
    benchmarks : mapping name -> list of items
        Items as returned by :func:`longmab.benchmarks.load_benchmark` (``id, input, context, answers``).
    engine : Engine
        Loaded once by the caller for all benchmarks.
    sampling : SamplingConfig
        Greedy when ``temperature == 0`` (paper); ``max_tokens`` new tokens at most.
    max_input_len : int
        Prompt budget in tokens (paper: 100,000).
    seed : int
        Base seed; each item gets ``derive_seed(seed, "eval", benchmark, id)`` (matters only when sampling).
    subem : {"char", "token"}
        SubEM variant of the headline ``subem`` column (both are reported as ``subem_char`` / ``subem_token``).
    max_model_len : int, optional
        The engine's context window; caps the prompt budget (see module docstring).
    model_name : str
        Written into the metrics rows.

    Returns
    -------
    (dict, dict)
        ``preds[name]``: one row per item ``{id, input, answers, output, pred, em, f1, subem,
        subem_char, subem_token, prompt_tokens, truncated}`` (scores in 0-1);
        ``metrics[name]``: ``{model, benchmark, n, em, f1, subem, subem_char, subem_token, truncated,
        subem_mode, unit}`` with means in percent.
    """
    budget = int(max_input_len)
    if max_model_len:
        cap = int(max_model_len) - int(sampling.max_tokens) - chat_overhead(engine)
        if cap < budget:
            log.warning("eval: prompt budget capped at %d tokens by max_model_len %d (max_input_len %d, "
                        "max_tokens %d)", cap, max_model_len, max_input_len, sampling.max_tokens)
            budget = cap
    if budget <= 0:
        raise ValueError(f"no room for a prompt: max_model_len {max_model_len} - max_tokens {sampling.max_tokens}")

    tok = engine.tokenizer

    def encode(s: str) -> list:
        return tok.encode(s, add_special_tokens=False)

    def decode(ids: list) -> str:
        return tok.decode(ids)

    jobs = []  # (benchmark, item, prompt, n_tokens, truncated)
    for name, items in benchmarks.items():
        for item in items:
            prompt, n, cut = fit_context(templates, item["context"], item["input"], encode, decode, budget)
            jobs.append((name, item, prompt, n, cut))
    log.info("eval %s: %d items in %d benchmarks (%d truncated)", model_name, len(jobs), len(benchmarks),
             sum(j[4] for j in jobs))
    conversations = [[{"role": "user", "content": j[2]}] for j in jobs]
    seeds = [derive_seed(seed, "eval", j[0], j[1]["id"]) for j in jobs]
    outputs = engine.generate(conversations, sampling, seeds) if jobs else []

    preds: dict[str, list[dict]] = {name: [] for name in benchmarks}
    for (name, item, _prompt, n, cut), output in zip(jobs, outputs):
        s = score_prediction(output, item["answers"], subem)
        preds[name].append({
            "id": item["id"], "input": item["input"], "answers": item["answers"], "output": output,
            "pred": s["pred"], **{k: s[k] for k in SCORE_KEYS}, "prompt_tokens": n, "truncated": cut,
        })
    metrics = {name: summarize(rows, model_name, name, subem) for name, rows in preds.items()}
    for m in metrics.values():
        log.info("eval %s/%s: n=%d EM %.1f F1 %.1f SubEM %.1f", m["model"], m["benchmark"], m["n"],
                 m["em"], m["f1"], m["subem"])
    return preds, metrics


def summarize(rows: Sequence[dict], model: str, benchmark: str, subem: str = "char") -> dict:
    """The metrics row of one set: per-item scores (0-1) averaged, in percent; 0 for an empty set."""
    row = {"model": model, "benchmark": benchmark, "n": len(rows)}
    for k in SCORE_KEYS:
        row[k] = 100.0 * fmean(r[k] for r in rows) if rows else 0.0
    row["truncated"] = sum(bool(r.get("truncated")) for r in rows)
    row["subem_mode"] = subem
    row["unit"] = "percent"
    return row

