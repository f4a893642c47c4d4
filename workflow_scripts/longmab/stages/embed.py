"""Stage `embed` (method §3): the arms' initial values."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..logs import get_logger
from ..seeds import rng_for

log = get_logger("embed")

METHODS = ("probe_similarity", "query_similarity", "random")

Encoder = Callable[[Sequence[str]], np.ndarray]


def cosine_values(encode: Encoder, query: str, chunks: Sequence[str]) -> list[float]:
    """Cosine similarity of ``query`` to each chunk, shape (n_chunks,); embeddings L2-normalized here."""
    if not chunks:
        return []
    emb = np.asarray(encode([query, *chunks]), dtype=np.float64)
    emb /= np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
    return [float(x) for x in emb[1:] @ emb[0]]


def initial_values(
    rows: list[dict],
    method: str,
    seed: int,
    encode: Encoder | None = None,
    query_prefix: str = "",
) -> list[dict]:
    """Add ``init_method`` and ``init_values`` to each probe row (new dicts; input untouched).

    probe_similarity: cosine(probe, chunk); query_similarity: cosine(question, chunk);
    random: U(0, 1) per chunk from a generator seeded by (seed, sample id).
    """
    if method not in METHODS:
        raise ValueError(f"unknown init method {method!r}; expected one of {METHODS}")
    if method != "random" and encode is None and rows:
        raise ValueError(f"init method {method!r} needs an encoder")
    out = []
    for row in rows:
        if method == "random":
            values = [float(x) for x in rng_for(seed, "init", row["id"]).random(len(row["chunks"]))]
        else:
            query = row["probe"] if method == "probe_similarity" else row["input"]
            values = cosine_values(encode, query_prefix + query, row["chunks"])
        new = dict(row)
        new["init_method"] = method
        new["init_values"] = values
        out.append(new)
    log.info("embed: %s values for %d samples", method, len(out))
    return out


def embedder_limit(model) -> int | None:
    """The most tokens a sentence-transformers model can read: its position embeddings (minus the
    offset some architectures keep), or None when unknown."""
    try:
        cfg = model[0].auto_model.config
    except (AttributeError, IndexError, TypeError):
        return None
    n = getattr(cfg, "max_position_embeddings", None)
    if not n:
        return None
    return int(n) - (2 if getattr(cfg, "model_type", "") in ("roberta", "xlm-roberta") else 0)


def load_encoder(name_or_path: str, device: str | None = None, trust_remote_code: bool = False,
                 max_seq_length: int | None = None, encode_kwargs: dict | None = None,
                 counts: dict | None = None, min_seq_length: int | None = None) -> Encoder:
    """A sentence-transformers encoder (no instruction prefix; normalization happens in cosine_values).

    Note: all-MiniLM-L6-v2 has max_seq_length 256 word pieces; longer chunks are truncated when
    embedded (the paper's MiniCPM-Embedding reads 512+ tokens).
    """
    from sentence_transformers import SentenceTransformer

    from ..models import embedded_embedder_path, resolve_model_path

    from ..device import check_gpu_job

    path = embedded_embedder_path() if name_or_path == "embedded" else resolve_model_path(name_or_path)
    # cuda when the job has a usable GPU; a clear error when it asked for one and cannot use it
    device = device or check_gpu_job()
    model = SentenceTransformer(str(path), device=device, trust_remote_code=trust_remote_code)
    # max_seq_length: exactly that many tokens; min_seq_length: at least that many (the model's own
    # default when larger); both capped at what the position embeddings allow
    want = int(max_seq_length) if max_seq_length else (
        max(int(min_seq_length), int(model.max_seq_length or 0)) if min_seq_length else None)
    if want:
        limit = embedder_limit(model)
        model.max_seq_length = min(want, limit) if limit else want
    log.info("embedder %s (max_seq_length %s)", name_or_path, model.max_seq_length)
    kwargs = dict(encode_kwargs or {})

    def encode(texts: Sequence[str]) -> np.ndarray:
        if counts is not None:  # how many texts the embedder reads only in part
            tok = model.tokenizer
            lengths = [len(tok(t, add_special_tokens=True)["input_ids"]) for t in texts]
            counts["texts"] = counts.get("texts", 0) + len(texts)
            counts["cut"] = counts.get("cut", 0) + sum(n > model.max_seq_length for n in lengths)
            counts["max_seq_length"] = model.max_seq_length
        return model.encode(list(texts), batch_size=32, convert_to_numpy=True, show_progress_bar=False, **kwargs)

    return encode
