"""The embedded date-normalisation task."""

import datetime as dt
import re

from rnnkit.data.dates import DAYS, MONTHS, NUM_FORMATS, date_pairs, generate, render


def test_formats_of_one_date():
    d = dt.date(2026, 11, 27)
    shown = [render(d, f) for f in range(NUM_FORMATS)]
    assert "Friday, 27 November 2026" in shown
    assert "27/11/26" in shown
    assert "nov 27 2026" in shown
    assert len(set(shown)) == NUM_FORMATS


def test_generated_pairs_are_consistent():
    pairs = generate(600, seed=3)
    assert pairs == generate(600, seed=3) and pairs != generate(600, seed=4)
    for src, iso in pairs:
        d = dt.date.fromisoformat(iso)
        assert dt.date(1950, 1, 1) <= d <= dt.date(2049, 12, 31)
        low = src.lower()
        words = re.findall(r"[a-z]+", low)
        nums = [int(x) for x in re.findall(r"\d+", low)]
        # the day of the week, when shown, is right
        for w in words:
            if w[:3] in [x[:3] for x in DAYS]:
                assert DAYS[d.weekday()].startswith(w)
        # the month is shown as a name or as the second number; the year in full or as two digits
        if any(m.startswith(w) for w in words for m in MONTHS if len(w) >= 3):
            assert any(MONTHS[d.month - 1].startswith(w) for w in words)
        else:
            assert nums[1] == d.month
        assert d.day in nums
        assert d.year in nums or d.year % 100 == nums[-1]


def test_split_keeps_test_sources_out_of_training():
    train, dev, test = date_pairs(2000, 100, 200, seed=0)
    assert len(test) == 200 and len(dev) == 100 and len(train) <= 2000
    held = {"".join(s) for s, _ in test} | {"".join(s) for s, _ in dev}
    assert not any("".join(s) in held for s, _ in train)
    s, t = test[0]
    assert all(len(c) == 1 for c in s) and len(t) == 10 and "".join(t)[4] == "-"
