"""Seeded synthetic multi-hop long-context QA: a small, license-free stand-in for the paper's data.

A *world* of invented entities is built from syllables (persons, towns, companies, rivers) with
consistent facts: every person has a birth town and year, every town a river and a founding year,
every company a founder, a headquarters town and a founding year. Each fact is stated in exactly one
passage: the passage about its subject (a person, town or company). A sample asks a 1-hop question
(one passage holds the answer), a compositional 2-hop question (the answer of the first passage, the
*bridge*, names the subject of the second) or a comparison (two passages); its evidence passages are
hidden among distractor passages about other entities of the same world, shuffled, and formatted as
``Passage 1:\\n<text>\\n\\nPassage 2:\\n<text>...``. ``evidence`` lists the 1-based numbers of the
passages that hold the needed facts.

Training and test samples come from two worlds built from disjoint name pools (not a single name
word is shared), so no test entity was seen in training.

Determinism: every random draw goes through :class:`_Rng`, which uses only ``random.Random.random()``
(the one part of :mod:`random` whose sequence Python guarantees across versions) with seeds from
:func:`longmab.seeds.derive_seed`; the same arguments give byte-identical files on any machine.
Each output set has its own seed, so changing ``n_train`` leaves the test sets unchanged, and a set
with fewer samples is a prefix of the same set with more.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import write_jsonl
from .seeds import derive_seed

TRAIN = "train"
LONGBENCH_SETS = ("synth_musique", "synth_2wikimqa", "synth_multifieldqa_en")
INFINITEBENCH_SETS = ("synth_longbook_qa_eng",)
TEST_SETS = LONGBENCH_SETS + INFINITEBENCH_SETS

TRAIN_FIELDS = ("id", "input", "answer", "context", "evidence")
LONGBENCH_FIELDS = ("input", "context", "answers", "length", "dataset", "_id", "evidence")
INFINITEBENCH_FIELDS = ("id", "input", "context", "answer", "options", "evidence")


# --------------------------------------------------------------------------------------------------
# randomness


class _Rng:
    """Small RNG facade built only on ``random.Random.random()`` (stable across Python versions)."""

    def __init__(self, seed: int):
        self._r = random.Random(seed)

    def random(self) -> float:
        return self._r.random()

    def below(self, n: int) -> int:
        if n <= 0:
            raise ValueError("below(n) needs n > 0")
        return min(int(self._r.random() * n), n - 1)

    def randint(self, lo: int, hi: int) -> int:
        """Uniform integer in ``[lo, hi]`` (both inclusive)."""
        return lo + self.below(hi - lo + 1)

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[self.below(len(seq))]

    def shuffle(self, items: list) -> None:
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]

    def sample(self, seq: Sequence[Any], k: int) -> list:
        items = list(seq)
        if k > len(items):
            raise ValueError(f"cannot sample {k} from {len(items)}")
        for i in range(k):
            j = i + self.below(len(items) - i)
            items[i], items[j] = items[j], items[i]
        return items[:k]


# --------------------------------------------------------------------------------------------------
# invented names

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "qu", "r", "s",
           "t", "th", "v", "vr", "z", "j", "w")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "y")
_CODAS = ("", "", "", "", "n", "r", "l", "s", "m", "x")
_ENDINGS = {
    "first": ("a", "ia", "en", "ion", "is", "ara", "elle", "o", "wyn", "ette"),
    "last": ("ith", "ovar", "ane", "eck", "ulk", "ask", "enth", "orr", "idge", "aunt"),
    "town": ("moor", "holm", "stead", "ford", "mere", "thorpe", "gard", "by", "wick", "dale"),
    "river": ("a", "e", "is", "ou", "ine", "ash"),
    "company": ("ex", "ane", "ost", "orn", "ik", "al", "ura"),
}
# after mapping the digraphs th/qu to one letter: no doubled letter other than ll/nn/rr/ss, no run
# of 3 vowels or 3 consonants, and only a few pleasant vowel pairs
_DIGRAPHS = (("th", "\u00fe"), ("qu", "\u0071"))
_BAD = re.compile(r"([^lnrs])\1|(.)\2\2|[aeiouy]{3}|[^aeiouy]{3}")
_VOWEL_PAIR = re.compile(r"[aeiouy]{2}")
_GOOD_PAIRS = frozenset({"ae", "ei", "ia", "io", "ou", "ea", "ua", "ie", "eo", "ai"})
_MAX_LEN = {"first": 9, "last": 9, "town": 11, "river": 8, "company": 9}

_REGIONS = ("northern lowlands", "eastern hills", "western marshes", "southern plateau",
            "central valley", "coastal flats", "upper highlands", "lake district")
_OCCUPATIONS = ("clockmaker", "cartographer", "engineer", "botanist", "painter", "merchant",
                "surveyor", "composer", "printer", "glassblower", "chemist", "shipwright",
                "architect", "physician", "weaver", "astronomer")
_INDUSTRIES = (("Mills", "milling"), ("Foundry", "metal-casting"), ("Textiles", "textile"),
               ("Ironworks", "iron"), ("Shipping", "shipping"), ("Glassworks", "glassmaking"),
               ("Brewery", "brewing"), ("Press", "printing"), ("Tannery", "leather"),
               ("Ropeworks", "rope-making"), ("Pottery", "ceramics"), ("Timber", "timber"))

# filler vocabulary (real words; no years, no entity names)
_V = {
    "food": ("smoked trout", "barley bread", "plum dumplings", "onion soup", "honey cakes",
             "pickled beets", "goat cheese", "walnut pies", "lentil stew", "salted herring"),
    "topic": ("tidal charts", "bird migration", "old coinage", "bridge design", "folk songs",
              "weather records", "lens grinding", "soil drainage", "local dialects", "star maps"),
    "color": ("green", "dark blue", "red", "grey", "yellow", "brown", "white", "black"),
    "material": ("limestone", "red brick", "oak timber", "slate", "granite", "clay", "flint"),
    "collectible": ("pressed flowers", "brass keys", "old maps", "seashells", "pocket watches",
                    "porcelain cups", "fossils", "beetles"),
    "hobby": ("woodcarving", "beekeeping", "sailing", "chess", "fishing", "bookbinding",
              "watercolour painting", "violin playing"),
    "plant": ("roses", "lavender", "tomatoes", "tulips", "fennel", "sunflowers", "sage"),
    "goods": ("wool", "cheese", "copper pots", "salt", "wax candles", "leather boots", "apples"),
    "festival": ("lanterns", "kites", "harvest bread", "boat races", "masks", "music"),
    "building": ("grain store", "chapel", "customs house", "schoolhouse", "tannery"),
    "trade": ("fishing", "weaving", "quarrying", "sheep farming", "salt making", "brewing"),
    "animal": ("heron", "fox", "stag", "owl", "horse", "lion", "crow", "salmon"),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"),
    "product": ("sturdy crates", "fine cloth", "iron hinges", "glass bottles", "coarse rope",
                "stoneware jars", "printed almanacs", "roof beams"),
}

_PERSON_FILLER = (
    "{E} worked for many years as {a_occupation} and trained {n} apprentices.",
    "Friends remembered {E} as patient, precise and very fond of {food}.",
    "In later life {E} collected {collectible} and kept them in a {color} cabinet.",
    "{E} wrote {n} letters about {topic}, most of which are now lost.",
    "A portrait of {E} in a {color} coat hangs in a small private gallery.",
    "{E} travelled widely and was said to speak {k} languages.",
    "Colleagues often asked {E} for advice on {topic}.",
    "{E} rarely gave interviews and preferred to spend the evenings reading about {topic}.",
    "Several notebooks kept by {E} describe long experiments with {material}.",
    "{E} was an early member of a society devoted to {topic}.",
    "Neighbours recalled that {E} walked for {k} hours every morning regardless of the weather.",
    "{E} once gave a long lecture on {topic} to an audience of {n} people.",
    "Late in life {E} took up {hobby} and became quite skilled at it.",
    "{E} kept a large garden full of {plant} and {plant2}.",
    "Letters from {E} to a cousin mention a long illness and a slow recovery.",
    "{E} was known for a dry sense of humour and a habit of arriving early.",
)
_TOWN_FILLER = (
    "{E} holds a market every {weekday} where traders sell {goods}.",
    "The population of {E} is roughly {k} thousand people.",
    "Houses in {E} are traditionally built of {material} with {color} roofs.",
    "{E} is known for its annual festival of {festival}.",
    "The main square of {E} has a clock tower with {k} bells.",
    "Visitors to {E} often try the local {food}.",
    "The town council of {E} meets in a former {building}.",
    "Most families in {E} once earned a living from {trade}.",
    "{E} has {k} schools, a small library and a covered market hall.",
    "Winters in {E} are long, and the narrow streets are often covered with snow.",
    "A railway line reached {E} late, and its station is still very small.",
    "The coat of arms of {E} shows a {color} {animal} on a plain shield.",
    "Many of the old buildings in {E} were restored after a large fire.",
    "The surrounding fields of {E} are used for growing {plant} and {plant2}.",
)
_COMPANY_FILLER = (
    "{E} employs about {n} workers.",
    "The best-known products of {E} are {product}.",
    "{E} sells most of its goods to customers in {k} neighbouring regions.",
    "The logo of {E} shows a {color} {animal}.",
    "{E} was reorganised twice after long disputes between its partners.",
    "{E} publishes a small annual report that few people read.",
    "Workers at {E} receive a basket of {food} at the end of each year.",
    "{E} operates {k} warehouses and a small fleet of delivery carts.",
    "The main workshop of {E} is a long building of {material}.",
    "For a time {E} also traded in {goods}, but that business was later sold.",
    "{E} sponsors a modest prize for young people interested in {topic}.",
    "Records kept by {E} list {n} different customers in a single busy season.",
)
_GENERIC_FILLER = (
    "Much of what is known about {E} comes from a short local history printed by a village press.",
    "Historians disagree about several minor details concerning {E}.",
    "A small exhibition about {E} was shown at a regional museum for {k} months.",
    "Newspapers of the time mentioned {E} only occasionally.",
    "An old guidebook devotes {k} pages to {E} and praises the surrounding countryside.",
    "Few photographs related to {E} survive today.",
    "Local schoolchildren still learn a few facts about {E}.",
    "A recent pamphlet about {E} repeats several stories that cannot be checked.",
)


@dataclass(frozen=True)
class Person:
    name: str
    occupation: str
    birth_town: str
    birth_year: int


@dataclass(frozen=True)
class Town:
    name: str
    region: str
    river: str
    founded: int


@dataclass(frozen=True)
class Company:
    name: str
    industry: str
    founder: str
    hq: str
    founded: int


@dataclass
class World:
    persons: dict[str, Person]
    towns: dict[str, Town]
    companies: dict[str, Company]
    rivers: list[str]
    words: list[str] = field(default_factory=list)  # every invented name word used

    def entity_names(self) -> set[str]:
        return set(self.persons) | set(self.towns) | set(self.companies) | set(self.rivers)

    def subjects(self) -> list[tuple[str, str]]:
        """Every entity that has a passage, as ``(kind, name)`` in a fixed order."""
        return ([("person", n) for n in self.persons] + [("town", n) for n in self.towns]
                + [("company", n) for n in self.companies])


@dataclass(frozen=True)
class WorldSize:
    persons: int = 60
    towns: int = 30
    companies: int = 30
    rivers: int = 12
    #: persons that share their surname with one other person (a namesake with other facts); even
    namesakes: int = 0
    #: companies that share their name stem with one other company (another industry, other facts); even
    company_twins: int = 0


def _make_word(rng: _Rng, kind: str) -> str:
    n_syl = rng.randint(1, 2) if kind == "last" else 2
    body = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n_syl))
    return (body + rng.choice(_ENDINGS[kind])).capitalize()


def _shape(word: str) -> str:
    for digraph, letter in _DIGRAPHS:
        word = word.replace(digraph, letter)
    return word


def make_name_pools(seed: int, per_split: WorldSize) -> dict[str, dict[str, list[str]]]:
    """Invented name words for the ``train`` and ``test`` worlds, disjoint by construction.

    Every word is unique, 5–11 letters, and no word is a substring of another (so a correct answer
    can never be matched inside a different name).
    """
    rng = _Rng(derive_seed(seed, "synth", "names"))
    need = {"first": per_split.persons, "last": per_split.persons, "town": per_split.towns,
            "river": per_split.rivers, "company": per_split.companies}
    accepted: list[str] = []
    pools: dict[str, list[str]] = {k: [] for k in need}
    for kind, count in need.items():
        tries = 0
        while len(pools[kind]) < 2 * count:
            tries += 1
            if tries > 200_000:
                raise RuntimeError(f"could not invent enough {kind} names")
            word = _make_word(rng, kind)
            low = word.lower()
            shape = _shape(low)
            if not 5 <= len(low) <= _MAX_LEN[kind] or _BAD.search(shape):
                continue
            if "quu" in low or "quy" in low:
                continue
            if any(pair not in _GOOD_PAIRS for pair in _VOWEL_PAIR.findall(shape)):
                continue
            if any(low in w or w in low for w in accepted):
                continue
            accepted.append(low)
            pools[kind].append(word)
    out: dict[str, dict[str, list[str]]] = {TRAIN: {}, "test": {}}
    for kind, words in pools.items():
        rng.shuffle(words)
        half = len(words) // 2
        out[TRAIN][kind], out["test"][kind] = words[:half], words[half:]
    return out


def build_world(pool: dict[str, list[str]], rng: _Rng, namesakes: int = 0,
                company_twins: int = 0) -> World:
    """Assign consistent random facts to the names of one pool.

    The first ``namesakes`` persons come in pairs that share a surname (``Brinta Seisith`` and
    ``Quejyxa Seisith``) with different birth towns and years, and the first ``company_twins``
    companies in pairs that share a name stem (``Geveixal Mills``, ``Geveixal Press``): look-alike
    entities whose passages are the hardest distractors (:func:`related_subjects`).
    """
    rivers = [f"{w} River" for w in pool["river"]]
    towns: dict[str, Town] = {}
    for i, name in enumerate(pool["town"]):
        # every river flows through at least one town when there are enough towns
        river = rivers[i] if i < len(rivers) else rng.choice(rivers)
        towns[name] = Town(name, rng.choice(_REGIONS), river, rng.randint(1150, 1780))
    town_names = list(towns)
    persons: dict[str, Person] = {}
    lasts = list(pool["last"])
    for i in range(1, min(namesakes, len(lasts)), 2):  # persons 2j and 2j+1 share a surname
        lasts[i] = lasts[i - 1]
    for first, last in zip(pool["first"], lasts):
        name = f"{first} {last}"
        town, year = rng.choice(town_names), rng.randint(1790, 1950)
        twin = next((p for p in persons.values() if p.name.split()[-1] == last), None)
        while twin is not None and (town == twin.birth_town or year == twin.birth_year):
            town, year = rng.choice(town_names), rng.randint(1790, 1950)
        persons[name] = Person(name, rng.choice(_OCCUPATIONS), town, year)
    person_names = list(persons)
    founders = rng.sample(person_names, min(len(person_names), len(pool["company"])))
    stems = list(pool["company"])
    for i in range(1, min(company_twins, len(stems)), 2):  # companies 2j and 2j+1 share a stem
        stems[i] = stems[i - 1]
    companies: dict[str, Company] = {}
    for i, stem in enumerate(stems):
        noun, industry = rng.choice(_INDUSTRIES)
        while f"{stem} {noun}" in companies:
            noun, industry = rng.choice(_INDUSTRIES)
        founder = founders[i % len(founders)]
        year = persons[founder].birth_year + rng.randint(22, 60)
        companies[f"{stem} {noun}"] = Company(f"{stem} {noun}", industry, founder,
                                              rng.choice(town_names), year)
    words = [w for ws in pool.values() for w in ws]
    return World(persons, towns, companies, rivers, words)


def build_worlds(seed: int = 42, size: WorldSize | None = None) -> dict[str, World]:
    """The ``train`` and ``test`` worlds of a seed (disjoint name pools; default size
    :data:`DEFAULT_WORLD`)."""
    size = size or DEFAULT_WORLD
    pools = make_name_pools(seed, size)
    return {split: build_world(pools[split], _Rng(derive_seed(seed, "synth", "world", split)),
                               size.namesakes, size.company_twins)
            for split in (TRAIN, "test")}


# --------------------------------------------------------------------------------------------------
# passages


def _fill(template: str, rng: _Rng, **known: str) -> str:
    values = dict(known)
    for key in re.findall(r"\{(\w+)\}", template):
        if key in values:
            continue
        if key == "n":
            values[key] = str(rng.randint(12, 480))
        elif key == "k":
            values[key] = str(rng.randint(2, 9))
        elif key == "plant2":
            values[key] = rng.choice([p for p in _V["plant"] if p != values.get("plant")])
        else:
            values[key] = rng.choice(_V[key])
    return template.format(**values)


def _pick(rng: _Rng, paraphrase: float, plain: str, variants: Sequence[str]) -> str:
    return rng.choice(variants) if variants and rng.random() < paraphrase else plain


def _fact_sentences(world: World, kind: str, name: str, rng: _Rng, paraphrase: float) -> list[str]:
    if kind == "person":
        p = world.persons[name]
        if rng.random() < 0.5:
            return [_pick(rng, paraphrase, "{E} was born in {T} in {Y}.", (
                "Born in {Y} in the town of {T}, {E} spent a quiet childhood there.",
                "The parish records of {T} show that {E} was born there in {Y}.",
            )).format(E=name, T=p.birth_town, Y=p.birth_year)]
        return [
            _pick(rng, paraphrase, "{E} was born in {T}.", (
                "{E} was born in the town of {T}.",
                "The birthplace of {E} was {T}.",
            )).format(E=name, T=p.birth_town),
            _pick(rng, paraphrase, "{E} was born in {Y}.", (
                "The year of birth of {E} was {Y}.",
                "According to family papers, {E} was born in {Y}.",
            )).format(E=name, Y=p.birth_year),
        ]
    if kind == "town":
        t = world.towns[name]
        return [
            _pick(rng, paraphrase, "The {R} flows through {E}.", (
                "{E} lies on the banks of the {R}, which flows through the middle of the town.",
                "The {R} flows through {E}, dividing the old quarter from the new one.",
            )).format(E=name, R=t.river),
            _pick(rng, paraphrase, "The town of {E} was founded in {Y}.", (
                "{E} was founded in {Y} by a small group of settlers.",
                "Old charters say that {E} was founded in {Y}.",
            )).format(E=name, Y=t.founded),
        ]
    c = world.companies[name]
    if rng.random() < 0.5:
        founding = [_pick(rng, paraphrase, "{E} was founded by {P} in {Y}.", (
            "{P} founded {E} in {Y}.",
            "In {Y}, {P} founded {E} with money borrowed from relatives.",
        )).format(E=name, P=c.founder, Y=c.founded)]
    else:
        founding = [
            _pick(rng, paraphrase, "{E} was founded by {P}.", (
                "The founder of {E} was {P}.",
            )).format(E=name, P=c.founder),
            _pick(rng, paraphrase, "{E} was founded in {Y}.", (
                "The company {E} was founded in {Y}.",
            )).format(E=name, Y=c.founded),
        ]
    hq = _pick(rng, paraphrase, "{E} is headquartered in {T}.", (
        "The headquarters of {E} are in the town of {T}.",
        "{E} is headquartered in {T}, close to the market square.",
    )).format(E=name, T=c.hq)
    return founding + [hq]


def _intro(world: World, kind: str, name: str) -> str:
    if kind == "person":
        p = world.persons[name]
        article = "an" if p.occupation[0] in "aeiou" else "a"
        return f"{name} was {article} {p.occupation}."
    if kind == "town":
        return f"{name} is a small town in the {world.towns[name].region}."
    industry = world.companies[name].industry
    return f"{name} is {'an' if industry[0] in 'aeiou' else 'a'} {industry} company."


def render_passage(world: World, kind: str, name: str, rng: _Rng, words: tuple[int, int],
                   paraphrase: float, full_name_rate: float = 0.3) -> str:
    """One paragraph about an entity: an intro, its facts and filler sentences, ``words`` long."""
    target = rng.randint(*words)
    intro = _intro(world, kind, name)
    facts = _fact_sentences(world, kind, name, rng, paraphrase)
    own = {"person": _PERSON_FILLER, "town": _TOWN_FILLER, "company": _COMPANY_FILLER}[kind]
    base = list(own) + list(_GENERIC_FILLER)
    known: dict[str, str] = {}
    if kind == "person":
        occupation = world.persons[name].occupation
        known["a_occupation"] = f"{'an' if occupation[0] in 'aeiou' else 'a'} {occupation}"
    short = {"person": name.split()[-1], "town": "the town", "company": "the company"}[kind]
    body = list(facts)
    count = len(intro.split()) + sum(len(s.split()) for s in body)
    templates: list[str] = []
    while count < target:
        if not templates:  # a fresh shuffled round of all templates (rounds repeat only if huge)
            templates = list(base)
            rng.shuffle(templates)
        template = templates.pop()
        # filler names its entity in full only sometimes (a surname / "the town" otherwise)
        ref = name if rng.random() < full_name_rate else short
        sentence = _fill(template, rng, E=ref, **known)
        sentence = sentence[0].upper() + sentence[1:]
        body.append(sentence)
        count += len(sentence.split())
    rng.shuffle(body)
    return " ".join([intro] + body)


def format_context(passages: Sequence[str]) -> str:
    """``Passage 1:\\n<text>\\n\\nPassage 2:\\n<text>...`` (1-based)."""
    return "\n\n".join(f"Passage {i}:\n{text}" for i, text in enumerate(passages, start=1))


# --------------------------------------------------------------------------------------------------
# questions


@dataclass
class Question:
    qtype: str
    hops: int
    question: str
    answer: str
    evidence: list[tuple[str, str]]  # (kind, name) of the passages holding the needed facts
    bridge: str | None = None
    key: tuple = ()


def _q_one_hop(world: World, rng: _Rng, qtype: str) -> Question:
    if qtype in ("birthplace", "birthyear"):
        p = world.persons[rng.choice(list(world.persons))]
        if qtype == "birthplace":
            return Question(qtype, 1, f"In which town was {p.name} born?", p.birth_town,
                            [("person", p.name)], key=(qtype, p.name))
        return Question(qtype, 1, f"In which year was {p.name} born?", str(p.birth_year),
                        [("person", p.name)], key=(qtype, p.name))
    if qtype in ("town_river", "town_year"):
        t = world.towns[rng.choice(list(world.towns))]
        if qtype == "town_river":
            return Question(qtype, 1, f"Which river flows through {t.name}?", t.river,
                            [("town", t.name)], key=(qtype, t.name))
        return Question(qtype, 1, f"In which year was the town of {t.name} founded?",
                        str(t.founded), [("town", t.name)], key=(qtype, t.name))
    c = world.companies[rng.choice(list(world.companies))]
    if qtype == "founder":
        return Question(qtype, 1, f"Who founded {c.name}?", c.founder, [("company", c.name)],
                        key=(qtype, c.name))
    if qtype == "company_year":
        return Question(qtype, 1, f"In which year was {c.name} founded?", str(c.founded),
                        [("company", c.name)], key=(qtype, c.name))
    if qtype == "hq":
        return Question(qtype, 1, f"In which town is {c.name} headquartered?", c.hq,
                        [("company", c.name)], key=(qtype, c.name))
    raise ValueError(f"unknown 1-hop question type {qtype!r}")


def _q_two_hop(world: World, rng: _Rng, qtype: str) -> Question:
    if qtype in ("birthplace_river", "birthplace_year"):
        p = world.persons[rng.choice(list(world.persons))]
        t = world.towns[p.birth_town]
        ev = [("person", p.name), ("town", t.name)]
        if qtype == "birthplace_river":
            return Question(qtype, 2, f"Which river flows through the birthplace of {p.name}?",
                            t.river, ev, bridge=t.name, key=(qtype, p.name))
        return Question(qtype, 2, f"In which year was the birthplace of {p.name} founded?",
                        str(t.founded), ev, bridge=t.name, key=(qtype, p.name))
    c = world.companies[rng.choice(list(world.companies))]
    if qtype == "hq_river":
        t = world.towns[c.hq]
        return Question(qtype, 2, f"Which river flows through the town where {c.name} is headquartered?",
                        t.river, [("company", c.name), ("town", t.name)], bridge=t.name,
                        key=(qtype, c.name))
    p = world.persons[c.founder]
    ev = [("company", c.name), ("person", p.name)]
    if qtype == "founder_birthplace":
        return Question(qtype, 2, f"In which town was the founder of {c.name} born?", p.birth_town,
                        ev, bridge=p.name, key=(qtype, c.name))
    if qtype == "founder_birthyear":
        return Question(qtype, 2, f"In which year was the founder of {c.name} born?",
                        str(p.birth_year), ev, bridge=p.name, key=(qtype, c.name))
    raise ValueError(f"unknown 2-hop question type {qtype!r}")


def _q_comparison(world: World, rng: _Rng, qtype: str) -> Question:
    if qtype == "born_first":
        names = list(world.persons)
        while True:
            a, b = rng.sample(names, 2)
            ya, yb = world.persons[a].birth_year, world.persons[b].birth_year
            if ya != yb:
                break
        return Question(qtype, 2, f"Who was born first, {a} or {b}?", a if ya < yb else b,
                        [("person", a), ("person", b)], key=(qtype, *sorted((a, b))))
    if qtype == "founded_first":
        names = list(world.companies)
        while True:
            a, b = rng.sample(names, 2)
            ya, yb = world.companies[a].founded, world.companies[b].founded
            if ya != yb:
                break
        return Question(qtype, 2, f"Which company was founded earlier, {a} or {b}?",
                        a if ya < yb else b, [("company", a), ("company", b)],
                        key=(qtype, *sorted((a, b))))
    raise ValueError(f"unknown comparison question type {qtype!r}")


# The embedded data's shape (data/README.md): long contexts of many short passages, so that at the
# embedded chunk size a context has well over 12 chunks and top_k chunks see a small part of it;
# multi-hop training questions; half of the distractors look like the evidence.
N_TRAIN = 64
N_TEST = 25
PASSAGES = (7, 9)
LONG_PASSAGES = (12, 14)
WORDS = (25, 40)
TWO_HOP_FRACTION = 0.35
COMPARISON_FRACTION = 0.15
RELATED_FRACTION = 0.5
DEFAULT_WORLD = WorldSize(namesakes=30, company_twins=16)

ONE_HOP_TYPES = ("birthplace", "birthyear", "town_river", "town_year", "founder", "company_year", "hq")
TWO_HOP_TYPES = ("birthplace_river", "birthplace_year", "hq_river", "founder_birthplace",
                 "founder_birthyear")
COMPARISON_TYPES = ("born_first", "founded_first")


def make_question(world: World, rng: _Rng, qtype: str) -> Question:
    if qtype in ONE_HOP_TYPES:
        return _q_one_hop(world, rng, qtype)
    if qtype in TWO_HOP_TYPES:
        return _q_two_hop(world, rng, qtype)
    if qtype in COMPARISON_TYPES:
        return _q_comparison(world, rng, qtype)
    raise ValueError(f"unknown question type {qtype!r}")


# --------------------------------------------------------------------------------------------------
# samples and sets


def lookalikes(world: World, kind: str, name: str) -> list[tuple[str, str]]:
    """Entities whose names look like ``name``: a person's namesakes (same surname), a company's
    twins (same name stem)."""
    if kind == "person":
        last = name.split()[-1]
        return [("person", n) for n in world.persons if n != name and n.split()[-1] == last]
    if kind == "company":
        stem = name.split()[0]
        return [("company", n) for n in world.companies if n != name and n.split()[0] == stem]
    return []


def related_subjects(world: World, evidence: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Distractors that share names or facts with the evidence, hardest first (fixed order).

    First the look-alikes of every evidence entity and the passage their own chain leads to (the
    namesake's birth town, the twin company's headquarters or founder: conflicting facts one hop
    on), then entities that mention an evidence entity (persons born in an evidence town, companies
    headquartered there or founded by an evidence person).
    """
    out: list[tuple[str, str]] = []

    def add(s: tuple[str, str]) -> None:
        if s not in evidence and s not in out:
            out.append(s)

    for kind, name in evidence:
        for look in lookalikes(world, kind, name):
            add(look)
            if look[0] == "person":
                add(("town", world.persons[look[1]].birth_town))
            else:
                c = world.companies[look[1]]
                add(("town", c.hq))
                add(("person", c.founder))
    for kind, name in evidence:
        if kind == "town":
            for p in world.persons.values():
                if p.birth_town == name:
                    add(("person", p.name))
            for c in world.companies.values():
                if c.hq == name:
                    add(("company", c.name))
        elif kind == "person":
            for c in world.companies.values():
                if c.founder == name:
                    add(("company", c.name))
    return out


def make_sample(world: World, rng: _Rng, q: Question, n_passages: tuple[int, int],
                words: tuple[int, int], paraphrase: float, related_fraction: float = 0.0) -> dict:
    """Render one sample: evidence passages hidden among distractors, shuffled.

    Up to ``related_fraction`` of the distractors are drawn from :func:`related_subjects` (look-alike
    names, conflicting facts, passages that mention the evidence entities), the rest at random.
    """
    n = max(rng.randint(*n_passages), len(q.evidence) + 1)
    n_dis = n - len(q.evidence)
    related = related_subjects(world, q.evidence)
    n_rel = min(len(related), int(round(related_fraction * n_dis)))
    hard = related[:n_rel]
    pool = [s for s in world.subjects() if s not in q.evidence and s not in hard]
    chosen = list(q.evidence) + hard + rng.sample(pool, min(n_dis - n_rel, len(pool)))
    rng.shuffle(chosen)
    passages = [render_passage(world, kind, name, rng, words, paraphrase) for kind, name in chosen]
    evidence = sorted(chosen.index(e) + 1 for e in q.evidence)
    return {
        "input": q.question,
        "answer": q.answer,
        "context": format_context(passages),
        "evidence": evidence,
        "meta": {"type": q.qtype, "hops": q.hops, "bridge": q.bridge,
                 "evidence_entities": [name for _, name in q.evidence],
                 "passage_entities": [name for _, name in chosen]},
    }


def _generate_set(world: World, seed: int, name: str, n: int, types_for: Callable[[_Rng], str],
                  n_passages: tuple[int, int], words: tuple[int, int], paraphrase: float,
                  related_fraction: float = 0.0) -> list[dict]:
    rng = _Rng(derive_seed(seed, "synth", "set", name))
    seen: set[tuple] = set()
    out = []
    while len(out) < n:
        for _ in range(1000):  # find an unused question (duplicates only in tiny worlds)
            q = make_question(world, rng, types_for(rng))
            if q.key not in seen:
                break
        seen.add(q.key)
        out.append(make_sample(world, rng, q, n_passages, words, paraphrase, related_fraction))
    return out


def _as_train(rows: list[dict], keep_meta: bool) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        row = {"id": f"train-{i:04d}", "input": r["input"], "answer": r["answer"],
               "context": r["context"], "evidence": r["evidence"]}
        if keep_meta:
            row["meta"] = r["meta"]
        out.append(row)
    return out


def _as_longbench(rows: list[dict], name: str, keep_meta: bool) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        row = {"input": r["input"], "context": r["context"], "answers": [r["answer"]],
               "length": len(r["context"].split()), "dataset": name, "_id": f"{name}-{i:04d}",
               "evidence": r["evidence"]}
        if keep_meta:
            row["meta"] = r["meta"]
        out.append(row)
    return out


def _as_infinitebench(rows: list[dict], keep_meta: bool) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        row = {"id": i, "input": r["input"], "context": r["context"], "answer": [r["answer"]],
               "options": [], "evidence": r["evidence"]}
        if keep_meta:
            row["meta"] = r["meta"]
        out.append(row)
    return out


def generate_dataset(seed: int = 42, n_train: int = N_TRAIN, n_test_per_set: int = N_TEST,
                     passages_per_context: tuple[int, int] = PASSAGES,
                     words_per_passage: tuple[int, int] = WORDS,
                     long_passages_per_context: tuple[int, int] = LONG_PASSAGES,
                     two_hop_fraction: float = TWO_HOP_FRACTION, paraphrase: float = 0.0,
                     world_size: WorldSize | None = None, keep_meta: bool = False,
                     comparison_fraction: float = COMPARISON_FRACTION,
                     related_fraction: float = RELATED_FRACTION,
                     train_set_name: str = TRAIN) -> dict[str, list[dict]]:
    """Build the training set and the four synthetic benchmark sets.

    Returns ``{"train": [...], "synth_musique": [...], "synth_2wikimqa": [...],
    "synth_multifieldqa_en": [...], "synth_longbook_qa_eng": [...]}``.

    Difficulty knobs: ``passages_per_context`` / ``long_passages_per_context`` (inclusive ranges; the
    latter for ``synth_longbook_qa_eng``), ``words_per_passage`` (inclusive target range; a passage
    stops at the first sentence that reaches it), ``two_hop_fraction`` (share of compositional 2-hop
    questions in ``train``; the rest are 1-hop), ``paraphrase`` (probability that a fact sentence is
    worded differently from the question; 0 makes every fact mirror the question's wording).
    ``keep_meta`` adds a ``meta`` field (question type, hops, bridge entity, passage entities) for tests
    and analysis; the written files never hold it.
    """
    for lo, hi in (passages_per_context, words_per_passage, long_passages_per_context):
        if not 0 < lo <= hi:
            raise ValueError(f"bad range ({lo}, {hi})")
    if not 0.0 <= two_hop_fraction <= 1.0 or not 0.0 <= paraphrase <= 1.0:
        raise ValueError("two_hop_fraction and paraphrase must lie in [0, 1]")
    if not 0.0 <= comparison_fraction <= 1.0 - two_hop_fraction or not 0.0 <= related_fraction <= 1.0:
        raise ValueError("comparison_fraction must lie in [0, 1 - two_hop_fraction], "
                         "related_fraction in [0, 1]")
    worlds = build_worlds(seed, world_size or DEFAULT_WORLD)
    train_w, test_w = worlds[TRAIN], worlds["test"]

    def train_types(rng: _Rng) -> str:
        u = rng.random()
        if u < two_hop_fraction:
            return rng.choice(TWO_HOP_TYPES)
        if u < two_hop_fraction + comparison_fraction:
            return rng.choice(COMPARISON_TYPES)
        return rng.choice(ONE_HOP_TYPES)

    def fixed(types: Sequence[str]) -> Callable[[_Rng], str]:
        return lambda rng: rng.choice(types)

    common = {"words": words_per_passage, "paraphrase": paraphrase, "related_fraction": related_fraction}
    train = _generate_set(train_w, seed, train_set_name, n_train, train_types, passages_per_context,
                          **common)
    musique = _generate_set(test_w, seed, "synth_musique", n_test_per_set, fixed(TWO_HOP_TYPES),
                            passages_per_context, **common)
    wiki = _generate_set(test_w, seed, "synth_2wikimqa", n_test_per_set,
                         fixed(COMPARISON_TYPES + ("founder_birthplace", "founder_birthyear")),
                         passages_per_context, **common)
    mfqa = _generate_set(test_w, seed, "synth_multifieldqa_en", n_test_per_set, fixed(ONE_HOP_TYPES),
                         passages_per_context, **common)
    longbook = _generate_set(test_w, seed, "synth_longbook_qa_eng", n_test_per_set,
                             fixed(ONE_HOP_TYPES), long_passages_per_context, **common)
    return {
        TRAIN: _as_train(train, keep_meta),
        "synth_musique": _as_longbench(musique, "synth_musique", keep_meta),
        "synth_2wikimqa": _as_longbench(wiki, "synth_2wikimqa", keep_meta),
        "synth_multifieldqa_en": _as_longbench(mfqa, "synth_multifieldqa_en", keep_meta),
        "synth_longbook_qa_eng": _as_infinitebench(longbook, keep_meta),
    }


def write_dataset(out_dir: str | os.PathLike, seed: int = 42, n_train: int = N_TRAIN,
                  n_test_per_set: int = N_TEST, **kwargs: Any) -> dict[str, Path]:
    """Write ``out_dir/train.jsonl`` and ``out_dir/test/<set>.jsonl``; returns ``{set: path}``."""
    kwargs.pop("keep_meta", None)
    data = generate_dataset(seed, n_train, n_test_per_set, **kwargs)
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    for name, rows in data.items():
        path = out_dir / "train.jsonl" if name == TRAIN else out_dir / "test" / f"{name}.jsonl"
        write_jsonl(path, rows)
        paths[name] = path
    return paths
