"""Stage `rollout` (method §4): a bandit over each sample's chunks for R rounds.

Every round of every sample is one generation, recorded as ``{round, selected, reward, values,
response}``. A sample's rounds depend only on its own responses, so two schedules give the same
records (:data:`MODES`):

- ``sync``: round-synchronous, as the paper: each round, the prompts of all unfinished samples go
  to the engine in one ``generate`` call, and the shard waits for its longest response.
- ``async`` (default): continuous batching (:func:`longmab.engines.stream_generate`): a sample's next
  round is submitted as soon as its previous response is scored, so the engine's batch never drains
  to the longest response of a round. Outputs are equal to ``sync``'s: every request has its own
  seed, and its text depends only on its prompt and seed (bit for bit with the transformers engine;
  vLLM on CPU does not promise bit-identical logits across batch compositions, see
  :mod:`longmab.engines`).

``strategy`` selects the chunks of each round (the method and two ablations, same generation budget):

- ``ucb`` (the method): the ``top_k`` arms with the largest upper confidence bound.
- ``random``: ``top_k`` chunks drawn uniformly without replacement each round (seeded per sample
  and round), ignoring the arm values.
- ``full``: the whole original context every round (SeaLong-style sampling); ``selected`` lists
  every chunk.

The bandit's values are updated with the reward in all three, so the records have the same shape.

**Journal (checkpoint).** With ``journal_path``, every sample-round record is appended to a JSON
Lines journal and fsync'ed (one line each, so a checkpoint costs O(record), not O(history)); the
first line is a header with the fingerprint of the inputs and settings. A job that starts with a
journal replays it (each record's selection, reward and values are recomputed and must match) and
generates only the missing rounds; the output is byte-identical to an uninterrupted run's, in
either mode, and a journal written in one mode resumes in the other. A torn last line (the job died
mid-append) is dropped and the file truncated to its last good record. A journal that cannot be
used -- unreadable header or line, another fingerprint (foreign or stale), a record that does not
replay -- is renamed aside (``<name>.corrupt-<UTC time>``, see :func:`set_aside`) with a warning,
and the shard restarts from round 1.

**Early stop (opt-in, beyond the paper).** ``early_stop=EarlyStop(enabled=True, min_rounds=m)``
stops a sample after round ``r >= m`` once its responses include a strict reward of 1 and one of 0
(:func:`longmab.metrics.strict_reward`, the score the pairs stage ranks by): its pair then has the
largest possible gap (1 vs 0) whatever later rounds return (which of the tied responses the pairs
stage draws can still differ). A stopped sample's record simply has fewer rounds; its records are
the first rounds of the unstopped run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bandit import UCBBandit
from ..engines import Engine, SamplingConfig, stream_generate
from ..io import dumps_row
from ..logs import get_logger
from ..metrics import rollout_reward, strict_reward
from ..prompts import join_chunks, render_answer
from ..seeds import derive_seed

log = get_logger("rollout")

STRATEGIES = ("ucb", "random", "full")
MODES = ("sync", "async")
#: The schedule when none is given (bench/README.md, "Rollout schedule").
DEFAULT_MODE = "async"
#: ``format`` of a journal's header line; ``version`` changes when the record layout does.
JOURNAL_FORMAT = "longmab-rollout-journal"
JOURNAL_VERSION = 1


@dataclass(frozen=True)
class EarlyStop:
    """Opt-in stopping rule (config ``rollout.early_stop``): after at least ``min_rounds`` rounds, a
    sample stops once it has a response of strict reward 1 and one of strict reward 0."""

    enabled: bool = False
    min_rounds: int = 8

    def __post_init__(self) -> None:
        if int(self.min_rounds) < 1:
            raise ValueError(f"rollout.early_stop.min_rounds must be >= 1, got {self.min_rounds}")

    @classmethod
    def from_dict(cls, d: Mapping | EarlyStop | None) -> EarlyStop:
        if d is None:
            return cls()
        if isinstance(d, EarlyStop):
            return d
        unknown = set(d) - {"enabled", "min_rounds"}
        if unknown:
            raise ValueError(f"unknown rollout.early_stop keys {sorted(unknown)}; expected enabled, min_rounds")
        return cls(enabled=bool(d.get("enabled", False)), min_rounds=int(d.get("min_rounds", 8)))

    def stops(self, strict_rewards: Sequence[float]) -> bool:
        """Whether a sample with these strict rewards (one per round so far) is done."""
        return (self.enabled and len(strict_rewards) >= self.min_rounds
                and max(strict_rewards) == 1.0 and min(strict_rewards) == 0.0)


def fingerprint(rows: list[dict], settings: Mapping) -> str:
    """Hash of the inputs and settings a journal must match."""
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for r in rows:
        h.update(json.dumps([r["id"], r["init_values"], r["chunks"]], ensure_ascii=False).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Journal


def journal_path_for(output: str | os.PathLike) -> Path:
    """The journal of a rollout output: ``<dir>/.<stem>.journal.jsonl`` (hidden, beside it)."""
    out = Path(output)
    return out.with_name(f".{out.stem}.journal.jsonl")


def legacy_checkpoint_for(output: str | os.PathLike) -> Path:
    """The checkpoint name of earlier versions (``<dir>/.<stem>.resume.json``, whole state per round)."""
    out = Path(output)
    return out.with_name(f".{out.stem}.resume.json")


def set_aside(path: str | os.PathLike, reason: str) -> Path:
    """Rename ``path`` to ``<path>.corrupt-<UTC YYYYmmddTHHMMSSZ>`` (``-2``, ``-3`` ... if taken),
    log a warning naming both files and the reason, and return the new path."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = path.with_name(f"{path.name}.corrupt-{stamp}")
    k = 2
    while dest.exists():
        dest = path.with_name(f"{path.name}.corrupt-{stamp}-{k}")
        k += 1
    os.replace(path, dest)
    log.warning("rollout: %s: %s; set aside as %s, the shard starts over", path, reason, dest.name)
    return dest


class JournalError(ValueError):
    """A journal that cannot be resumed from (the message says why)."""


def read_journal(path: str | os.PathLike, fp: str) -> tuple[list[dict], int | None]:
    """Parse a journal; return (records, byte length to truncate to or None).

    Raises :class:`JournalError` for an unreadable header or line or another fingerprint. An
    unparseable last line (torn write) is not an error: its records are dropped and the second
    value is the length of the good part (also when nothing but a torn header is left: ``0``).
    """
    data = Path(path).read_bytes()
    lines = data.split(b"\n")  # ends with b"" when the file ends with a newline
    keep = len(data)
    if lines[-1]:  # no newline after the last line: torn append
        keep -= len(lines[-1])
        log.warning("rollout: %s: dropping a torn last line (%d bytes)", path, len(lines[-1]))
    lines = lines[:-1]
    parsed = []
    for k, line in enumerate(lines):
        try:
            parsed.append(json.loads(line))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if 0 < k == len(lines) - 1:  # an unreadable last record is a torn append too
                keep -= len(line) + 1
                log.warning("rollout: %s: dropping an unreadable last line (%s)", path, exc)
                break
            raise JournalError(f"line {k + 1} is not JSON ({exc})") from None
    if not parsed:
        return [], keep
    head = parsed[0]
    if not isinstance(head, dict) or head.get("format") != JOURNAL_FORMAT:
        raise JournalError("not a rollout journal (no header line)")
    if head.get("version") != JOURNAL_VERSION:
        raise JournalError(f"journal version {head.get('version')!r}, this code writes {JOURNAL_VERSION}")
    if head.get("fingerprint") != fp:
        raise JournalError("written for other inputs or settings (fingerprint differs)")
    return parsed[1:], (keep if keep != len(data) else None)


class _Journal:
    """Append-only writer: one fsync'ed line per record."""

    def __init__(self, path: Path, header: dict, truncate_to: int | None, start_over: bool):
        path.parent.mkdir(parents=True, exist_ok=True)
        if start_over:
            self.fh = open(path, "wb")  # noqa: SIM115 - open for the whole run, closed by close()
            self.append(header)
            return
        if truncate_to is not None:
            with open(path, "r+b") as fh:
                fh.truncate(truncate_to)
                fh.flush()
                os.fsync(fh.fileno())
        self.fh = open(path, "ab")  # noqa: SIM115 - open for the whole run, closed by close()

    def append(self, obj: dict) -> None:
        self.fh.write((dumps_row(obj) + "\n").encode("utf-8"))
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


# --------------------------------------------------------------------------------------------------
# One sample's bandit chain


class _Sample:
    """The rollout state of one sample: bandit, records, strict rewards (for early stop)."""

    def __init__(self, index: int, row: Mapping, templates: Mapping[str, str], seed: int, strategy: str,
                 top_k: int, rounds: int, subem: str, early_stop: EarlyStop):
        self.index, self.row, self.templates, self.seed, self.strategy = index, row, templates, seed, strategy
        self.top_k, self.rounds, self.subem, self.early_stop = top_k, rounds, subem, early_stop
        self.bandit = UCBBandit(row["init_values"], np.random.default_rng(derive_seed(seed, "ucb", row["id"])))
        self.history: list[dict] = []
        self.strict: list[float] = []
        self.pending: list[int] | None = None

    @property
    def finished(self) -> bool:
        return (not self.row["chunks"] or len(self.history) >= self.rounds
                or self.early_stop.stops(self.strict))

    @property
    def stopped_early(self) -> bool:
        return bool(self.row["chunks"]) and len(self.history) < self.rounds and self.early_stop.stops(self.strict)

    def request(self) -> tuple[int, list[dict], int]:
        """Start the next round: ``(index, conversation, seed)``; the selection waits in ``pending``."""
        rnd = len(self.history) + 1
        self.pending = _select(self.strategy, self.bandit, self.top_k, self.seed, self.row["id"], rnd)
        conv = render_answer(self.templates, _context(self.strategy, self.row, self.pending), self.row["input"])
        return self.index, conv, derive_seed(self.seed, "rollout", self.row["id"], rnd)

    def record(self, response: str) -> dict:
        """Score ``response`` for the pending round, update the bandit, append and return the record."""
        sel, self.pending = self.pending, None
        reward = rollout_reward(response, self.row["answer"], self.subem)
        self.bandit.update(sel, reward)
        rec = {"round": len(self.history) + 1, "selected": sel, "reward": reward,
               "values": self.bandit.values.tolist(), "response": response}
        self.history.append(rec)
        if self.early_stop.enabled:
            self.strict.append(strict_reward(response, self.row["answer"], self.subem))
        return rec

    def replay(self, entry: Mapping) -> None:
        """Re-apply a journal record; :class:`JournalError` unless it is exactly what this chain
        would record next."""
        rnd = len(self.history) + 1
        if self.finished:
            raise JournalError(f"sample {self.row['id']!r}: a record after its last round")
        if entry.get("id") != self.row["id"] or entry.get("round") != rnd:
            raise JournalError(f"sample {self.row['id']!r}: expected round {rnd}, got id "
                               f"{entry.get('id')!r} round {entry.get('round')!r}")
        self.request()
        if entry.get("selected") != self.pending:
            raise JournalError(f"sample {self.row['id']!r} round {rnd}: selection {entry.get('selected')} "
                               f"does not replay (expected {self.pending})")
        rec = self.record(entry.get("response"))
        if rec["reward"] != entry.get("reward") or rec["values"] != entry.get("values"):
            raise JournalError(f"sample {self.row['id']!r} round {rnd}: reward or values do not replay")


def _journal_entry(s: _Sample, rec: dict) -> dict:
    return {"i": s.index, "id": s.row["id"], **rec}


# --------------------------------------------------------------------------------------------------


def run_rollout(
    rows: list[dict],
    engine: Engine,
    templates: Mapping[str, str],
    sampling: SamplingConfig,
    rounds: int,
    top_k: int,
    seed: int,
    subem: str = "char",
    journal_path: str | Path | None = None,
    strategy: str = "ucb",
    mode: str | None = None,
    early_stop: EarlyStop | Mapping | None = None,
    journal_key: Any = None,
) -> tuple[list[dict], dict]:
    """Return (rollout rows, stats).

    Parameters
    ----------
    rows : list of dict
        Embed rows (``id``, ``input``, ``answer``, ``context``, ``chunks``, ``init_values``). Rows
        without chunks get no rounds.
    engine : Engine
        ``async`` uses its ``generate_stream`` when it has one (else waves of ``generate``).
    templates, sampling, rounds, top_k, seed, subem, strategy
        As in the config (``rollout.*``, ``sampling``, ``reward.subem``).
    journal_path : path, optional
        The checkpoint journal (see the module docstring); kept after the run (the caller deletes it
        once the output is safely written).
    mode : {"sync", "async"}, optional
        The schedule (default :data:`DEFAULT_MODE`); it does not change the records.
    early_stop : EarlyStop or mapping, optional
        Default off.
    journal_key : optional
        Extra value for the journal's fingerprint (e.g. the code version), so that a journal written
        by other code is not resumed.

    Returns
    -------
    rows : list of dict
        Embed row + ``rounds``: a list of ``{round, selected, reward, values, response}``
        (``selected`` in document order, ``values`` after the update), one per generated round.
    stats : dict
        ``mode``, ``strategy``, ``generations`` (this run), ``generations_resumed`` (replayed from
        the journal), ``generations_planned`` (rounds x samples with chunks), ``stopped_early``
        (samples), wall time in total and inside the engine, the share outside it, and for
        ``async`` ``mean_in_flight`` / ``occupancy`` (time-weighted requests in flight, and that
        over the samples with chunks).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown rollout strategy {strategy!r}; expected one of {STRATEGIES}")
    mode = DEFAULT_MODE if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"unknown rollout mode {mode!r}; expected one of {MODES}")
    stop = EarlyStop.from_dict(early_stop)
    settings = {"rounds": rounds, "top_k": top_k, "seed": seed, "subem": subem, "sampling": vars(sampling),
                "templates": dict(templates), "strategy": strategy,
                "early_stop": asdict(stop) if stop.enabled else None, "journal_key": journal_key}
    fp = fingerprint(rows, settings)

    def fresh() -> list[_Sample]:
        return [_Sample(i, r, templates, seed, strategy, top_k, rounds, subem, stop) for i, r in enumerate(rows)]

    samples = fresh()
    journal = None
    resumed = 0
    if journal_path:
        journal_path = Path(journal_path)
        header = {"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION, "fingerprint": fp, "samples": len(rows)}
        truncate_to, start_over = None, True
        if journal_path.exists():
            try:
                entries, truncate_to = read_journal(journal_path, fp)
                for e in entries:
                    i = e.get("i") if isinstance(e, dict) else None
                    if not isinstance(i, int) or not 0 <= i < len(rows):
                        raise JournalError(f"record with sample index {i!r} (shard has {len(rows)} samples)")
                    samples[i].replay(e)
                resumed = len(entries)
                start_over = not entries and truncate_to == 0
                if entries:
                    log.info("rollout: resuming from %s: %d records replayed, %d samples done", journal_path,
                             resumed, sum(s.finished for s in samples))
            except (JournalError, OSError, TypeError, KeyError, ValueError, AttributeError) as exc:
                set_aside(journal_path, str(exc))
                samples, truncate_to, resumed = fresh(), None, 0
        journal = _Journal(journal_path, header, truncate_to, start_over)

    active = [s for s in samples if s.row["chunks"]]
    planned = rounds * len(active)
    counters = {"generations": 0, "callback": 0.0}
    t0 = time.perf_counter()
    try:
        if mode == "sync":
            t_engine, in_flight = _run_sync(samples, engine, sampling, journal, counters, rounds), None
        else:
            t_engine, in_flight = _run_async(samples, engine, sampling, journal, counters, planned, resumed)
    finally:
        if journal is not None:
            journal.close()
    total = time.perf_counter() - t0
    out = []
    for s in samples:
        new = dict(s.row)
        new["rounds"] = s.history
        out.append(new)
    stats = {"mode": mode, "strategy": strategy, "generations": counters["generations"],
             "generations_resumed": resumed, "generations_planned": planned,
             "stopped_early": sum(s.stopped_early for s in samples),
             "seconds_total": total, "seconds_engine": t_engine,
             "overhead_share": (total - t_engine) / total if total > 0 else 0.0,
             "mean_in_flight": in_flight, "occupancy": (in_flight / len(active) if in_flight is not None and active
                                                        else None)}
    if stop.enabled:
        log.info("rollout: early stop stopped %d of %d samples; %d of %d planned generations run",
                 stats["stopped_early"], len(active), resumed + counters["generations"], planned)
    return out, stats


def apply_early_stop(rollout_rows: Sequence[Mapping], early_stop: EarlyStop | Mapping, subem: str = "char") -> list[dict]:
    """The rows a rollout with ``early_stop`` would have written, from a rollout without it.

    A sample's rounds depend only on its own earlier rounds, so its early-stopped record is the
    first rounds of the full one, cut after the first round where :meth:`EarlyStop.stops` holds.
    (bench/strategies.py measures early stop this way, from one rollout; tests check it equals
    ``run_rollout(..., early_stop=...)``.)
    """
    stop = EarlyStop.from_dict(early_stop)
    out = []
    for row in rollout_rows:
        rounds, strict = [], []
        for rec in row.get("rounds", []):
            if stop.stops(strict):
                break
            rounds.append(rec)
            strict.append(strict_reward(rec["response"], row["answer"], subem))
        out.append(dict(row, rounds=rounds))
    return out


def _run_sync(samples, engine, sampling, journal, counters, rounds) -> float:
    """Waves of one ``generate`` call over every unfinished sample (each at its own next round:
    after a resume from an async journal the samples can be at different rounds)."""
    t_engine = 0.0
    while True:
        todo = [s for s in samples if not s.finished]
        if not todo:
            return t_engine
        reqs = [s.request() for s in todo]
        te = time.perf_counter()
        responses = engine.generate([c for _, c, _ in reqs], sampling, [sd for _, _, sd in reqs])
        t_engine += time.perf_counter() - te
        counters["generations"] += len(responses)
        rewards = []
        for s, response in zip(todo, responses):
            rec = s.record(response)
            rewards.append(rec["reward"])
            if journal is not None:
                journal.append(_journal_entry(s, rec))
        rnd = max(len(s.history) for s in todo)
        log.info("rollout: round %d/%d  samples %d  mean reward %.3f", rnd, rounds, len(todo), float(np.mean(rewards)))


def _run_async(samples, engine, sampling, journal, counters, planned, resumed) -> tuple[float, float]:
    """Continuous batching: each sample's next round is submitted when its response is scored."""
    window: list[float] = []
    step = max(1, sum(1 for s in samples if s.row["chunks"]))

    def on_done(i: int, text: str):
        tc = time.perf_counter()
        s = samples[i]
        rec = s.record(text)
        if journal is not None:
            journal.append(_journal_entry(s, rec))
        counters["generations"] += 1
        window.append(rec["reward"])
        if len(window) >= step:
            log.info("rollout: %d/%d generations  mean reward of the last %d %.3f",
                     resumed + counters["generations"], planned, len(window), float(np.mean(window)))
            window.clear()
        nxt = [] if s.finished else [s.request()]
        counters["callback"] += time.perf_counter() - tc
        return nxt

    first = [s.request() for s in samples if not s.finished]
    if not first:
        return 0.0, 0.0
    st = stream_generate(engine, first, sampling, on_done)
    return st["seconds"] - counters["callback"], st["mean_in_flight"]


def _select(strategy: str, bandit: UCBBandit, top_k: int, seed: int, sample_id: str, rnd: int) -> list[int]:
    """The round's chunk indices in document order (only ``ucb`` consults the bandit)."""
    if strategy == "ucb":
        return bandit.select(top_k)
    n = bandit.n_arms
    if strategy == "full":
        return list(range(n))
    rng = np.random.default_rng(derive_seed(seed, "random-k", sample_id, rnd))
    return sorted(int(i) for i in rng.choice(n, size=min(top_k, n), replace=False))


def _context(strategy: str, row: Mapping, selected: list[int]) -> str:
    """The context the LLM sees: the original text for ``full``, else the selected chunks joined."""
    return row["context"] if strategy == "full" else join_chunks(row["chunks"], selected)


# --------------------------------------------------------------------------------------------------
# Balancing the rollout shards


def estimate_cost(row: Mapping, rounds: int, top_k: int, max_tokens: int, strategy: str = "ucb",
                  count_tokens: Callable[[str], int] | None = None) -> float:
    """Estimated tokens a sample's rollout processes: ``rounds x (prompt + max_tokens)``.

    The prompt of a round is ``min(top_k, n_chunks)`` chunks of the sample's mean chunk length
    (``full``: the whole context). ``count_tokens`` defaults to ``len(text) / 4`` (about 4
    characters per token in English; only the ratios between samples matter). A sample without
    chunks costs 0 (it is never sent). The generated tokens are the budget ``max_tokens`` per round,
    the same for every sample: what a sample will generate is not known before it runs.
    """
    chunks = row.get("chunks") or []
    if not chunks:
        return 0.0
    count = count_tokens or (lambda s: len(s) / 4)
    if strategy == "full":
        prompt = float(count(row["context"]))
    else:
        prompt = min(top_k, len(chunks)) * float(np.mean([count(c) for c in chunks]))
    return float(rounds) * (prompt + float(max_tokens))


def assign_shards(rows: Sequence[Mapping], n_shards: int,
                  cost: Callable[[Mapping], float] | None = None) -> list[list[Mapping]]:
    """Split rows into ``n_shards`` groups of about equal cost; deterministic.

    Greedy longest-processing-time: rows in decreasing cost (ties: document order) go one by one to
    the shard with the least cost so far (ties: the lowest shard number); each shard then lists its
    rows in document order. The largest shard's cost is at most 4/3 of the best possible split's
    (plus the largest row's). Every job that calls this with the same rows (e.g. all embed shards
    concatenated in shard order) gets the same split.

    Parameters
    ----------
    rows : sequence of dict, length N
        Rows in document order.
    n_shards : int
        >= 1. Shards may come out empty when N < n_shards.
    cost : callable row -> float, optional
        Default: 1 per row with chunks, 0 for a row without (kept samples; what probe filter
        imbalance is about). For token-aware balance pass e.g.
        ``functools.partial(estimate_cost, rounds=30, top_k=4, max_tokens=1024)``.

    Returns
    -------
    list of lists, length n_shards
        The rows of shard 0, 1, ... (the row objects themselves, not copies).
    """
    if int(n_shards) < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    cost = cost or (lambda r: 1.0 if r.get("chunks") else 0.0)
    costs = [float(cost(r)) for r in rows]
    loads = [0.0] * int(n_shards)
    counts = [0] * int(n_shards)
    members: list[list[int]] = [[] for _ in range(int(n_shards))]
    for i in sorted(range(len(rows)), key=lambda j: (-costs[j], j)):
        s = min(range(int(n_shards)), key=lambda k: (loads[k], counts[k], k))
        loads[s] += costs[i]
        counts[s] += 1
        members[s].append(i)
    return [[rows[i] for i in sorted(m)] for m in members]
