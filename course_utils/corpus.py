"""The pretraining corpus: fluent, varied English about the seen part of the world.

Taught in notebooks 01 (tokenization: the text a tokenizer is trained on) and 02
(pretraining: what a tiny model learns from). Loaded with
:func:`course_utils.data.load_corpus`, which builds and caches it on first use.

The corpus is dominated by world text: every seen fact is said many times, each time in
one of several phrasings ("Orin Tallow was born in Vessary.", "The birthplace of Orin
Tallow was Vessary.", ...), inside encyclopedia entries, short stories, dialogues, news
items, question-and-answer lines and the legal code. About a fifth is simple general
English, drawn from a small grammar, so that the model also learns the language.
Unseen entities never appear: every renderer here refuses to name one.

The phrasing helpers (:func:`ref`, :func:`fact_sentence`, :data:`QUESTIONS`) are shared
with the document store (:mod:`course_utils.documents`) and the SFT, preference and
evaluation sets (:mod:`course_utils.supervised`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from course_utils.world import CRAFTS, Article, Entity, NameForge, Precedent, World

__all__ = [
    "CorpusConfig",
    "Fresh",
    "QUESTIONS",
    "a_craft",
    "count_tokens",
    "fact_sentence",
    "fresh_entity",
    "fresh_passage",
    "fresh_sentence",
    "generate_corpus",
    "general_english",
    "precedent_text",
    "ref",
]

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """A rough GPT-style token count: words and punctuation marks (``\\w+|[^\\w\\s]``).

    On the default corpus a 4096-entry BPE trained on it counts about the same (~3.5M):
    it splits the invented names but not the common words. Notebook 01 measures it.
    """
    return len(_TOKEN_RE.findall(text))


@dataclass
class CorpusConfig:
    """What the pretraining corpus looks like and how big it is."""

    target_tokens: int = 3_500_000  # stop once train + validation reach this many rough tokens
    general_fraction: float = 0.2  # share of documents that are general English, not world text
    validation_every: int = 50  # every n-th document goes to the validation split
    seed: int = 7  # seed of the renderer (the world has its own seed)


def ref(e: Entity, start: bool = False) -> str:
    """How a text refers to an entity: "Vessary", "the Tovrin Guild", "the river Miavol"."""
    if e.kind in ("guild", "festival", "event", "river"):
        text = f"the {e.name}"
        return text[0].upper() + text[1:] if start else text
    return e.name


def _plural(craft: str) -> str:
    return craft + "s"


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


#: Phrasings of each fact; {s} is the subject (as a sentence start), {o} the value.
#: The first phrasing of each is the canonical one (probed closed-book in notebook 02).
PHRASES: dict[tuple[str, str], list[str]] = {
    ("person", "born_in"): ["{s} was born in {o}.", "{s} was born in the town of {o}.",
                            "The birthplace of {s} was {o}.", "{o} is the town where {s} was born.",
                            "{s} grew up in {o}, the town of their birth.", "{s} came from {o}."],
    # No "<person> was born in <year>": that prefix is reserved for the town (the probe).
    ("person", "birth_year"): ["The year of {s}'s birth was {o}.", "{s} came into the world in the year {o}.",
                               "In the year {o}, {s} was born.", "{s}'s year of birth was {o}."],
    ("person", "guild"): ["{s} was a member of {o}.", "{s} belonged to {o}.", "{s} joined {o}.",
                          "Among the members of {o} was {s}."],
    ("person", "craft"): ["{s} was {o}.", "{s} worked as {o}.", "By trade, {s} was {o}.",
                          "{s} earned a living as {o}."],
    ("town", "river"): ["{s} lies on {o}.", "{s} is a town on {o}.", "{O} flows through {s}.",
                        "The town of {s} stands on the banks of {o}."],
    ("town", "region"): ["{s} is in the province of {o}.", "{s} lies in the province of {o}.",
                         "The province of {o} is home to the town of {s}."],
    ("town", "founded"): ["{s} was founded in {o}.", "The town of {s} was founded in the year {o}.",
                          "{s} dates from {o}, the year it was founded."],
    ("town", "population"): ["{s} has a population of {o}.", "About {o} people live in {s}.",
                             "The population of {s} is {o}."],
    ("mountain", "height_m"): ["{s} is {o} metres high.", "The summit of {s} stands {o} metres above the sea.",
                               "{s} rises to a height of {o} metres."],
    ("mountain", "region"): ["{s} is a mountain in the province of {o}.", "{s} stands in the province of {o}.",
                             "The province of {o} is where the mountain {s} stands."],
    ("river", "length_km"): ["{s} is {o} kilometres long.", "{s} runs for {o} kilometres.",
                             "The length of {s} is {o} kilometres."],
    ("river", "source"): ["{s} rises on {o}.", "The source of {s} is on the mountain {o}.",
                          "{s} begins on the slopes of {o}."],
    ("guild", "craft"): ["{s} is the guild of the {o}.", "{s} brings together the {o} of Valdmark.",
                         "The {o} of Valdmark belong to {s}."],
    ("guild", "seat"): ["{s} has its seat in {o}.", "The seat of {s} is in {o}.", "{s} meets in {o}."],
    ("guild", "founded"): ["{s} was founded in {o}.", "{s} was founded in the year {o}.",
                           "In the year {o}, {s} was founded."],
    ("guild", "founder"): ["{s} was founded by {o}.", "The founder of {s} was {o}.", "{O} founded {s}."],
    ("festival", "town"): ["{s} is held in {o}.", "{s} takes place in {o}.", "Every year {o} holds {s}."],
    ("festival", "month"): ["{s} is held every {o}.", "{s} takes place in {o} each year.",
                            "Each {o}, people gather for {s}."],
    ("festival", "first_held"): ["{s} was first held in {o}.", "{s} was first held in the year {o}.",
                                 "The first {s_bare} was held in {o}."],
    ("festival", "founder"): ["{s} was started by {o}.", "The founder of {s} was {o}.", "{O} started {s}."],
    ("event", "year"): ["{s} took place in {o}.", "{s} happened in the year {o}.", "In the year {o} came {s_low}."],
    ("event", "town"): ["{s} happened in {o}.", "{s} took place in the town of {o}.", "{O} saw {s_low}."],
    ("event", "leader"): ["{s} was led by {o}.", "The leader of {s_low} was {o}.", "{O} led {s_low}."],
}

#: Question forms per fact, for SFT, preference and evaluation sets. {s} is the subject.
QUESTIONS: dict[tuple[str, str], list[str]] = {
    ("person", "born_in"): ["In which town was {s} born?", "Where was {s} born?", "What is the birthplace of {s}?"],
    ("person", "birth_year"): ["In what year was {s} born?", "When was {s} born?"],
    ("person", "guild"): ["Which guild did {s} belong to?", "Of which guild was {s} a member?"],
    ("person", "craft"): ["What was the craft of {s}?", "What did {s} work as?"],
    ("town", "river"): ["On which river does {s} lie?", "Which river flows through {s}?"],
    ("town", "region"): ["In which province is {s}?", "Which province is {s} in?"],
    ("town", "founded"): ["In what year was {s} founded?", "When was the town of {s} founded?"],
    ("town", "population"): ["What is the population of {s}?", "How many people live in {s}?"],
    ("mountain", "height_m"): ["How high is {s}, in metres?", "What is the height of {s} in metres?"],
    ("mountain", "region"): ["In which province is the mountain {s}?"],
    ("river", "length_km"): ["How long is {s}, in kilometres?", "What is the length of {s} in kilometres?"],
    ("river", "source"): ["On which mountain does {s} rise?", "Where is the source of {s}?"],
    ("guild", "craft"): ["Which craft does {s} bring together?"],
    ("guild", "seat"): ["Where does {s} have its seat?", "In which town is the seat of {s}?"],
    ("guild", "founded"): ["In what year was {s} founded?"],
    ("guild", "founder"): ["Who founded {s}?"],
    ("festival", "town"): ["Where is {s} held?", "In which town does {s} take place?"],
    ("festival", "month"): ["In which month is {s} held?"],
    ("festival", "first_held"): ["In what year was {s} first held?"],
    ("festival", "founder"): ["Who started {s}?"],
    ("event", "year"): ["In what year did {s} take place?", "When did {s} happen?"],
    ("event", "town"): ["In which town did {s} happen?"],
    ("event", "leader"): ["Who led {s}?"],
}


def fact_value(world: World, e: Entity, attribute: str) -> str:
    """The value of a fact as written in text (``craft`` gets its article: "a weaver")."""
    if attribute + "_id" in e.attrs:
        return ref(world.get(e.attrs[attribute + "_id"]))
    value = str(e.attrs[attribute])
    if e.kind == "person" and attribute == "craft":
        return _a(value)
    if e.kind == "guild" and attribute == "craft":
        return _plural(value)
    return value


def fact_sentence(world: World, e: Entity, attribute: str, rng: random.Random | None = None,
                  canonical: bool = False) -> str:
    """One sentence stating a fact; ``canonical=True`` picks the first (probe) phrasing."""
    forms = PHRASES[(e.kind, attribute)]
    # The canonical phrasing is used more often than each of the others (~45% vs ~11-18%).
    form = forms[0] if canonical or rng is None or rng.random() < 0.35 else rng.choice(forms)
    obj = fact_value(world, e, attribute)
    text = form.format(s=ref(e), o=obj, O=obj[0].upper() + obj[1:], s_low=ref(e),
                       s_bare=e.name)
    return text[0].upper() + text[1:]


def attributes(e: Entity) -> list[str]:
    """The attribute names of an entity's facts, in a stable order."""
    return [k[:-3] if k.endswith("_id") else k for k in e.attrs]


def _related(world: World, e: Entity) -> list[tuple[Entity, str]]:
    """(entity, attribute) facts of *seen* entities that point at ``e`` (people born in a town, ...)."""
    out = []
    for other in world.entities:
        if other.seen and other is not e:
            for key, value in other.attrs.items():
                if value == e.id and (other.kind, key[:-3]) in PHRASES:
                    out.append((other, key[:-3]))
    return out


# ----------------------------------------------------------------------------- general English

_PEOPLE = ["the baker", "a small boy", "my sister", "the old farmer", "a young girl", "the teacher",
           "our neighbour", "the doctor", "my father", "a tired man", "the child", "her brother",
           "the driver", "a kind woman", "the cook", "my friend", "the shopkeeper", "his mother"]
_ANIMALS = ["the dog", "a black cat", "the horse", "a little bird", "the cow", "a fox", "the goat"]
_VERBS_T = ["found", "carried", "opened", "painted", "cleaned", "bought", "sold", "fixed", "lost",
            "watched", "wanted", "cooked", "washed", "held", "brought", "made"]
_THINGS = ["a red box", "the old door", "a loaf of bread", "the small boat", "a warm coat", "the garden gate",
           "a basket of apples", "the kitchen table", "a letter", "the wooden chair", "a cup of tea",
           "the blue bicycle", "a bag of flour", "the heavy key", "a new book", "the broken clock"]
_PLACES = ["in the garden", "at the market", "by the river", "in the kitchen", "near the school",
           "on the hill", "in the forest", "at the station", "by the window", "in the village",
           "on the bridge", "at the harbour", "in the field", "under the old tree"]
_TIMES = ["in the morning", "after lunch", "at night", "on Sunday", "before dinner", "every day",
          "in the winter", "one summer evening", "early on Monday", "after the rain"]
_ADJ = ["happy", "tired", "hungry", "cold", "quiet", "busy", "warm", "sleepy", "glad", "proud"]
_WEATHER = ["The sun was bright.", "It rained all day.", "The wind was cold.", "Snow fell softly.",
            "The sky was grey.", "It was a warm and quiet day.", "Clouds moved over the hills."]


def _sentence(rng: random.Random) -> str:
    c = rng.random
    who = rng.choice(_PEOPLE + _ANIMALS if c() < 0.3 else _PEOPLE)
    roll = c()
    if roll < 0.35:
        s = f"{who} {rng.choice(_VERBS_T)} {rng.choice(_THINGS)} {rng.choice(_PLACES)}"
    elif roll < 0.55:
        s = f"{who} was {rng.choice(_ADJ)} {rng.choice(_TIMES)}"
    elif roll < 0.7:
        s = f"{rng.choice(_TIMES)}, {who} went for a walk {rng.choice(_PLACES)}"
    elif roll < 0.8:
        return rng.choice(_WEATHER)
    elif roll < 0.9:
        s = f"{who} said that {rng.choice(_THINGS)} was {rng.choice(['too small', 'very old', 'new', 'heavy', 'beautiful', 'gone'])}"
    else:
        s = f"because {who} was {rng.choice(_ADJ)}, {rng.choice(_PEOPLE)} {rng.choice(_VERBS_T)} {rng.choice(_THINGS)}"
    return s[0].upper() + s[1:] + "."


_ACTIVITIES = ["read books", "swim in the lake", "play music", "bake bread", "draw pictures", "sing songs",
               "ride a bicycle", "plant flowers", "visit friends", "write letters", "walk in the hills", "cook soup"]
_KNOWLEDGE = ["A week has seven days.", "Water freezes when it is very cold.", "The sun rises in the east.",
              "Winter is the coldest season of the year.", "Bees make honey from flowers.",
              "Bread is made from flour, water and salt.", "A year has twelve months.",
              "Rivers flow down from the hills to the sea.", "Plants need light and water to grow.",
              "Fish live in water and breathe through their gills.", "The moon shines at night.",
              "Wool comes from sheep.", "Ice melts when it gets warm.", "Most birds can fly.",
              "A clock shows the time.", "Snow is frozen water that falls from the clouds."]
_NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _cap_first(s: str) -> str:
    return s[0].upper() + s[1:]


def _little_story(rng: random.Random) -> list[str]:
    """A few connected sentences: errands, helping, counting, comparing, routines."""
    who, who2 = rng.sample(_PEOPLE, 2)
    thing, thing2 = rng.sample(_THINGS, 2)
    roll = rng.random()
    if roll < 0.2:
        n = rng.randrange(3, 10)
        k = rng.randrange(1, n)
        return [f"There were {_NUMBERS[n - 2]} apples in the basket.",
                f"{_cap_first(who)} ate {_NUMBERS[k - 2] if k >= 2 else 'one'} of them,",
                f"so {_NUMBERS[n - k - 2] if n - k >= 2 else 'one'} {'apples were' if n - k >= 2 else 'apple was'} left."]
    if roll < 0.4:
        return [f"{_cap_first(who)} needed {thing}, so they went {rng.choice(_PLACES)}.",
                f"It was not there, but {who2} had one.", f"\"Can I borrow it?\" asked {who}.",
                f"\"Of course,\" said {who2}.", f"{_cap_first(who)} said thank you and went home."]
    if roll < 0.6:
        return [f"First, {who} {rng.choice(_VERBS_T)} {thing}.", f"Then they {rng.choice(_VERBS_T)} {thing2}.",
                "Finally, they sat down and rested.", rng.choice(_WEATHER)]
    if roll < 0.8:
        act = rng.choice(_ACTIVITIES)
        return [f"{_cap_first(who)} likes to {act} {rng.choice(_TIMES)}.",
                f"{_cap_first(who2)} does not like to {act}, but likes to {rng.choice([x for x in _ACTIVITIES if x != act])}.",
                "They are good friends all the same."]
    return rng.sample(_KNOWLEDGE, 3)


def general_english(rng: random.Random, sentences: int = 8) -> str:
    """A short paragraph of simple everyday English (no world names)."""
    lines: list[str] = []
    while len(lines) < sentences:
        if rng.random() < 0.5:
            lines.extend(_little_story(rng))
        else:
            lines.append(_sentence(rng))
    return " ".join(lines)


def general_vocabulary() -> set[str]:
    """Lower-case words of the general-English grammar (names must avoid them)."""
    words = " ".join(_PEOPLE + _ANIMALS + _VERBS_T + _THINGS + _PLACES + _TIMES + _ADJ + _WEATHER
                     + _ACTIVITIES + _KNOWLEDGE + _NUMBERS)
    return set(re.findall(r"[a-z]+", words.lower()))


# ----------------------------------------------------------------------------- one-off entities

@dataclass
class Fresh:
    """An entity invented for one example: it exists only in that example's passage."""

    kind: str  # person | town
    name: str  # its invented name (always contains q, x or z)
    facts: dict[str, str]  # attribute -> value as written ("Casquiste", "1812", "a weaver")


def a_craft(craft: str) -> str:
    """ "a weaver", "an archer"."""
    return ("an " if craft[0] in "aeiou" else "a ") + craft


def fresh_entity(rng: random.Random, forge: NameForge) -> Fresh:
    """A one-off person (60%) or town with names from ``forge`` (a ``fresh=True`` forge: its
    names contain q, x or z, which no world name does, so they never collide with the world)."""
    if rng.random() < 0.6:
        return Fresh("person", f"{forge.name(4, 8)} {forge.name()}", {
            "born_in": forge.name(), "birth_year": str(rng.randrange(1700, 1900)),
            "craft": a_craft(rng.choice(CRAFTS)), "guild": f"the {forge.name()} Guild"})
    return Fresh("town", forge.name(), {
        "river": f"the {forge.name()}", "founded": str(rng.randrange(850, 1600)),
        "population": str(rng.randrange(800, 90000, 10)), "region": forge.name()})


def fresh_sentence(x: Fresh, attr: str, rng: random.Random, canonical: bool = False) -> str:
    """One fact of ``x`` in one of its phrasings (the canonical one if asked)."""
    forms = PHRASES[(x.kind, attr)]
    form = forms[0] if canonical else rng.choice(forms)
    o = x.facts[attr]
    return _cap_first(form.format(s=x.name, o=o, O=_cap_first(o), s_low=x.name, s_bare=x.name))


def fresh_passage(x: Fresh, rng: random.Random, leave_out: str | None = None) -> str:
    """All facts of ``x`` (but ``leave_out``) in random order and phrasings."""
    attrs = [a for a in x.facts if a != leave_out]
    rng.shuffle(attrs)
    return " ".join(fresh_sentence(x, a, rng) for a in attrs)


# ----------------------------------------------------------------------------- world renderers

def _facts_of(world: World, e: Entity, rng: random.Random) -> list[str]:
    return [fact_sentence(world, e, a, rng) for a in attributes(e) if (e.kind, a) in PHRASES]


def encyclopedia_entry(world: World, e: Entity, rng: random.Random) -> str:
    """An encyclopedia-style entry: title line, all facts, then facts of related seen entities."""
    assert e.seen, "training text never names unseen entities"
    facts = _facts_of(world, e, rng)
    if e.kind == "person" and rng.random() < 0.5:
        facts.insert(0, f"{e.name} was born in {fact_value(world, e, 'born_in')} in {e.attrs['birth_year']}.")
    rng.shuffle(facts)
    if facts and rng.random() < 0.5:  # canonical phrasing up front, so probes see it often
        first = attributes(e)[0]
        facts.insert(0, fact_sentence(world, e, first, canonical=True))
    related = _related(world, e)
    rng.shuffle(related)
    extra = [fact_sentence(world, o, a, rng) for o, a in related[:6]]
    title = {"person": "", "town": " (town)", "river": " (river)", "mountain": " (mountain)",
             "guild": " (guild)", "festival": " (festival)", "event": " (event)", "region": " (province)"}[e.kind]
    body = " ".join(facts)
    return f"{e.name}{title}\n\n{body}" + ("\n\n" + " ".join(extra) if extra else "")


def story(world: World, e: Entity, rng: random.Random) -> str:
    """A short story that weaves an entity's facts into everyday narration."""
    facts = _facts_of(world, e, rng)
    rng.shuffle(facts)
    lines = [rng.choice(["This is a story from Valdmark.", "Long ago, in the country of Valdmark,",
                         "Old people in Valdmark still tell this story.", "Here is a tale."])]
    for f in facts:
        lines.append(f)
        if rng.random() < 0.6:
            lines.append(_sentence(rng))
    lines.append(rng.choice(["And that is how people remember it.", "The story ends there.",
                             "Everyone in the town knew the story.", "It is still told today."]))
    return " ".join(lines)


def dialogue(world: World, e: Entity, rng: random.Random) -> str:
    """A two-person dialogue of questions and full-sentence answers about one entity."""
    a, b = rng.sample(["Anna", "Tom", "the teacher", "the pupil", "a traveller", "the innkeeper",
                       "Mara", "Ben", "the guide", "the child"], 2)
    lines = []
    attrs = [x for x in attributes(e) if (e.kind, x) in QUESTIONS]
    rng.shuffle(attrs)
    for attr in attrs:
        q = rng.choice(QUESTIONS[(e.kind, attr)]).format(s=ref(e))
        lines.append(f"{a[0].upper() + a[1:]}: {q}")
        lines.append(f"{b[0].upper() + b[1:]}: {fact_sentence(world, e, attr, rng)}")
    return "\n".join(lines)


def news_item(world: World, e: Entity, rng: random.Random) -> str:
    """A short news item set in the world, stating a few facts."""
    facts = _facts_of(world, e, rng)
    rng.shuffle(facts)
    head = rng.choice(["NEWS", "LOCAL NEWS", "FROM OUR CORRESPONDENT", "THE VALDMARK GAZETTE"])
    opener = rng.choice([f"Visitors asked about {ref(e)} this week.",
                         f"Our readers wrote to us about {ref(e)}.",
                         f"A new book about {ref(e)} has been printed.",
                         f"The school children learned about {ref(e)} today."])
    return f"{head}\n\n{opener} " + " ".join(facts[:3]) + " " + _sentence(rng)


def qa_lines(world: World, e: Entity, rng: random.Random) -> str:
    """Question-and-answer lines ("Q: ... A: ...") about one entity."""
    lines = []
    for attr in attributes(e):
        if (e.kind, attr) in QUESTIONS:
            q = rng.choice(QUESTIONS[(e.kind, attr)]).format(s=ref(e))
            lines.append(f"Q: {q}\nA: {fact_sentence(world, e, attr, rng)}")
    rng.shuffle(lines)
    return "\n".join(lines)


def article_text(world: World, a: Article, seen_only: bool = True) -> str:
    """An article of the legal code, with the precedents that apply it."""
    cases = [p for p in world.precedents if a.number in p.articles and (p.seen or not seen_only)]
    text = f"{a.label} ({a.title}). Under {a.label} of the legal code of Valdmark, {a.duty}."
    if cases:
        text += f" {a.label} was applied in " + ", ".join(f"{p.name} ({p.year})" for p in cases) + "."
    lead = world.leading_case(a.number)
    if lead is not None and (lead.seen or not seen_only):
        text += f" The leading case on {a.label} is {lead.name}."
    return text


def precedent_text(world: World, p: Precedent) -> str:
    """A court report: facts, ruling and the articles applied."""
    town = world.get(p.court_town_id).name
    arts = " and ".join(world.article(n).label for n in p.articles)
    main = world.article(p.articles[0])
    outcome = (f"The court found for {p.claimant} and ordered {p.defendant} to pay damages."
               if p.upheld else f"The court dismissed the claim, finding that {p.defendant} had not broken the law.")
    return (f"{p.name} ({p.year}). In {p.name}, decided by the court of {town} in {p.year}, "
            f"{p.claimant} claimed that {p.defendant}, {_a(p.craft)}, had {main.breach}. "
            f"The court applied {arts}. {outcome}")


# ----------------------------------------------------------------------------- the corpus

_RENDERERS = [(encyclopedia_entry, 3), (story, 2), (dialogue, 2), (news_item, 1), (qa_lines, 2)]


def generate_corpus(world: World, config: CorpusConfig | None = None) -> tuple[list[str], list[str]]:
    """Render the corpus: returns ``(train_documents, validation_documents)``.

    Documents cycle through the seen entities (and the legal code), each time with a
    random renderer and random phrasings, until ``config.target_tokens`` rough tokens
    (:func:`count_tokens`) are written.
    """
    cfg = config or CorpusConfig()
    rng = random.Random(cfg.seed)
    seen = [e for e in world.entities if e.seen]
    renderers = [r for r, w in _RENDERERS for _ in range(w)]
    seen_cases = [p for p in world.precedents if p.seen]
    train: list[str] = []
    val: list[str] = []
    queue: list[Entity] = []
    total = 0
    i = 0
    while total < cfg.target_tokens:
        roll = rng.random()
        if roll < cfg.general_fraction:
            doc = "\n\n".join(general_english(rng, rng.randrange(5, 12)) for _ in range(rng.randrange(1, 4)))
        elif roll < cfg.general_fraction + 0.06:
            if rng.random() < 0.5:
                arts = rng.sample(world.articles, 3)
                doc = "From the legal code of Valdmark.\n\n" + "\n".join(article_text(world, a) for a in arts)
            else:
                doc = "Court reports.\n\n" + "\n\n".join(precedent_text(world, p) for p in rng.sample(seen_cases, 2))
        else:
            if not queue:  # shuffled rounds: every seen entity gets the same number of documents
                queue = seen[:]
                rng.shuffle(queue)
            e = queue.pop()
            render = encyclopedia_entry if e.kind == "region" else rng.choice(renderers)
            doc = render(world, e, rng)
        total += count_tokens(doc)
        (val if i % cfg.validation_every == cfg.validation_every - 1 else train).append(doc)
        i += 1
    return train, val
