"""Music: HetRec Last.fm-2k (artist play counts), a Last.fm-1K listening sample, a Spotify MPD sample."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from feature_store.sources.adapters._common import Source, build, day_index, day_steps
from feature_store.sources.loading import BadRowPolicy
from feature_store.sources.schema import Dataset

LASTFM_1K_COLUMNS = ["user", "timestamp", "artist_mbid", "artist_name", "track_mbid", "track_name"]


def load_lastfm_2k(root: Path, on_bad_rows: BadRowPolicy = "error") -> Dataset:
    """User-artist play counts (``value`` = weight); the artist is the item and its own creator.

    There are no timestamps: the k-th row of a user in the file is day k. Artist names are the
    item text; there is no artist->tag mapping (user_taggedartists is not available), so no attributes.
    """
    name = "lastfm-2k"
    src = Source(root, name, on_bad_rows)
    plays_file = "music/hetrec2011-lastfm-2k/user_artists.dat.gz"
    artists_file = "music/hetrec2011-lastfm-2k/artists.dat.gz"
    src.require(plays_file, artists_file)

    t, c = src.table(plays_file, ["userID", "artistID", "weight"], sep="\t", quoting=csv.QUOTE_NONE)
    f = t.frame
    c.integer(f["userID"], "userID")
    c.integer(f["artistID"], "artistID")
    weight = c.number(f["weight"], "weight")
    inter = src.apply(c, pd.DataFrame({"user_id": f["userID"], "item_id": f["artistID"], "value": weight}))
    inter["timestamp"] = day_index(inter["user_id"])

    t, c = src.table(artists_file, ["id", "name", "url", "pictureURL"], sep="\t", quoting=csv.QUOTE_NONE)
    f = t.frame
    c.integer(f["id"], "id")
    c.unique(f["id"], "id")
    artists = src.apply(c, f)
    items = pd.DataFrame({"item_id": artists["id"], "text": artists["name"], "creator_id": artists["id"]})
    return build(name, inter, items, "day_index", src)


def track_key(artist_name: str, track_name: str) -> str:
    """Stable id for a track without a MusicBrainz id: hash of artist and track name ("h:" + 16 hex)."""
    digest = hashlib.sha1(f"{artist_name}\x1f{track_name}".encode()).hexdigest()
    return f"h:{digest[:16]}"


def load_lastfm_1k_sample(root: Path, on_bad_rows: BadRowPolicy = "error") -> Dataset:
    """Last.fm-1K plays (headerless TSV, ISO UTC times, newest first as in the original).

    ``item_id`` is the track MBID, or ``track_key(artist, track)`` when the MBID is empty.
    ``creator_id`` is the artist MBID; an artist without one is named by its artist name, unless
    another row of the same artist name carries an MBID. Item text is "<track> by <artist>".
    """
    name = "lastfm-1k-sample"
    src = Source(root, name, on_bad_rows)
    rel = "music/lastfm-1k-sample/userid-timestamp-artid-artname-traid-traname.tsv.gz"
    src.require(rel)
    t, c = src.table(rel, LASTFM_1K_COLUMNS, sep="\t", header=False, quoting=csv.QUOTE_NONE)
    f = t.frame
    c.nonempty(f["user"], "user")
    when = pd.to_datetime(f["timestamp"], format="%Y-%m-%dT%H:%M:%SZ", errors="coerce", utc=True)
    c.flag(
        when.isna().to_numpy(),
        lambda i: f"timestamp {f['timestamp'].iloc[i]!r} is not ISO 8601 UTC (YYYY-MM-DDTHH:MM:SSZ)",
    )
    c.nonempty(f["artist_name"], "artist_name")
    c.nonempty(f["track_name"], "track_name")
    f = src.apply(c, f.assign(when=when))

    no_mbid = f["track_mbid"].eq("")
    item_id = f["track_mbid"].copy()
    unnamed = f.loc[no_mbid, ["artist_name", "track_name"]]
    item_id[no_mbid] = [track_key(a, tr) for a, tr in zip(unnamed["artist_name"], unnamed["track_name"], strict=True)]
    known = f.loc[f["artist_mbid"].ne(""), ["artist_name", "artist_mbid"]].drop_duplicates("artist_name")
    name_to_mbid = dict(zip(known["artist_name"], known["artist_mbid"], strict=True))
    by_name = f["artist_name"].map(name_to_mbid).fillna(f["artist_name"])
    creator = f["artist_mbid"].where(f["artist_mbid"].ne(""), by_name)
    inter = pd.DataFrame({"user_id": f["user"], "item_id": item_id, "timestamp": f["when"]})

    meta = pd.DataFrame(
        {"item_id": item_id, "text": f["track_name"] + " by " + f["artist_name"], "creator_id": creator}
    ).drop_duplicates("item_id")
    return build(name, inter, meta, "unix", src)


MPD_COLUMNS = [
    "pid",
    "pos",
    "track_uri",
    "track_name",
    "artist_uri",
    "artist_name",
    "album_uri",
    "album_name",
    "duration_ms",
]


def load_mpd_sample(root: Path, on_bad_rows: BadRowPolicy = "error") -> Dataset:
    """Spotify MPD playlists as users: the track at position k of playlist ``pid`` is day k.

    Items are tracks (``track_uri``), created by ``artist_uri``, text "<track> by <artist>", with
    the album as an "album:<album_uri>" attribute. Playlist edit times exist only per playlist,
    not per track, so order is all there is.
    """
    name = "mpd-sample"
    src = Source(root, name, on_bad_rows)
    rel = "music/mpd_sample/playlist_tracks.csv.gz"
    src.require(rel)
    t, c = src.table(rel, MPD_COLUMNS)
    f = t.frame
    c.integer(f["pid"], "pid")
    pos = c.integer(f["pos"], "pos")
    for col in ("track_uri", "artist_uri"):
        c.nonempty(f[col], col)
    f = src.apply(c, f.assign(pos_int=pos))
    # Position rank within the playlist, so gaps or an unsorted file still give 0, 1, 2, ...
    step = f.groupby("pid", sort=False)["pos_int"].rank(method="first").to_numpy(dtype=np.int64) - 1
    inter = pd.DataFrame({"user_id": f["pid"], "item_id": f["track_uri"], "timestamp": day_steps(step)})
    tracks = f.drop_duplicates("track_uri")
    items = pd.DataFrame(
        {
            "item_id": tracks["track_uri"],
            "text": tracks["track_name"] + " by " + tracks["artist_name"],
            "creator_id": tracks["artist_uri"],
            "attributes": [[f"album:{a}"] if a else [] for a in tracks["album_uri"]],
        }
    )
    return build(name, inter, items, "day_index", src)
