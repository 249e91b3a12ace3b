"""The embedded translation task: human-written dates -> ISO 8601 ("Friday, 27 November 2026",
"27/11/26", "nov 27 2026" -> "2026-11-27"), character by character.

Dates are drawn uniformly from 1950-01-01 .. 2049-12-31, so a two-digit year is unambiguous (50-99 ->
19xx, 00-49 -> 20xx); every format puts the day before the month when both are numbers. The output's
characters sit far from where the input's sit and the input's length varies, which is what attention is for.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
START = dt.date(1950, 1, 1)
SPAN = (dt.date(2049, 12, 31) - START).days + 1


def _formats(d: dt.date):
    D, M, Y = d.day, d.month, d.year
    mon, mo3, wd = MONTHS[M - 1], MONTHS[M - 1][:3], DAYS[d.weekday()]
    y2 = f"{Y % 100:02d}"
    return [
        f"{wd.capitalize()}, {D} {mon.capitalize()} {Y}",
        f"{wd[:3]}, {D} {mo3} {Y}",
        f"{D:02d}/{M:02d}/{y2}",
        f"{D}/{M}/{Y}",
        f"{D:02d}.{M:02d}.{Y}",
        f"{mo3} {D} {Y}",
        f"{mon} {D}, {Y}",
        f"{D} {mon} {Y}",
        f"{D} {mo3} {y2}",
        f"{D}-{mo3}-{Y}",
        f"{mon.capitalize()} {D:02d} {Y}",
        f"{wd} {D} {mon} {Y}",
    ]


NUM_FORMATS = len(_formats(START))


def render(d: dt.date, fmt: int) -> str:
    return _formats(d)[fmt]


def generate(n: int, seed: int = 0):
    """n random (human date, ISO date) string pairs; the same seed gives the same pairs."""
    rng = np.random.default_rng(seed)
    days = rng.integers(0, SPAN, n)
    fmts = rng.integers(0, NUM_FORMATS, n)
    out = []
    for k, f in zip(days, fmts):
        d = START + dt.timedelta(days=int(k))
        out.append((render(d, int(f)), d.isoformat()))
    return out


def date_pairs(n_train=20000, n_dev=500, n_test=1000, seed=0):
    """Train / dev / test (source chars, target chars) lists; test sources never appear in training."""
    from rnnkit.data.parallel import tokenize_chars

    pool = generate(n_train + n_dev + n_test, seed)
    test = pool[:n_test]
    held = {s.lower() for s, _ in test}
    dev = pool[n_test:n_test + n_dev]
    held |= {s.lower() for s, _ in dev}
    train = [p for p in pool[n_test + n_dev:] if p[0].lower() not in held]
    conv = lambda ps: [(tokenize_chars(s), tokenize_chars(t)) for s, t in ps]  # noqa: E731
    return conv(train), conv(dev), conv(test)
