"""The course's fictional world: the country of Valdmark, its entities and its legal code.

Every text the course trains or evaluates on is rendered from this structured world
(``data/world.json``), so any fact in any text can be traced back and checked. The world
is generated deterministically from a seed by :func:`generate_world`; :mod:`course_utils.data`
writes it to ``data/world.json`` and :func:`course_utils.data.world` loads it back.

Taught in notebook 00 (section "The world of Valdmark"); its split into *seen* entities
(in the pretraining corpus and the SFT set) and *unseen* ones (only in the document
store and the evaluation set) is what notebooks 05, 08 and 10 measure: closed-book vs
LoRA-taught vs retrieved knowledge.

Names are invented by a syllable generator (:class:`NameForge`). No name is a substring
of another (case-insensitive), so a test can look for an unseen entity's name in the
training text without false alarms. World names never contain the letters q, x or z;
the "fresh" entities invented for SFT reading exercises always do, so they can never
be mistaken for a world entity.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "Article",
    "Entity",
    "Fact",
    "NameForge",
    "Precedent",
    "World",
    "WorldConfig",
    "generate_world",
    "world_from_dict",
    "world_name_words",
]

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]

#: The crafts of the guilds (one guild per craft); a person's craft is their guild's.
CRAFTS = ["glassblower", "weaver", "miller", "boatwright", "saltmaker", "potter", "tanner",
          "clockmaker", "bookbinder", "ropemaker", "dyer", "cooper", "smith", "brewer",
          "carpenter", "mason", "baker", "chandler", "fisher", "cartwright", "jeweller",
          "papermaker", "herbalist", "shepherd"]

EVENT_KINDS = ["Accord", "Flood", "Fire", "Charter", "Uprising", "Famine", "Treaty", "Council"]
FESTIVAL_KINDS = ["Fair", "Feast", "Festival", "Lantern Night", "Market"]

#: The legal code's topics: (title, the duty it imposes, a breach of it as a verb phrase).
LEGAL_TOPICS: list[tuple[str, str, str]] = [
    ("False measures", "every trader shall sell by the measures kept at the town hall", "sold goods by a false measure"),
    ("River tolls", "a boat passing a town shall pay the toll posted at its landing", "passed a landing without paying the river toll"),
    ("Guild dues", "a guild member shall pay the yearly dues of the guild", "refused to pay the yearly dues of the guild"),
    ("Apprentices", "a master shall feed, house and teach an apprentice", "sent an apprentice away without food or lodging"),
    ("Inherited workshops", "a workshop passes to the eldest child who practises the craft", "took over a workshop that belonged to an heir"),
    ("Market days", "stalls may open only on the market days fixed by the town", "opened a stall outside the market days"),
    ("Bridge repair", "the owners of a bridge shall keep it safe to cross", "let a bridge fall into dangerous disrepair"),
    ("Water mills", "a mill shall not hold back more water than its share", "held back the water of a mill race"),
    ("Festival stalls", "festival stalls are given out by lot and may not be sold", "sold a festival stall given out by lot"),
    ("Timber felling", "no tree in a common forest may be felled without a permit", "felled trees in a common forest without a permit"),
    ("Mountain pastures", "each family may graze a fixed number of sheep on the high pastures", "grazed more sheep on the high pasture than allowed"),
    ("Boundary stones", "no one may move a boundary stone", "moved a boundary stone between two fields"),
    ("Debts between members", "a debt between guild members shall be repaid within a year", "failed to repay a debt to a fellow guild member"),
    ("Journeymen's wages", "a journeyman shall be paid every seventh day", "withheld the wages of a journeyman"),
    ("Spoiled goods", "no one may sell food that has spoiled", "sold spoiled food at the market"),
    ("Fishing rights", "fishing in a river belongs to the towns along its banks", "fished in waters that belonged to another town"),
    ("Ferry fares", "a ferry shall carry passengers for the posted fare", "charged more than the posted ferry fare"),
    ("Night watch", "each household shall serve its turn on the night watch", "refused to serve a turn on the night watch"),
    ("Fire in workshops", "a workshop with a furnace shall keep sand and water at hand", "kept a furnace without sand or water at hand"),
    ("Road upkeep", "landholders shall keep the road along their land passable", "let the road along a field become impassable"),
    ("Contracts of sale", "a sale agreed before two witnesses binds both sides", "broke a sale agreed before two witnesses"),
    ("Loans of tools", "a borrowed tool shall be returned in the state it was lent", "returned a borrowed tool broken"),
    ("Guild marks", "only members of a guild may stamp its mark on goods", "stamped a guild mark on goods without being a member"),
    ("Public wells", "no one may foul a public well", "fouled a public well"),
    ("Lodging of travellers", "an inn shall not turn away a traveller at night without cause", "turned a traveller away from an inn at night"),
    ("Weights of bread", "a loaf shall weigh what the bakers' table says", "baked loaves lighter than the bakers' table allows"),
    ("Salt trade", "salt may be sold only with the seal of the salt office", "sold salt without the seal of the salt office"),
    ("Dyes in rivers", "dye water shall not be poured into a river above a town", "poured dye water into a river above a town"),
    ("Witnesses", "a witness before a court shall speak the truth", "gave false witness before a court"),
    ("Guild elections", "guild masters are chosen by a vote of all members", "named a guild master without a vote"),
    ("Rents", "a rent may be raised only once a year and with a month's notice", "raised a rent without a month's notice"),
    ("Animals on roads", "the owner of an animal answers for the harm it does on a road", "let an animal cause harm on a road"),
    ("Shared walls", "neither neighbour may weaken a wall they share", "cut into a wall shared with a neighbour"),
    ("Harbour berths", "berths in a harbour are kept in the order boats arrive", "took a harbour berth out of turn"),
    ("Lost property", "found goods shall be brought to the town hall within three days", "kept goods found in the street"),
    ("Orphans' estates", "a guardian shall keep an orphan's estate apart from their own", "mixed an orphan's estate with their own money"),
    ("Signs and notices", "no one may tear down a notice of the town council", "tore down a notice of the town council"),
    ("Quarries", "a quarry shall be fenced where people walk", "left a quarry unfenced beside a path"),
    ("Coins", "no one may clip or shave a coin", "clipped the edges of coins"),
    ("Noise at night", "no hammering or sawing after the evening bell", "hammered in a workshop after the evening bell"),
    ("Care of horses", "a hired horse shall be fed and rested", "worked a hired horse without feeding it"),
    ("Schools", "each town of more than two thousand people shall keep a school", "closed the only school of a large town"),
    ("Flood banks", "those who own land on a flood bank shall keep it whole", "dug through a flood bank"),
    ("Seals of documents", "no one may copy the seal of a court or a guild", "copied the seal of a guild on a letter"),
]

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "r",
           "s", "st", "t", "th", "tr", "v", "w", "sh", "c", "el", "al", "or"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ae", "ia", "ei"]
_CODAS = ["", "", "", "", "n", "r", "l", "s", "th", "m", "nd", "rn", "ll"]
#: Substrings a name may not contain (keeps the invented names polite).
_BLOCKED = ["fuc", "suc", "shit", "cun", "dic", "coc", "ass", "tit", "pis", "cum", "fag", "nig",
            "rap", "butt", "damn", "hell", "kil", "die", "dead", "sex", "porn", "anal", "poo"]
_FRESH_MARKS = ["zo", "xa", "quen", "zel", "vex", "zar", "qui", "oz", "ix", "zen"]


class NameForge:
    """Invents pronounceable names that never collide with each other.

    ``fresh=False`` (the world) never uses q, x or z; ``fresh=True`` (entities invented
    for an SFT or preference example) always does, unless ``marks=False``: then one-off
    names are built from the world's own syllables (pass the world's names in ``avoid``
    so that none is reused). ``avoid`` holds lower-case words a name must not equal (the
    English vocabulary of the templates, or the world's names). ``taken`` holds lower-case
    names of another world: no new name may contain one or be part of one (as if handed out).
    """

    def __init__(self, rng: random.Random, fresh: bool = False, avoid: set[str] | None = None,
                 marks: bool = True, taken: set[str] | None = None):
        self.rng = rng  # the generator this forge draws from
        self.fresh = fresh  # True: names for invented one-off entities (contain q/x/z if marks)
        self.marks = marks  # with fresh=True: insert one of the q/x/z marks (False: world syllables only)
        self.avoid = avoid or set()  # lower-case words that may not be used as names
        self.used: list[str] = sorted(taken or ())  # lower-case names already handed out (or taken elsewhere)
        self._used_set: set[str] = set(self.used)  # the same, for fast exact checks

    def _candidate(self) -> str:
        rng = self.rng
        parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                 for _ in range(rng.choice([2, 2, 3]))]
        if self.fresh and self.marks:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(_FRESH_MARKS))
        return "".join(parts)

    def name(self, min_len: int = 5, max_len: int = 10) -> str:
        """A new capitalised name, not a substring of (nor containing) any earlier one."""
        for _ in range(10_000):
            cand = self._candidate()
            if not (min_len <= len(cand) <= max_len) or cand in self.avoid:
                continue
            if any(ch * 3 in cand for ch in "abcdefghijklmnopqrstuvwxyz") or any(b in cand for b in _BLOCKED):
                continue
            if self.fresh:
                if cand in self._used_set:
                    continue
            elif any(cand in u or u in cand for u in self.used):
                continue
            self.used.append(cand)
            self._used_set.add(cand)
            return cand.capitalize()
        raise RuntimeError("NameForge ran out of names; raise max_len.")  # pragma: no cover


@dataclass
class Entity:
    """One thing in the world: a region, mountain, river, town, guild, person, festival or event."""

    id: str  # stable id, e.g. "town-007"; documents are named after it
    kind: str  # region | mountain | river | town | guild | person | festival | event
    name: str  # the name as written in text, e.g. "Vessary" or "Orin Tallow"
    seen: bool  # True: appears in pretraining and SFT text; False: only in the document store
    attrs: dict[str, Any] = field(default_factory=dict)  # facts; keys ending in _id point to entities
    aliases: list[str] = field(default_factory=list)  # other names (a person's surname)


@dataclass
class Article:
    """A numbered article of the legal code of Valdmark (all articles are seen)."""

    number: int  # 1, 2, ...; written "Article 7"
    title: str  # short topic, e.g. "False measures"
    duty: str  # what the article requires, as a clause
    breach: str  # a typical breach of it, as a verb phrase ("sold goods by a false measure")

    @property
    def id(self) -> str:
        """Document id of the article, e.g. ``"article-07"``."""
        return f"article-{self.number:02d}"

    @property
    def label(self) -> str:
        """How texts cite it: ``"Article 7"``."""
        return f"Article {self.number}"


@dataclass
class Precedent:
    """A court decision applying one or more articles to a case."""

    id: str  # document id, e.g. "precedent-017"
    name: str  # case name "Claimant v. Defendant", e.g. "Tarrow v. Belin"
    year: int  # year of the decision
    court_town_id: str  # the town whose court decided it
    claimant: str  # surname of the party who brought the case
    defendant: str  # surname of the party it was brought against
    craft: str  # the defendant's craft
    articles: list[int]  # numbers of the articles applied; the first is the main one
    upheld: bool  # True: the court found for the claimant
    seen: bool  # True: the case is told in the pretraining corpus


@dataclass
class Fact:
    """One (entity, attribute, value) triple, the unit that questions ask about."""

    entity_id: str  # whose fact it is
    attribute: str  # e.g. "born_in", "birth_year", "river"
    value: str  # the value as written in text ("Vessary", "1812")
    value_id: str | None  # the entity the value names, if any
    seen: bool  # whether the entity is seen


@dataclass
class WorldConfig:
    """How big the world is and which seed draws it."""

    seed: int = 2026  # fixed so that COURSE_SEED does not change the course's data
    regions: int = 6  # provinces of Valdmark (all seen)
    mountains: int = 24  # mountains, each in a region
    rivers: int = 24  # rivers, each rising on a mountain
    towns: int = 70  # towns, each on a river
    guilds: int = 24  # one guild per craft
    persons: int = 220  # people, each born in a town and in a guild
    festivals: int = 30  # festivals, each held in a town
    events: int = 40  # historic events, each in a town and a year
    precedents: int = 110  # court precedents
    unseen_fraction: float = 0.2  # share of each kind (except regions) kept out of training text


@dataclass
class World:
    """The whole world: entities, the legal code and its precedents."""

    config: WorldConfig  # how it was drawn
    entities: list[Entity]  # every entity, in id order
    articles: list[Article]  # the legal code, in number order
    precedents: list[Precedent]  # court decisions, in id order

    def __post_init__(self) -> None:
        self._by_id = {e.id: e for e in self.entities}

    def get(self, entity_id: str) -> Entity:
        """The entity with this id (KeyError names it if missing)."""
        return self._by_id[entity_id]

    def of_kind(self, kind: str, seen: bool | None = None) -> list[Entity]:
        """Entities of one kind, optionally only the seen (True) or unseen (False) ones."""
        return [e for e in self.entities if e.kind == kind and (seen is None or e.seen == seen)]

    def article(self, number: int) -> Article:
        """Article by number."""
        return self.articles[number - 1]

    def leading_case(self, number: int) -> Precedent | None:
        """The earliest precedent whose main article is ``number`` (the one questions cite)."""
        cases = [p for p in self.precedents if p.articles[0] == number]
        return min(cases, key=lambda p: (p.year, p.id)) if cases else None

    def unseen_names(self) -> list[str]:
        """Every name that must never appear in training text (entities, surnames, case parties)."""
        names: list[str] = []
        for e in self.entities:
            if not e.seen:
                names.append(e.name)
                names.extend(e.aliases)
        for p in self.precedents:
            if not p.seen:
                names.extend([p.name, p.claimant, p.defendant])
        return names

    def facts(self, seen: bool | None = None) -> list[Fact]:
        """All facts as triples, in a stable order."""
        out = []
        for e in self.entities:
            if seen is not None and e.seen != seen:
                continue
            for key, value in e.attrs.items():
                if key.endswith("_id"):
                    out.append(Fact(e.id, key[:-3], self.get(value).name, value, e.seen))
                else:
                    out.append(Fact(e.id, key, str(value), None, e.seen))
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (what ``data/world.json`` holds)."""
        return {
            "config": asdict(self.config),
            "entities": [asdict(e) for e in self.entities],
            "articles": [asdict(a) for a in self.articles],
            "precedents": [asdict(p) for p in self.precedents],
        }


def world_from_dict(data: dict[str, Any]) -> World:
    """Rebuild a :class:`World` from :meth:`World.to_dict` output."""
    return World(
        config=WorldConfig(**data["config"]),
        entities=[Entity(**e) for e in data["entities"]],
        articles=[Article(**a) for a in data["articles"]],
        precedents=[Precedent(**p) for p in data["precedents"]],
    )


def world_name_words(world: World) -> set[str]:
    """Every lower-case word of every name in ``world`` (seen and unseen entities, aliases,
    case parties): names invented outside the world must avoid them."""
    words: set[str] = set()
    names = [e.name for e in world.entities] + [a for e in world.entities for a in e.aliases]
    names += [n for p in world.precedents for n in (p.name, p.claimant, p.defendant)]
    for name in names:
        words.update(w.lower() for w in name.replace(".", " ").split())
    return words


def generate_world(config: WorldConfig | None = None, avoid: set[str] | None = None,
                   taken: set[str] | None = None) -> World:
    """Draw a world from ``config.seed``: the same seed always gives the same world.

    Seen entities only ever point at seen entities (a seen person is born in a seen
    town), so that rendering a seen entity never leaks an unseen name. ``taken``: lower-case
    names of another world that no name of this one may contain or be part of (a second,
    made-up country that shares no name with the course's world).
    """
    cfg = config or WorldConfig()
    rng = random.Random(cfg.seed)
    forge = NameForge(rng, avoid=avoid, taken=taken)
    entities: list[Entity] = []
    pools: dict[str, list[Entity]] = {}

    def make(kind: str, count: int, namer) -> list[Entity]:
        n_unseen = 0 if kind == "region" else max(1, round(count * cfg.unseen_fraction))
        unseen_idx = set(rng.sample(range(count), n_unseen))
        items = [Entity(f"{kind}-{i:03d}", kind, namer(), i not in unseen_idx) for i in range(count)]
        entities.extend(items)
        pools[kind] = items
        return items

    def pick(kind: str, for_seen: bool) -> Entity:
        options = [e for e in pools[kind] if e.seen or not for_seen]
        return rng.choice(options)

    make("region", cfg.regions, forge.name)
    for m in make("mountain", cfg.mountains, forge.name):
        m.attrs = {"height_m": rng.randrange(1200, 4800, 10), "region_id": pick("region", m.seen).id}
    for r in make("river", cfg.rivers, forge.name):
        r.attrs = {"length_km": rng.randrange(40, 900), "source_id": pick("mountain", r.seen).id}
    for t in make("town", cfg.towns, forge.name):
        t.attrs = {"river_id": pick("river", t.seen).id, "region_id": pick("region", t.seen).id,
                   "founded": rng.randrange(850, 1500), "population": rng.randrange(800, 90000, 10)}
    crafts = rng.sample(CRAFTS, cfg.guilds) if cfg.guilds <= len(CRAFTS) else CRAFTS
    guilds = make("guild", len(crafts), forge.name)
    for g, craft in zip(guilds, crafts):
        g.aliases, g.name = [g.name], f"{g.name} Guild"
        g.attrs = {"craft": craft, "seat_id": pick("town", g.seen).id, "founded": rng.randrange(1300, 1700)}
    first_names = [forge.name(4, 7) for _ in range(60)]
    for p in make("person", cfg.persons, forge.name):
        surname = p.name
        p.name = f"{rng.choice(first_names)} {surname}"
        p.aliases = [surname]
        guild = pick("guild", p.seen)
        p.attrs = {"born_in_id": pick("town", p.seen).id, "birth_year": rng.randrange(1700, 1880),
                   "guild_id": guild.id, "craft": guild.attrs["craft"]}
    for g in guilds:  # founders: a person of the guild's own seen-ness (or seen)
        g.attrs["founder_id"] = pick("person", g.seen).id
    for f in make("festival", cfg.festivals, forge.name):
        f.aliases, f.name = [f.name], f"{f.name} {rng.choice(FESTIVAL_KINDS)}"
        f.attrs = {"town_id": pick("town", f.seen).id, "month": rng.choice(MONTHS),
                   "first_held": rng.randrange(1400, 1890), "founder_id": pick("person", f.seen).id}
    for ev in make("event", cfg.events, forge.name):
        ev.aliases, ev.name = [ev.name], f"{rng.choice(EVENT_KINDS)} of {ev.name}"
        ev.attrs = {"year": rng.randrange(1500, 1900), "town_id": pick("town", ev.seen).id,
                    "leader_id": pick("person", ev.seen).id}

    articles = [Article(i + 1, t, d, b) for i, (t, d, b) in enumerate(LEGAL_TOPICS)]
    precedents = []
    n_unseen = round(cfg.precedents * cfg.unseen_fraction)
    unseen_idx = set(rng.sample(range(cfg.precedents), n_unseen))
    for i in range(cfg.precedents):
        seen = i not in unseen_idx
        main = articles[i % len(articles)].number if i < len(articles) else rng.randrange(1, len(articles) + 1)
        arts = [main]
        if rng.random() < 0.4:
            arts.append(rng.choice([a.number for a in articles if a.number != main]))
        claimant, defendant = forge.name(), forge.name()
        precedents.append(Precedent(
            id=f"precedent-{i:03d}", name=f"{claimant} v. {defendant}", year=rng.randrange(1600, 1900),
            court_town_id=pick("town", seen).id, claimant=claimant, defendant=defendant,
            craft=rng.choice(CRAFTS), articles=arts, upheld=rng.random() < 0.7, seen=seen))
    return World(cfg, entities, articles, precedents)
