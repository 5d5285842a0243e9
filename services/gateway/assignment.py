"""Experiment assignment: which variant a user sees. Pure functions, no I/O, safe on the request path.

The semantics follow GrowthBook's SDKs (see docs/experiments.md for the references), so the
behaviour is a known quantity rather than something invented here:

* ``hash_v2(seed, value)`` = ``fnv1a32(str(fnv1a32(seed + value))) % 10000 / 10000``: a number in
  [0, 1) that depends only on the experiment seed and the user's id, so every replica, every restart
  and every language agrees without coordination.
* ``bucket_ranges`` gives each variant the range ``[cumulative weight, cumulative weight + coverage
  * weight)``. Range *starts* depend only on the weights, so raising coverage only extends ranges:
  nobody already in the experiment moves. Changing weights moves range starts, so users near the
  boundaries change variant; sticky bucketing (a lookup of the variant a user already got) keeps
  them where they were until ``bucket_version`` is bumped.
* Namespaces make experiments mutually exclusive: a user is in namespace ``(name, start, end)``
  when ``hash_v2("__" + name, user)`` falls in ``[start, end)``. The hash ignores the experiment,
  so experiments holding disjoint ranges of one namespace never share a user.
* Conditions are a subset of GrowthBook's MongoDB-like targeting language (``eval_condition``).

Order of evaluation in ``assign`` (first match wins): forced variant; experiment not running;
no hash attribute value; namespace; sticky bucket; condition; hash and coverage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the model lives with the store; assignment only reads its attributes
    from services.gateway.experiments import Experiment

FNV_OFFSET_BASIS = 0x811C9DC5
FNV_PRIME = 0x01000193
_MASK32 = 0xFFFFFFFF

Reason = Literal["forced", "sticky", "condition", "namespace", "coverage", "hashed"]
# (experiment_key, bucket_version, hash_attribute, attribute_value) -> variant key the user already has, or None.
StickyLookup = Callable[[str, int, str, str], "str | None"]


def fnv1a32(s: str) -> int:
    """32-bit FNV-1a over the UTF-8 bytes of ``s`` (http://www.isthe.com/chongo/tech/comp/fnv/).

    For ASCII ids this equals GrowthBook's per-character implementation; for other text, bytes are
    the portable choice (GrowthBook's JS and Python SDKs already disagree beyond the BMP).
    """
    h = FNV_OFFSET_BASIS
    for byte in s.encode("utf-8"):
        h = ((h ^ byte) * FNV_PRIME) & _MASK32
    return h


def hash_v2(seed: str, value: str) -> float:
    """GrowthBook hash version 2: the double hash removes v1's correlation between similar seeds."""
    return (fnv1a32(str(fnv1a32(seed + value))) % 10000) / 10000


def bucket_ranges(n: int, coverage: float, weights: Sequence[float] | None = None) -> list[tuple[float, float]]:
    """Each variant's ``[start, end)``: start = cumulative weight, length = coverage * weight.

    Starts do not depend on coverage, so raising coverage never moves a user who is already in.
    Out-of-range coverage is clamped and bad weights fall back to equal weights, as in GrowthBook:
    the store refuses both, this is the last line of defence on the request path.
    """
    coverage = min(1.0, max(0.0, coverage))
    if weights is None or len(weights) != n or not math.isclose(sum(weights), 1.0, abs_tol=0.01):
        weights = [1.0 / n] * n if n else []
    ranges: list[tuple[float, float]] = []
    cumulative = 0.0
    for w in weights:
        start = cumulative
        cumulative += w
        ranges.append((start, start + coverage * w))
    return ranges


def choose_variation(n: float, ranges: Sequence[tuple[float, float]]) -> int:
    """Index of the range holding ``n`` (``[start, end)``), or -1 when ``n`` falls in no range."""
    for i, (start, end) in enumerate(ranges):
        if start <= n < end:
            return i
    return -1


def in_namespace(user: str, ns: tuple[str, float, float]) -> bool:
    """Whether ``user`` falls in namespace ``(name, start, end)``.

    GrowthBook hashes namespaces with hash v1 (3 digits); we use v2 everywhere (4 digits, no
    seed correlation) since there is no legacy traffic to stay compatible with.
    """
    name, start, end = ns
    return start <= hash_v2("__" + name, user) < end


# --- conditions -------------------------------------------------------------------------------------

_LOGICAL = frozenset({"$and", "$or", "$not"})
_VALUE_OPS = frozenset({"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists"})
_MISSING = object()


def _attr(attrs: Mapping[str, Any], path: str) -> Any:
    """Dotted paths reach into nested attributes (``"device.os"``); a missing step is ``None``."""
    current: Any = attrs
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def _is_operator_object(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(str(k).startswith("$") for k in value)


def _compare(op: str, actual: Any, expected: Any) -> bool:
    """Ordering only between numbers or between strings; anything else (None, mixed types) is False."""
    numbers = (int, float)
    comparable = (
        isinstance(actual, numbers)
        and not isinstance(actual, bool)
        and isinstance(expected, numbers)
        and not isinstance(expected, bool)
    ) or (isinstance(actual, str) and isinstance(expected, str))
    if not comparable:
        return False
    if op == "$gt":
        return actual > expected
    if op == "$gte":
        return actual >= expected
    if op == "$lt":
        return actual < expected
    return actual <= expected


def _in(actual: Any, options: Any) -> bool:
    """GrowthBook's ``$in``: a list attribute matches when it shares any element with the options."""
    if not isinstance(options, list):
        return False
    if isinstance(actual, list):
        return any(a in options for a in actual)
    return actual in options


def _eval_operator(op: str, expected: Any, actual: Any) -> bool:
    if op == "$eq":
        return actual == expected
    if op == "$ne":
        return actual != expected
    if op == "$in":
        return _in(actual, expected)
    if op == "$nin":
        return isinstance(expected, list) and not _in(actual, expected)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return _compare(op, actual, expected)
    if op == "$exists":
        return (actual is not None) if expected else (actual is None)
    if op == "$not":
        return not _eval_value(expected, actual)
    return False  # unknown operator: never matches (the store refuses them at write time)


def _eval_value(expected: Any, actual: Any) -> bool:
    if _is_operator_object(expected):
        return all(_eval_operator(op, arg, actual) for op, arg in expected.items())
    return actual == expected


def eval_condition(attrs: Mapping[str, Any], cond: Mapping[str, Any] | None) -> bool:
    """Evaluate a GrowthBook-style targeting condition against request attributes.

    ``{"country": "US"}`` is equality; ``{"age": {"$gte": 18, "$lt": 65}}`` ANDs operators;
    ``$and``/``$or`` take lists of conditions and ``$not`` one condition. An empty condition matches.
    """
    if not cond:
        return True
    for key, value in cond.items():
        if key == "$and":
            if not all(eval_condition(attrs, c) for c in value):
                return False
        elif key == "$or":
            if value and not any(eval_condition(attrs, c) for c in value):
                return False
        elif key == "$not":
            if eval_condition(attrs, value):
                return False
        elif not _eval_value(value, _attr(attrs, key)):
            return False
    return True


def check_condition(cond: Any, path: str = "condition") -> list[str]:
    """Problems with a condition's shape, so a typo (``$gte `` or ``$in: "US"``) is refused when written
    instead of silently never matching on the request path."""
    problems: list[str] = []
    if not isinstance(cond, Mapping):
        return [f"{path} must be an object, got {type(cond).__name__}"]
    for key, value in cond.items():
        here = f"{path}.{key}"
        if key in ("$and", "$or"):
            if not isinstance(value, list):
                problems.append(f"{here} must be a list of conditions")
            else:
                for i, c in enumerate(value):
                    problems.extend(check_condition(c, f"{here}[{i}]"))
        elif key == "$not":
            problems.extend(check_condition(value, here))
        elif str(key).startswith("$"):
            problems.append(f"{here}: unknown logical operator (supported: {', '.join(sorted(_LOGICAL))})")
        else:
            problems.extend(_check_value(value, here))
    return problems


def _check_value(value: Any, path: str) -> list[str]:
    if not isinstance(value, Mapping) or not any(str(k).startswith("$") for k in value):
        return []  # plain equality, including against an object without operators
    problems: list[str] = []
    if not _is_operator_object(value):
        return [f"{path} mixes operators and plain keys"]
    for op, arg in value.items():
        here = f"{path}.{op}"
        if op == "$not":
            problems.extend(_check_value(arg, here) if _is_operator_object(arg) else [])
        elif op not in _VALUE_OPS:
            problems.append(f"{here}: unknown operator (supported: {', '.join(sorted(_VALUE_OPS | {'$not'}))})")
        elif op in ("$in", "$nin") and not isinstance(arg, list):
            problems.append(f"{here} needs a list")
        elif op == "$exists" and not isinstance(arg, bool):
            problems.append(f"{here} needs true or false")
        elif op in ("$gt", "$gte", "$lt", "$lte") and (isinstance(arg, bool) or not isinstance(arg, int | float | str)):
            problems.append(f"{here} needs a number or a string")
    return problems


# --- assignment -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assignment:
    """The outcome of evaluating one experiment for one request.

    ``in_experiment`` False means the user was evaluated but not enrolled (``reason`` says why); the
    variant is then the control, which is what the gateway serves. ``hash_value`` is the user's
    bucket in [0, 1) (None when forced without an id), logged with exposures for analysis.
    """

    experiment_key: str
    variant_key: str
    variant_index: int
    in_experiment: bool
    hash_value: float | None
    reason: Reason
    hash_attribute: str | None = None
    attribute_value: str | None = None
    bucket_version: int = 0


def hash_identity(attributes: Mapping[str, Any], attribute: str, fallback: str | None) -> tuple[str, str] | None:
    """``(attribute, value)`` used for hashing: the hash attribute, else the fallback (e.g. an anonymous id).

    An empty or missing value cannot be hashed (every anonymous user would share one bucket).
    """
    for name in (attribute, fallback):
        if not name:
            continue
        value = attributes.get(name)
        if value is not None and value != "":
            return name, value if isinstance(value, str) else str(value)
    return None


def _index(experiment: Experiment, key: str) -> int:
    for i, v in enumerate(experiment.variants):
        if v.key == key:
            return i
    return -1


def assign(
    experiment: Experiment,
    attributes: Mapping[str, Any],
    forced: Mapping[str, str] | None = None,
    sticky: StickyLookup | None = None,
) -> Assignment | None:
    """Evaluate ``experiment`` for a request with ``attributes``.

    Returns None when the experiment does not apply at all (not running, or the request carries no
    hash attribute value); the gateway then serves as if there were no experiment.
    ``forced`` maps experiment keys to variant keys (QA, demos) and applies in any status; an unknown
    variant key is ignored, as in GrowthBook. ``sticky`` looks up a variant the user already got
    under the same ``bucket_version`` (the store's sticky table), so a weight change does not move them.
    """
    key = experiment.key
    identity = hash_identity(attributes, experiment.hash_attribute, experiment.fallback_attribute)
    attr, value = identity if identity else (None, None)
    n = hash_v2(experiment.seed or key, value) if value is not None else None
    bv = experiment.bucket_version

    def result(index: int, in_exp: bool, reason: Reason) -> Assignment:
        return Assignment(key, experiment.variants[index].key, index, in_exp, n, reason, attr, value, bv)

    if forced and key in forced:
        idx = _index(experiment, forced[key])
        if idx >= 0:
            return result(idx, True, "forced")
    if experiment.status != "running" or value is None or attr is None:
        return None
    control = _index(experiment, experiment.control or experiment.variants[0].key)
    ns = experiment.namespace
    if ns is not None and not in_namespace(value, (ns.name, ns.start, ns.end)):
        return result(control, False, "namespace")
    if sticky is not None and experiment.sticky_bucketing:
        held = sticky(key, bv, attr, value)
        idx = _index(experiment, held) if held is not None else -1
        if idx >= 0 and not experiment.variants[idx].shadow:
            # GrowthBook skips the condition for sticky users: an attribute change (a new plan,
            # a new app version) must not flip a user's experience mid-experiment.
            return result(idx, True, "sticky")
    if experiment.condition and not eval_condition(attributes, experiment.condition):
        return result(control, False, "condition")
    weights = [0.0 if v.shadow else v.weight for v in experiment.variants]
    idx = choose_variation(n if n is not None else 0.0, bucket_ranges(len(weights), experiment.coverage, weights))
    if idx < 0:
        return result(control, False, "coverage")
    return result(idx, True, "hashed")
