"""MovieLens: ml-latest-small (fully timed) and the timed part of ML-1M."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from feature_store.sources.adapters._common import Source, build, unix_seconds
from feature_store.sources.loading import BadRowPolicy
from feature_store.sources.schema import Dataset

NO_GENRE = "(no genres listed)"


def _genre_tokens(genres: pd.Series) -> list[list[str]]:
    """ "Comedy|Drama" -> ["genre:Comedy", "genre:Drama"]; MovieLens' no-genre marker becomes no token."""
    return [[f"genre:{g}" for g in s.split("|") if g and g != NO_GENRE] for s in genres]


def load_ml_latest_small(root: Path, on_bad_rows: BadRowPolicy = "error") -> Dataset:
    """ratings.csv (real unix times, 0.5-5 stars) + movies.csv (title, genres) of the 2016 release."""
    src = Source(root, "ml-latest-small", on_bad_rows)
    ratings_file, movies_file = "ml-latest-small/ratings.csv.gz", "ml-latest-small/movies.csv.gz"
    src.require(ratings_file, movies_file)

    t, c = src.table(ratings_file, ["userId", "movieId", "rating", "timestamp"])
    f = t.frame
    c.integer(f["userId"], "userId")
    c.integer(f["movieId"], "movieId")
    rating = c.number(f["rating"], "rating")
    seconds = c.integer(f["timestamp"], "timestamp")
    inter = src.apply(
        c,
        pd.DataFrame(
            {"user_id": f["userId"], "item_id": f["movieId"], "timestamp": unix_seconds(seconds), "value": rating}
        ),
    )

    t, c = src.table(movies_file, ["movieId", "title", "genres"])
    f = t.frame
    c.integer(f["movieId"], "movieId")
    c.unique(f["movieId"], "movieId")
    movies = src.apply(c, f)
    items = pd.DataFrame(
        {"item_id": movies["movieId"], "text": movies["title"], "attributes": _genre_tokens(movies["genres"])}
    )
    return build("ml-latest-small", inter, items, "unix", src)


def load_ml_1m(root: Path, on_bad_rows: BadRowPolicy = "error") -> Dataset:
    """The 299,418 ML-1M ratings that still have their timestamp, with movies.dat titles and genres.

    The file is the valid+test part of a per-user temporal split; the split label goes to
    ``meta["split"]`` (one entry per interaction row), not into the interactions.
    """
    src = Source(root, "ml-1m", on_bad_rows)
    ratings_file, movies_file = "ml-1m/ratings_recent_with_time.csv.gz", "ml-1m/movies.dat.gz"
    src.require(ratings_file, movies_file)

    t, c = src.table(ratings_file, ["user_id", "movie_id", "rating", "timestamp", "split"])
    f = t.frame
    c.integer(f["user_id"], "user_id")
    c.integer(f["movie_id"], "movie_id")
    rating = c.number(f["rating"], "rating")
    seconds = c.integer(f["timestamp"], "timestamp")
    c.one_of(f["split"], "split", ["valid", "test"])
    kept = src.apply(
        c,
        pd.DataFrame(
            {
                "user_id": f["user_id"],
                "item_id": f["movie_id"],
                "timestamp": unix_seconds(seconds),
                "value": rating,
                "split": f["split"],
            }
        ),
    )
    split = kept.pop("split").to_numpy()

    # movies.dat is Latin-1 with "::" separators, which pandas' fast parser cannot split on.
    lines = src.lines(movies_file, encoding="latin-1")
    parts = [line.split("::") for line in lines]
    ok = np.array([len(p) == 3 for p in parts], dtype=bool)
    movies = pd.DataFrame([p if len(p) == 3 else ["", "", ""] for p in parts], columns=["id", "title", "genres"])
    c = src.checks(movies_file, len(movies))
    c.flag(~ok, lambda i: f"expected 'MovieID::Title::Genres', found {len(parts[i])} field(s)")
    c.integer(movies["id"].where(ok, "0"), "MovieID")
    c.unique(movies["id"], "MovieID")
    movies = src.apply(c, movies)
    items = pd.DataFrame(
        {"item_id": movies["id"], "text": movies["title"], "attributes": _genre_tokens(movies["genres"])}
    )
    return build("ml-1m", kept, items, "unix", src, split=split)
