"""`tansuo interests | segments | trends` end to end on a small store with a catalogue."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_cli import run

CATS = {"R": "Sports > Running > Shoes", "B": "Home > Baking > Tins",
        "A": "Electronics > Audio > Headphones"}
TITLES = {"R": "trail running shoe", "B": "non-stick cake tin", "A": "wireless headphones"}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interests")
    items = ["item_id,title,category,brand"]
    for letter in CATS:
        for j in range(8):
            items.append(f"{letter}{j},{TITLES[letter]} {j},{CATS[letter]},brand{j % 3}")
    (tmp / "items.csv").write_text("\n".join(items) + "\n")
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,type,timestamp"]
    t0 = 1_767_225_600  # 2026-01-01
    for u in range(30):
        first, second = ("R", "B") if u < 20 else ("A", "A")
        for k in range(40):
            letter = first if k < 25 else second  # runners turn to baking in week 4
            day = k // 2
            lines.append(f"u{u},{letter}{rng.integers(8)},view,{t0 + day * 86400 + u * 60 + k}")
    (tmp / "events.csv").write_text("\n".join(lines) + "\n")
    h = tmp / "home"
    run(h, "import", "items", str(tmp / "items.csv"))
    run(h, "import", "events", str(tmp / "events.csv"))
    return h


def test_interests_of_a_user_with_timeline_and_plot(home, tmp_path):
    doc = json.loads(run(home, "interests", "u3", "--timeline", "--json", "--plot",
                         str(tmp_path / "u3.png"), "--text-only").stdout)
    names = [i["name"] for i in doc["interests"]]
    assert set(names) == {"Sports > Running", "Home > Baking"}
    baking = doc["interests"][names.index("Home > Baking")]
    assert baking["trend"] in {"new", "rising"} and baking["tags"][0]["tag"] == "Baking"
    assert doc["short_term"][0]["name"] == "Home > Baking"
    assert len(doc["timeline"]) >= 3 and doc["stats"]["events"] == 40
    assert (tmp_path / "u3.png").stat().st_size > 10_000
    table = run(home, "interests", "u25", "--text-only").stdout
    assert "Electronics > Audio" in table and "Running" not in table


def test_segments_and_trends(home, tmp_path):
    seg = json.loads(run(home, "segments", "--json", "--plot", str(tmp_path / "s.png"),
                         "--text-only").stdout)
    assert seg["k"] >= 2 and sum(s["users"] for s in seg["segments"]) == 30
    assert (tmp_path / "s.png").exists()
    fixed = json.loads(run(home, "segments", "--k", "2", "--json", "--text-only").stdout)
    assert sorted(s["users"] for s in fixed["segments"]) == [10, 20]
    trends = json.loads(run(home, "trends", "--window", "week", "--recent", "1", "--history",
                            "2", "--json", "--text-only").stdout)
    by_name = {t["name"]: t for t in trends}
    assert by_name["Home > Baking"]["trend"] in {"new", "rising"}
    assert by_name["Sports > Running"]["trend"] in {"gone", "fading"}


def test_interests_errors(home, tmp_path):
    proc = run(home, "interests", "nobody", "--text-only", check=False)
    assert proc.returncode == 1 and "unknown user 'nobody'" in proc.stderr
    proc = run(home, "interests", "u1", "--window", "fortnight", check=False)
    assert proc.returncode == 2 and "--window 'fortnight'" in proc.stderr
    proc = run(home, "interests", "u1", "--half-life-days", "0", check=False)
    assert proc.returncode == 2 and "half_life_days must be > 0" in proc.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    proc = run(home, "interests", "u1", "--tags", str(empty), check=False)
    assert proc.returncode == 2 and "has no tags" in proc.stderr
    proc = run(home, "segments", "--k-min", "5", "--k-max", "3", check=False)
    assert proc.returncode == 2 and "--k-min 5 is above --k-max 3" in proc.stderr
    bare = tmp_path / "bare"
    (tmp_path / "ev.csv").write_text("user_id,item_id,type,timestamp\nu1,i1,view,1767225600\n")
    run(bare, "import", "events", str(tmp_path / "ev.csv"))
    proc = run(bare, "interests", "u1", check=False)
    assert proc.returncode == 1 and "tansuo import items" in proc.stderr
    proc = run(tmp_path / "nothing", "trends", check=False)
    assert proc.returncode == 1 and "no events" in proc.stderr
