"""Synthetic interaction data with known latent structure, for the demo and the unit tests.

The real datasets are licence-restricted and cannot ship with the project, yet models must be
trained and evaluated on something that behaves like real data. A uniform random generator
would be useless for that: every model would score at chance and bugs would hide. So the data
here is generated from an explicit latent model, and that model is returned with the data
(``Dataset.meta["truth"]``, a :class:`GroundTruth`) so tests can check that the structure is
really there and that models recover it.

Latent model
------------
Catalog
    ``n_topics`` topics (jazz, hiking, skincare, coffee, ...). ``n_creators`` creators (artists,
    brands), each with a *home topic*; catalog sizes per creator are Zipf-like, and a creator's
    items are mostly in its home topic (``creator_off_topic``). Item popularity is long-tailed
    (Zipf over a random item rank, times a per-creator quality). A fraction of items is released
    during the period (``new_item_fraction``) and is never consumed before its release day, so a
    temporal split contains genuinely cold items.
Item text
    Built from topic vocabularies of real English words ("Crimson bebop vinyl by The Velvet Owls,
    saxophone and trumpet"), so a sentence encoder such as all-MiniLM-L6-v2 places same-topic
    items close together. ``attributes`` are ``["topic:<name>", "price_band:<1..5>"]``.
Users
    A stable long-term taste: a distribution over topics concentrated on 1-3 topics plus a small
    uniform background. Activity is log-normal (a few heavy users, many light ones); users join
    at different days during the first part of the period.
Sessions and short-term intent
    A user's events are grouped into sessions placed at random days (with a diurnal hour profile);
    events inside a session are minutes apart. Each event has an *intent topic* that persists: it
    jumps with a small probability inside a session, and at a session boundary with probability
    ``1 - exp(-gap / intent_days)``, so intent survives across sessions that are close in time and
    is usually fresh after a long break. A jump draws from the long-term taste, or, with
    probability ``explore``, from a uniformly random topic.
Item choice
    Within the intent topic, an item is drawn by popularity; or, with probability
    ``creator_affinity``, the user returns to a creator they already consumed in that topic and
    draws from that creator's items in the topic (by square-root popularity: fans explore the
    catalog). That makes creator catalogs predictive for new items.
Grocery-like users (``grocery_user_fraction``)
    They additionally buy a few *staple* items from the consumable topics, each with its own
    repurchase cadence (``staple_cadences``, e.g. 7/14/30 days) and multiplicative jitter, with
    occasional skipped purchases. On each shopping day they may also pick up impulse items.

Identifiers and the basket/session choice
-----------------------------------------
``user_id`` is ``u00042``, ``item_id`` ``i0042``, ``creator_id`` ``c042``.

* Regular (taste-driven) events: ``session_id`` is ``<user_id>:s<k>`` (k-th session of the
  user) and ``basket_id`` is the same string: a browsing/listening session is its own "basket".
  This keeps the column free of nulls so next-basket code runs on every user.
* Shopping-trip events of grocery users (staples and impulse items): all purchases of a user on
  one calendar day (UTC) form one basket, ``<user_id>:d<day>`` (day index from ``start``); the
  trip is also its session, so ``session_id`` equals ``basket_id`` for these events.

``value`` is the implicit-feedback 1.0. Timestamps are UTC with microsecond resolution;
``time_kind`` is ``"unix"``.

Everything is deterministic in ``SyntheticConfig.seed``: each stage draws from its own child
of one ``numpy.random.SeedSequence``, so the same config gives byte-identical frames.
The whole pipeline is vectorised with numpy (no per-event Python loops), so the default
10,000 users (~0.6M events) build in well under a second on 2 cores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from feature_store.sources.schema import Dataset, validate_interactions, validate_items


@dataclass(frozen=True)
class Topic:
    """A topic: its name, topical words for item text, product nouns, and whether it is bought repeatedly."""

    name: str
    words: tuple[str, ...]
    products: tuple[str, ...]
    consumable: bool = False


# fmt: off
# Ordered so that the default 12 topics mix media, durable goods and consumables (grocery staples
# come from the consumable ones). Words are distinct across topics so text embeddings separate them.
TOPICS: tuple[Topic, ...] = (
    Topic(
        "jazz",
        ("jazz", "saxophone", "bebop", "trumpet", "swing", "quartet", "improvisation", "trombone", "bandleader",
         "blues"),
        ("vinyl", "album", "record", "live session"),
    ),
    Topic(
        "hiking",
        ("hiking", "tent", "trail", "backpack", "compass", "camping", "summit", "lantern", "sleeping bag",
         "trekking poles"),
        ("kit", "pack", "gear", "set"),
    ),
    Topic(
        "skincare",
        ("shampoo", "serum", "moisturizer", "conditioner", "lotion", "cleanser", "sunscreen", "toner",
         "face mask", "body wash"),
        ("bottle", "tube", "jar", "refill"),
        consumable=True,
    ),
    Topic(
        "coffee",
        ("coffee", "espresso", "latte", "green tea", "coffee beans", "dark roast", "arabica", "matcha",
         "cold brew", "chai"),
        ("bag", "pack", "tin", "box"),
        consumable=True,
    ),
    Topic(
        "rock",
        ("rock", "electric guitar", "riff", "drummer", "amplifier", "grunge", "punk", "heavy metal", "distortion",
         "power ballad"),
        ("album", "single", "EP", "live recording"),
    ),
    Topic(
        "kitchen",
        ("skillet", "saucepan", "chef knife", "spatula", "whisk", "cutting board", "dutch oven", "baking tray",
         "ladle", "cookware"),
        ("set", "piece", "bundle", "collection"),
    ),
    Topic(
        "pantry",
        ("pasta", "rice", "cereal", "crackers", "potato chips", "granola", "cookies", "popcorn", "oatmeal",
         "flour"),
        ("pack", "box", "bag", "family size"),
        consumable=True,
    ),
    Topic(
        "classical",
        ("symphony", "orchestra", "violin", "sonata", "concerto", "piano", "cello", "baroque", "opera",
         "conductor"),
        ("recording", "album", "box set", "edition"),
    ),
    Topic(
        "gaming",
        ("video game", "console", "controller", "joystick", "arcade", "multiplayer", "dungeon", "gaming headset",
         "pixel art", "speedrun"),
        ("edition", "bundle", "pack", "release"),
    ),
    Topic(
        "pets",
        ("dog food", "cat litter", "kibble", "leash", "puppy", "pet treats", "aquarium", "hamster", "collar",
         "chew toy"),
        ("bag", "pack", "box", "refill"),
        consumable=True,
    ),
    Topic(
        "mystery",
        ("detective", "mystery", "thriller", "murder", "suspect", "clue", "crime", "inspector", "alibi",
         "whodunit"),
        ("novel", "paperback", "hardcover", "audiobook"),
    ),
    Topic(
        "dairy",
        ("milk", "cheese", "yogurt", "butter", "eggs", "cream", "cheddar", "mozzarella", "kefir", "cottage cheese"),
        ("carton", "pack", "tub", "bottle"),
        consumable=True,
    ),
    Topic(
        "hiphop",
        ("hip hop", "rap", "beats", "rhymes", "turntable", "mixtape", "freestyle", "bassline", "lyricist", "DJ"),
        ("mixtape", "album", "single", "EP"),
    ),
    Topic(
        "fitness",
        ("dumbbell", "yoga mat", "kettlebell", "treadmill", "resistance band", "workout", "stretching", "cardio",
         "gym", "barbell"),
        ("set", "kit", "pair", "bundle"),
    ),
    Topic(
        "gardening",
        ("seeds", "compost", "shovel", "tulip bulbs", "greenhouse", "fertilizer", "pruning shears", "garden hose",
         "potting soil", "seedlings"),
        ("pack", "kit", "bag", "set"),
    ),
    Topic(
        "baby",
        ("diapers", "baby wipes", "stroller", "pacifier", "onesie", "infant formula", "rattle", "bib", "crib",
         "toddler"),
        ("pack", "box", "set", "bundle"),
        consumable=True,
    ),
)

# Topic-neutral words for item adjectives and creator names, so they add noise but no topic signal.
_ADJECTIVES = (
    "Crimson", "Golden", "Silver", "Midnight", "Amber", "Velvet", "Copper", "Ivory", "Cobalt", "Scarlet",
    "Emerald", "Misty", "Sunny", "Quiet", "Bright", "Classic", "Modern", "Vintage", "Bold", "Gentle",
    "Wild", "Royal", "Little", "Grand", "Lucky", "Northern", "Southern", "Urban", "Rustic", "Electric",
)
_CREATOR_FIRST = (
    "Velvet", "Copper", "Silver", "Northern", "Lucky", "Hidden", "Golden", "Wandering", "Quiet", "Blue",
    "Iron", "Crystal", "Paper", "Morning", "Rolling", "Lonely", "Happy", "Brave", "Red", "Green",
    "Ancient", "Clever", "Humble", "Noble", "Swift", "Sleepy", "Hollow", "Painted", "Broken", "Bright",
)
_CREATOR_SECOND = (
    "Owls", "Foxes", "Harbor", "Pines", "Lanterns", "Rivers", "Sparrows", "Wolves", "Meadow", "Stones",
    "Bears", "Ravens", "Orchard", "Valley", "Comets", "Tigers", "Bridges", "Islands", "Anchors", "Maples",
    "Falcons", "Otters", "Beacons", "Hills", "Badgers", "Willows", "Herons", "Canyons", "Lions", "Oaks",
)

# Relative activity by UTC hour: low at night, peaks in the evening.
_DIURNAL = np.array(
    [2, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 6, 7, 6, 6, 6, 7, 8, 10, 12, 12, 10, 7, 4], dtype=np.float64
)
_SHOPPING_HOURS = np.array(
    [0, 0, 0, 0, 0, 0, 0, 1, 3, 5, 6, 6, 6, 5, 5, 5, 6, 7, 8, 7, 5, 3, 1, 0], dtype=np.float64
)
# fmt: on

SOURCE_REGULAR = 0
SOURCE_STAPLE = 1
SOURCE_IMPULSE = 2
_DAY_US = 86_400_000_000


@dataclass
class SyntheticConfig:
    """Knobs of the generator; the defaults give a demo-sized dataset (~10k users, ~0.6M events)."""

    n_users: int = 10_000
    n_items: int = 2_000
    n_creators: int = 200
    n_topics: int = 12
    days: int = 365
    start: str = "2024-01-01"  # UTC midnight of day 0
    seed: int = 0

    # Users
    mean_events_per_user: float = 40.0  # regular (taste-driven) events; grocery trips come on top
    activity_sigma: float = 1.0  # log-normal spread of per-user activity
    min_events_per_user: int = 3
    join_window: float = 0.5  # users join uniformly in the first join_window * days
    taste_core_topics: tuple[float, ...] = (0.35, 0.40, 0.25)  # P(taste concentrates on 1, 2, 3 topics)
    taste_background: float = 0.05  # mass spread uniformly over all topics

    # Sessions and short-term intent
    mean_session_length: float = 5.0  # events per session (geometric)
    mean_event_gap_seconds: float = 120.0  # between events of one session
    intent_days: float = 2.0  # intent survives a gap of g days with probability exp(-g / intent_days)
    in_session_jump: float = 0.05  # per-event probability that intent changes inside a session
    explore: float = 0.1  # an intent jump goes to a uniformly random topic instead of the taste

    # Items
    catalog_zipf: float = 0.7  # creator catalog sizes ~ rank^-catalog_zipf
    creator_off_topic: float = 0.1  # share of a creator's items outside its home topic
    popularity_exponent: float = 0.8  # item popularity ~ rank^-popularity_exponent
    creator_affinity: float = 0.4  # P(return to an already-consumed creator of the intent topic)
    new_item_fraction: float = 0.25  # items released during the period rather than before it

    # Grocery-like users
    grocery_user_fraction: float = 0.2
    staples_per_user: tuple[int, int] = (2, 6)  # inclusive range
    staple_cadences: tuple[int, ...] = (7, 14, 30)  # days
    cadence_jitter: float = 0.12  # log-normal sigma of each inter-purchase gap
    staple_skip: float = 0.05  # probability a due purchase is skipped (the gap doubles)
    impulse_per_trip: float = 0.4  # Poisson mean of non-staple consumables added to a trip

    def __post_init__(self) -> None:
        """Fail early on configs that would silently produce degenerate data."""
        if not 2 <= self.n_topics <= len(TOPICS):
            raise ValueError(f"n_topics must be in [2, {len(TOPICS)}], got {self.n_topics}")
        if self.n_users < 1 or self.days < 1:
            raise ValueError("n_users and days must be positive")
        if self.n_creators < self.n_topics:
            raise ValueError(f"need at least one creator per topic: n_creators={self.n_creators} < {self.n_topics}")
        if self.n_items < self.n_creators:
            raise ValueError(f"every creator needs an item: n_items={self.n_items} < n_creators={self.n_creators}")
        for name in (
            "join_window",
            "taste_background",
            "in_session_jump",
            "explore",
            "creator_off_topic",
            "creator_affinity",
            "new_item_fraction",
            "grocery_user_fraction",
            "staple_skip",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability, got {value}")
        if len(self.taste_core_topics) < 1 or abs(sum(self.taste_core_topics) - 1.0) > 1e-9:
            raise ValueError("taste_core_topics must be probabilities summing to 1")
        lo, hi = self.staples_per_user
        if not 1 <= lo <= hi:
            raise ValueError(f"staples_per_user must be 1 <= lo <= hi, got {self.staples_per_user}")
        if not self.staple_cadences or min(self.staple_cadences) < 1:
            raise ValueError("staple_cadences must be positive day counts")
        if self.mean_session_length < 1 or self.mean_events_per_user <= 0:
            raise ValueError("mean_session_length must be >= 1 and mean_events_per_user > 0")


@dataclass
class GroundTruth:
    """The latent structure behind a generated dataset, for tests, docs and model sanity checks.

    Arrays indexed by user are aligned with ``user_ids``, by item with ``item_ids``, by creator
    with ``creator_ids``; ``event_*`` arrays are aligned with the rows of ``Dataset.interactions``.
    Topic indices refer to ``topics``.
    """

    topics: tuple[str, ...]
    user_ids: np.ndarray
    user_taste: np.ndarray  # (n_users, n_topics), rows sum to 1
    user_is_grocery: np.ndarray
    user_join_day: np.ndarray
    item_ids: np.ndarray
    item_topic: np.ndarray
    item_creator: np.ndarray  # index into creator_ids
    item_popularity: np.ndarray  # sums to 1
    item_release_day: np.ndarray  # 0.0 for the back catalog
    creator_ids: np.ndarray
    creator_names: np.ndarray
    creator_home_topic: np.ndarray
    staples: pd.DataFrame  # user_id, item_id, cadence_days, first_day
    event_intent: np.ndarray  # intent topic of regular events, -1 for shopping-trip events
    event_source: np.ndarray  # SOURCE_REGULAR / SOURCE_STAPLE / SOURCE_IMPULSE

    def item_topic_map(self) -> pd.Series:
        """Topic index per item_id, for joining onto interactions."""
        return pd.Series(self.item_topic, index=pd.Index(self.item_ids, name="item_id"), name="topic")


# --------------------------------------------------------------------------------------------------
# helpers


class _GroupSampler:
    """Draws items by weight within a group (a topic, or a creator x topic cell), vectorised.

    Items are sorted by group and their weights cumulated once; a draw for group g is one uniform
    number scaled into g's slice of the cumulative array and a ``searchsorted``.
    """

    def __init__(self, group_of_item: np.ndarray, weight: np.ndarray, n_groups: int) -> None:
        self.order = np.argsort(group_of_item, kind="stable")
        self.cum = np.concatenate([[0.0], np.cumsum(weight[self.order])])
        counts = np.bincount(group_of_item, minlength=n_groups)
        self.end = np.cumsum(counts)
        self.start = self.end - counts

    def sample(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        start, end = self.start[groups], self.end[groups]
        lo, hi = self.cum[start], self.cum[end]
        u = lo + rng.random(groups.size) * (hi - lo)
        pos = np.searchsorted(self.cum, u, side="right") - 1
        return self.order[np.clip(pos, start, end - 1)]


def _sample_released(
    sampler: _GroupSampler,
    groups: np.ndarray,
    t_day: np.ndarray,
    release_day: np.ndarray,
    rng: np.random.Generator,
    rounds: int = 30,
) -> np.ndarray:
    """Weighted draws restricted to items already released at each event's time (rejection sampling).

    Returns -1 where every round drew an unreleased item; callers supply a fallback.
    """
    out = np.full(groups.size, -1, dtype=np.int64)
    todo = np.arange(groups.size)
    for _ in range(rounds):
        if todo.size == 0:
            break
        cand = sampler.sample(groups[todo], rng)
        ok = release_day[cand] <= t_day[todo]
        out[todo[ok]] = cand[ok]
        todo = todo[~ok]
    return out


def _sample_rows(cum_probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of a cumulative-probability matrix."""
    u = rng.random(cum_probs.shape[0]) * cum_probs[:, -1]
    return np.minimum((cum_probs <= u[:, None]).sum(axis=1), cum_probs.shape[1] - 1)


def _segment_starts(group: np.ndarray) -> np.ndarray:
    """Boolean mask of positions where a sorted group array changes value."""
    first = np.ones(group.size, dtype=bool)
    first[1:] = group[1:] != group[:-1]
    return first


def _ids(prefix: str, n: int) -> np.ndarray:
    """Zero-padded string ids, so lexical order equals numeric order."""
    width = max(len(str(n - 1)), 3)
    return np.array([f"{prefix}{i:0{width}d}" for i in range(n)], dtype=object)


# --------------------------------------------------------------------------------------------------
# stages


@dataclass
class _Catalog:
    topic: np.ndarray
    creator: np.ndarray
    popularity: np.ndarray
    release_day: np.ndarray
    price_band: np.ndarray
    creator_home: np.ndarray
    creator_names: np.ndarray
    topic_anchor: np.ndarray  # per topic, an item released on day 0 (fallback for rejection sampling)


def _make_catalog(cfg: SyntheticConfig, rng: np.random.Generator) -> _Catalog:
    """Creators with home topics and Zipf catalogs; items with topic, popularity, release day, price."""
    n_t, n_c, n_i = cfg.n_topics, cfg.n_creators, cfg.n_items
    # Balanced home topics, so every topic has creators.
    creator_home = rng.permutation(np.arange(n_c) % n_t)
    # Zipf-like catalog sizes over a random creator rank; everyone gets at least one item.
    size_w = (rng.permutation(n_c) + 1.0) ** -cfg.catalog_zipf
    sizes = 1 + rng.multinomial(n_i - n_c, size_w / size_w.sum())
    creator = np.repeat(np.arange(n_c), sizes)
    topic = creator_home[creator].copy()
    off = rng.random(n_i) < cfg.creator_off_topic
    off[np.cumsum(sizes) - sizes] = False  # a creator's first item stays home, so no topic is empty
    topic[off] = (topic[off] + rng.integers(1, n_t, size=int(off.sum()))) % n_t
    # Shuffle so that item ids say nothing about the creator (ids are consecutive per creator otherwise).
    shuffle = rng.permutation(n_i)
    creator, topic = creator[shuffle], topic[shuffle]
    quality = rng.lognormal(0.0, 0.5, size=n_c)
    popularity = (rng.permutation(n_i) + 1.0) ** -cfg.popularity_exponent * quality[creator]
    popularity /= popularity.sum()
    release = np.where(rng.random(n_i) < cfg.new_item_fraction, rng.uniform(0, cfg.days, size=n_i), 0.0)
    # The most popular item of each topic is back catalog: a guaranteed-available fallback.
    by_topic = np.lexsort((-popularity, topic))
    anchor = by_topic[_segment_starts(topic[by_topic])]
    release[anchor] = 0.0
    topic_anchor = np.empty(n_t, dtype=np.int64)
    topic_anchor[topic[anchor]] = anchor
    price_level = rng.integers(1, 6, size=n_t)
    price_band = np.clip(price_level[topic] + rng.integers(-1, 2, size=n_i), 1, 5)
    n_names = len(_CREATOR_FIRST) * len(_CREATOR_SECOND)
    picks = rng.permutation(max(n_names, n_c))[:n_c]
    names = np.array(
        [
            f"The {_CREATOR_FIRST[(p % n_names) // len(_CREATOR_SECOND)]} {_CREATOR_SECOND[p % len(_CREATOR_SECOND)]}"
            + (f" {p // n_names + 1}" if p >= n_names else "")
            for p in picks
        ],
        dtype=object,
    )
    return _Catalog(topic, creator, popularity, release, price_band, creator_home, names, topic_anchor)


def _item_texts(cfg: SyntheticConfig, cat: _Catalog, rng: np.random.Generator) -> list[str]:
    """Item titles from topic vocabularies: the topic words carry the semantic signal."""
    n_i = cfg.n_items
    adj = rng.integers(0, len(_ADJECTIVES), size=n_i)
    n_words = min(len(t.words) for t in TOPICS)
    # Three distinct topic words per item: the first three of a random permutation.
    words = np.argsort(rng.random((n_i, n_words)), axis=1)[:, :3]
    prod = rng.integers(0, 1 << 30, size=n_i)
    texts = []
    for i in range(n_i):
        tp = TOPICS[cat.topic[i]]
        w = words[i]
        texts.append(
            f"{_ADJECTIVES[adj[i]]} {tp.words[w[0]]} {tp.products[prod[i] % len(tp.products)]}"
            f" by {cat.creator_names[cat.creator[i]]}, {tp.words[w[1]]} and {tp.words[w[2]]}"
        )
    return texts


@dataclass
class _Users:
    taste: np.ndarray
    n_events: np.ndarray
    join_day: np.ndarray
    grocery: np.ndarray


def _make_users(cfg: SyntheticConfig, rng: np.random.Generator) -> _Users:
    """Long-term taste (concentrated Dirichlet), activity level, join day and grocery flag per user."""
    n_u, n_t = cfg.n_users, cfg.n_topics
    k = rng.choice(np.arange(1, len(cfg.taste_core_topics) + 1), size=n_u, p=cfg.taste_core_topics)
    k = np.minimum(k, n_t)
    rank = np.argsort(np.argsort(rng.random((n_u, n_t)), axis=1), axis=1)  # random rank of each topic
    core = rng.gamma(1.0, size=(n_u, n_t)) * (rank < k[:, None])  # Dirichlet(1) over the k core topics
    core /= core.sum(axis=1, keepdims=True)
    taste = (1.0 - cfg.taste_background) * core + cfg.taste_background / n_t
    mu = np.log(cfg.mean_events_per_user) - cfg.activity_sigma**2 / 2  # keeps the mean at mean_events_per_user
    n_events = np.maximum(np.rint(rng.lognormal(mu, cfg.activity_sigma, size=n_u)), cfg.min_events_per_user)
    join_day = rng.uniform(0.0, cfg.join_window * cfg.days, size=n_u)
    grocery = rng.random(n_u) < cfg.grocery_user_fraction
    return _Users(taste, n_events.astype(np.int64), join_day, grocery)


@dataclass
class _Events:
    user: np.ndarray
    item: np.ndarray
    t_day: np.ndarray  # days since start, float
    label: np.ndarray  # index into the session/basket label table
    intent: np.ndarray
    source: np.ndarray


def _make_regular_events(
    cfg: SyntheticConfig, users: _Users, cat: _Catalog, rng: np.random.Generator
) -> tuple[_Events, np.ndarray, np.ndarray]:
    """Taste- and intent-driven events; returns them with each session's user and within-user ordinal."""
    n_t = cfg.n_topics
    counts = users.n_events
    n = int(counts.sum())
    user = np.repeat(np.arange(cfg.n_users), counts)
    user_first = np.cumsum(counts) - counts

    # Sessions: geometric lengths, cut per user.
    new_sess = rng.random(n) < 1.0 / cfg.mean_session_length
    new_sess[user_first] = True
    sess = np.cumsum(new_sess) - 1
    sess_first = np.flatnonzero(new_sess)
    sess_user = user[sess_first]
    n_sess = sess_first.size
    join = users.join_day[sess_user]
    day = np.floor(join + rng.random(n_sess) * (cfg.days - join))
    hour = rng.choice(24, size=n_sess, p=_DIURNAL / _DIURNAL.sum())
    start = day + (hour + rng.random(n_sess)) / 24.0
    start = start[np.lexsort((start, sess_user))]  # sessions are contiguous per user: sort within user
    gap = rng.exponential(cfg.mean_event_gap_seconds, size=n)
    gap[new_sess] = 0.0
    csum = np.cumsum(gap)
    offset_days = (csum - csum[sess_first][sess]) / 86_400.0
    t_day = np.minimum(start[sess] + offset_days, cfg.days - 1e-6)
    user_sess_first = np.flatnonzero(_segment_starts(sess_user))
    sess_ordinal = np.arange(n_sess) - np.repeat(user_sess_first, np.diff(np.append(user_sess_first, n_sess)))

    # Short-term intent: jumps at session boundaries (likelier after long gaps) and rarely inside.
    sess_end = t_day[np.append(sess_first[1:] - 1, n - 1)]
    idle = np.full(n_sess, np.inf)
    same_user = sess_user[1:] == sess_user[:-1]
    idle[1:][same_user] = start[1:][same_user] - sess_end[:-1][same_user]
    p_jump = np.where(new_sess, 1.0 - np.exp(-idle[sess] / cfg.intent_days), cfg.in_session_jump)
    jump = rng.random(n) < p_jump
    jump[user_first] = True
    target = _sample_rows(np.cumsum(users.taste, axis=1)[user], rng)
    explore = rng.random(n) < cfg.explore
    target[explore] = rng.integers(0, n_t, size=int(explore.sum()))
    last_jump = np.maximum.accumulate(np.where(jump, np.arange(n), 0))
    intent = target[last_jump]

    # Creator affinity: some events copy the creator of an earlier event of the same user and topic.
    key = user * n_t + intent
    order = np.argsort(key, kind="stable")  # chronological within each (user, topic) group
    key_sorted = key[order]
    grp_first = np.flatnonzero(_segment_starts(key_sorted))
    grp_len = np.diff(np.append(grp_first, n))
    rank = np.arange(n) - np.repeat(grp_first, grp_len)
    follow = (rank > 0) & (rng.random(n) < cfg.creator_affinity)
    earlier = np.arange(n) - 1 - np.floor(rng.random(n) * rank).astype(np.int64)
    parent = np.arange(n)
    parent[order[follow]] = order[earlier[follow]]
    root = parent
    while True:  # pointer doubling: resolves chains of copies to their original event
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt

    item = np.full(n, -1, dtype=np.int64)
    base = root == np.arange(n)
    topic_sampler = _GroupSampler(cat.topic, cat.popularity, n_t)
    drawn = _sample_released(topic_sampler, intent[base], t_day[base], cat.release_day, rng)
    item[base] = np.where(drawn >= 0, drawn, cat.topic_anchor[intent[base]])
    fol = np.flatnonzero(~base)
    if fol.size:
        # Flattened popularity: a fan explores the creator's catalog, not just its hit.
        cell_sampler = _GroupSampler(cat.creator * n_t + cat.topic, np.sqrt(cat.popularity), cfg.n_creators * n_t)
        creator = cat.creator[item[root[fol]]]
        drawn = _sample_released(cell_sampler, creator * n_t + intent[fol], t_day[fol], cat.release_day, rng)
        item[fol] = np.where(drawn >= 0, drawn, item[root[fol]])  # the root item is released by now

    events = _Events(user, item, t_day, sess, intent, np.full(n, SOURCE_REGULAR, dtype=np.int8))
    return events, sess_user, sess_ordinal


def _make_grocery_events(
    cfg: SyntheticConfig, users: _Users, cat: _Catalog, rng: np.random.Generator
) -> tuple[_Events, np.ndarray, np.ndarray, pd.DataFrame]:
    """Shopping trips of grocery-like users: staples on their cadences plus impulse buys.

    Returns the events (label = trip index), each trip's user and day, and the staple table
    (user index, item index, cadence, first day).
    """
    n_t = cfg.n_topics
    g_users = np.flatnonzero(users.grocery)
    consumable = np.array([TOPICS[t].consumable for t in range(n_t)])
    if not consumable.any():  # too few topics configured: any topic can be a staple
        consumable[:] = True
    cons_topics = np.flatnonzero(consumable)
    empty = np.array([], dtype=np.int64)
    staples_empty = pd.DataFrame({"user": empty, "item": empty, "cadence": empty, "first_day": empty})
    if g_users.size == 0:
        ev = _Events(empty, empty, np.array([], dtype=np.float64), empty, empty, np.array([], dtype=np.int8))
        return ev, empty, empty, staples_empty

    # Staple items: a consumable topic by the user's taste (smoothed), then an item by popularity.
    lo, hi = cfg.staples_per_user
    n_staples = rng.integers(lo, hi + 1, size=g_users.size)
    pair_user = np.repeat(g_users, n_staples)
    w = users.taste[pair_user][:, cons_topics] + 0.2 / cons_topics.size
    topic = cons_topics[_sample_rows(np.cumsum(w, axis=1), rng)]
    sampler = _GroupSampler(cat.topic, cat.popularity, n_t)
    join = users.join_day[pair_user]
    drawn = _sample_released(sampler, topic, join, cat.release_day, rng)
    pair_item = np.where(drawn >= 0, drawn, cat.topic_anchor[topic])
    keep = ~pd.DataFrame({"u": pair_user, "i": pair_item}).duplicated().to_numpy()
    pair_user, pair_item = pair_user[keep], pair_item[keep]
    cadence = rng.choice(np.asarray(cfg.staple_cadences, dtype=np.int64), size=pair_user.size)
    first_day = np.ceil(users.join_day[pair_user] + rng.random(pair_user.size) * cadence).astype(np.int64)

    # Purchases: first_day + cumulative jittered gaps, generated ragged-vectorised and cut at `days`.
    max_k = np.maximum((cfg.days - first_day) // np.maximum(np.floor(cadence * 0.6), 1) + 2, 1).astype(np.int64)
    pair = np.repeat(np.arange(pair_user.size), max_k)
    gaps = np.maximum(np.rint(cadence[pair] * rng.lognormal(0.0, cfg.cadence_jitter, size=pair.size)), 1)
    gaps = gaps.astype(np.int64)
    pair_first = np.cumsum(max_k) - max_k
    gaps[pair_first] = 0
    csum = np.cumsum(gaps)
    day = first_day[pair] + csum - csum[pair_first][pair]
    ok = (day < cfg.days) & (rng.random(pair.size) >= cfg.staple_skip)
    ok[pair_first] = day[pair_first] < cfg.days  # the first purchase is never skipped
    s_user, s_item, s_day = pair_user[pair[ok]], pair_item[pair[ok]], day[ok]

    # Trips: unique (user, day); impulse buys of popular consumables ride along.
    trip_key = np.unique(s_user * (cfg.days + 1) + s_day)
    trip_user, trip_day = trip_key // (cfg.days + 1), trip_key % (cfg.days + 1)
    n_imp = rng.poisson(cfg.impulse_per_trip, size=trip_key.size)
    imp_trip = np.repeat(np.arange(trip_key.size), n_imp)
    imp_topic = cons_topics[rng.integers(0, cons_topics.size, size=imp_trip.size)]
    drawn = _sample_released(sampler, imp_topic, trip_day[imp_trip].astype(np.float64), cat.release_day, rng)
    imp_item = np.where(drawn >= 0, drawn, cat.topic_anchor[imp_topic])

    ev_user = np.concatenate([s_user, trip_user[imp_trip]])
    ev_item = np.concatenate([s_item, imp_item])
    ev_trip = np.concatenate([np.searchsorted(trip_key, s_user * (cfg.days + 1) + s_day), imp_trip])
    ev_source = np.concatenate([np.full(s_user.size, SOURCE_STAPLE), np.full(imp_trip.size, SOURCE_IMPULSE)])
    dedup = ~pd.DataFrame({"t": ev_trip, "i": ev_item}).duplicated().to_numpy()  # staple wins over impulse
    ev_user, ev_item, ev_trip, ev_source = ev_user[dedup], ev_item[dedup], ev_trip[dedup], ev_source[dedup]

    hour = rng.choice(24, size=trip_key.size, p=_SHOPPING_HOURS / _SHOPPING_HOURS.sum())
    trip_start = trip_day + (hour + rng.random(trip_key.size) * 0.5) / 24.0
    t_day = trip_start[ev_trip] + rng.random(ev_trip.size) * (20.0 / 1440.0)  # within ~20 minutes
    events = _Events(
        ev_user,
        ev_item,
        np.minimum(t_day, cfg.days - 1e-6),
        ev_trip,
        np.full(ev_user.size, -1, dtype=np.int64),
        ev_source.astype(np.int8),
    )
    staples = pd.DataFrame({"user": pair_user, "item": pair_item, "cadence": cadence, "first_day": first_day})
    return events, trip_user, trip_day, staples


# --------------------------------------------------------------------------------------------------
# public API


def generate(config: SyntheticConfig | None = None) -> Dataset:
    """Generate a synthetic dataset in canonical form; ``meta["truth"]`` holds its :class:`GroundTruth`."""
    cfg = config if config is not None else SyntheticConfig()
    rng_catalog, rng_text, rng_users, rng_events, rng_grocery = (
        np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(5)
    )
    cat = _make_catalog(cfg, rng_catalog)
    users = _make_users(cfg, rng_users)
    reg, sess_user, sess_ordinal = _make_regular_events(cfg, users, cat, rng_events)
    gro, trip_user, trip_day, staples = _make_grocery_events(cfg, users, cat, rng_grocery)

    user_ids = _ids("u", cfg.n_users)
    item_ids = _ids("i", cfg.n_items)
    creator_ids = _ids("c", cfg.n_creators)

    # One label table for sessions and trips; strings are built once per label, not per event.
    labels = np.array(
        [f"{user_ids[u]}:s{k}" for u, k in zip(sess_user.tolist(), sess_ordinal.tolist(), strict=True)]
        + [f"{user_ids[u]}:d{d}" for u, d in zip(trip_user.tolist(), trip_day.tolist(), strict=True)],
        dtype=object,
    )
    user = np.concatenate([reg.user, gro.user])
    t_day = np.concatenate([reg.t_day, gro.t_day])
    t_us = np.rint(t_day * _DAY_US).astype(np.int64)
    order = np.lexsort((np.arange(user.size), t_us, user))  # by user, then time; stable on ties
    label = np.concatenate([reg.label, gro.label + sess_user.size])[order]
    start_us = pd.Timestamp(cfg.start, tz="UTC").value // 1000  # .value is in nanoseconds
    timestamp = pd.DatetimeIndex((start_us + t_us[order]).astype("datetime64[us]")).tz_localize("UTC")
    session = labels[label]
    interactions = pd.DataFrame(
        {
            "user_id": user_ids[user[order]],
            "item_id": item_ids[np.concatenate([reg.item, gro.item])[order]],
            "timestamp": timestamp,
            "session_id": session,
            "basket_id": session,
            "value": np.ones(user.size),
        }
    )
    topic_names = tuple(t.name for t in TOPICS[: cfg.n_topics])
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "text": _item_texts(cfg, cat, rng_text),
            "creator_id": creator_ids[cat.creator],
            "attributes": [
                [f"topic:{topic_names[t]}", f"price_band:{p}"]
                for t, p in zip(cat.topic.tolist(), cat.price_band.tolist(), strict=True)
            ],
        }
    )
    truth = GroundTruth(
        topics=topic_names,
        user_ids=user_ids,
        user_taste=users.taste,
        user_is_grocery=users.grocery,
        user_join_day=users.join_day,
        item_ids=item_ids,
        item_topic=cat.topic,
        item_creator=cat.creator,
        item_popularity=cat.popularity,
        item_release_day=cat.release_day,
        creator_ids=creator_ids,
        creator_names=cat.creator_names,
        creator_home_topic=cat.creator_home,
        staples=pd.DataFrame(
            {
                "user_id": user_ids[staples["user"].to_numpy()],
                "item_id": item_ids[staples["item"].to_numpy()],
                "cadence_days": staples["cadence"].to_numpy(),
                "first_day": staples["first_day"].to_numpy(),
            }
        ),
        event_intent=np.concatenate([reg.intent, gro.intent])[order],
        event_source=np.concatenate([reg.source, gro.source])[order],
    )
    return Dataset(
        name="synthetic",
        interactions=validate_interactions(interactions),
        items=validate_items(items),
        time_kind="unix",
        meta={"generator": "feature_store.sources.synthetic", "config": asdict(cfg), "truth": truth},
    )


def ground_truth(source: Dataset | SyntheticConfig) -> GroundTruth:
    """The latent structure of a generated dataset (or of the dataset a config generates)."""
    data = generate(source) if isinstance(source, SyntheticConfig) else source
    truth = data.meta.get("truth")
    if not isinstance(truth, GroundTruth):
        raise ValueError(f"dataset {data.name!r} was not made by the synthetic generator (no ground truth in meta)")
    return truth
