"""Import formats: every public layout, format detection, compression, delimiters, encodings,
column mapping, time zones and unreadable sources (tansuo.data.formats via the importer)."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tansuo.config import CleaningConfig
from tansuo.data.formats import detect_format
from tansuo.data.importer import ImportOptions, import_events, import_items
from tansuo.data.store import EventStore, open_store
from tansuo.errors import UnreadableSourceError

HEADER = "user_id,item_id,type,timestamp"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[EventStore]:
    """A SQLite store: format handling does not depend on the backend."""
    s = open_store(f"sqlite:///{tmp_path / 'formats.db'}")
    try:
        yield s
    finally:
        s.close()


def _plain(v: Any) -> Any:
    """None for a missing value (the store gives NaN, NA or None); plain Python numbers."""
    if v is None or v is pd.NA or (isinstance(v, float) and v != v):
        return None
    return v.item() if hasattr(v, "item") else v


def stored(store: EventStore, *extra: str) -> list[tuple[Any, ...]]:
    """Stored events as sorted (user, item, type, timestamp, *extra) tuples."""
    cols = ["user_id", "item_id", "type", "timestamp", *extra]
    frame = store.events(cols)
    return sorted(tuple(_plain(v) for v in r) for r in frame.itertuples(index=False, name=None))


def rejected(store: EventStore) -> list[tuple[int, str]]:
    q = store.quarantined()
    return list(zip(q["line"].tolist(), q["reason"].tolist(), strict=True))


# -- public formats ------------------------------------------------------------------------


def test_retailrocket_events(db: EventStore, write) -> None:
    path = write(
        "events.csv",
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433221332117,257597,view,355908,\n"
        "1433224214164,992329,addtocart,248676,\n"
        "1433221999827,111016,transaction,318965,4000\n",
    )
    assert detect_format(path) == "retailrocket"
    report = import_events(db, path)
    assert report.format == "retailrocket"
    assert (report.rows_read, report.accepted, report.rejected) == (3, 3, 0)
    assert stored(db) == [
        ("111016", "318965", "purchase", 1433221999827),
        ("257597", "355908", "view", 1433221332117),
        ("992329", "248676", "cart", 1433224214164),
    ]


def test_retailrocket_item_properties(db: EventStore, write) -> None:
    path = write(
        "item_properties.csv",
        "timestamp,itemid,property,value\n"
        "1435460400000,460429,categoryid,1338\n"
        "1441508400000,206783,888,1116713 960601 n277.200\n"
        "1436065200000,285026,available,0\n"
        "1439089200000,460429,categoryid,1339\n"
        "1431226800000,285026,categoryid,7\n"
        "1431226800000,460429,available,1\n",
    )
    assert detect_format(path, "items") == "retailrocket"
    report = import_items(db, path)
    assert report.format == "retailrocket"
    items = db.items().set_index("item_id")
    # only items with a category or availability; the latest categoryid wins
    assert sorted(items.index) == ["285026", "460429"]
    assert items.loc["460429", "category"] == "1339"
    assert items.loc["285026", "category"] == "7"
    assert json.loads(items.loc["285026", "attributes"]) == {"available": False}
    assert json.loads(items.loc["460429", "attributes"]) == {"available": True}


def test_taobao_user_behavior(db: EventStore, write) -> None:
    path = write(
        "UserBehavior.csv",
        "1,2268318,2520377,pv,1511544070\n"
        "1,2333346,2520771,buy,1511561733\n"
        "2,2576651,149192,cart,1511572885\n"
        "3,3830808,4181361,fav,1511593493\n",
    )
    assert detect_format(path) == "taobao"
    report = import_events(db, path)
    assert report.format == "taobao"
    assert (report.rows_read, report.accepted) == (4, 4)
    assert stored(db) == [
        ("1", "2268318", "view", 1511544070000),
        ("1", "2333346", "purchase", 1511561733000),
        ("2", "2576651", "cart", 1511572885000),
        ("3", "3830808", "favorite", 1511593493000),
    ]


def test_taobao_items_take_the_category(db: EventStore, write) -> None:
    path = write("UserBehavior.csv", "1,2268318,2520377,pv,1511544070\n")
    import_items(db, path, ImportOptions(format="taobao"))
    assert db.items()[["item_id", "category"]].values.tolist() == [["2268318", "2520377"]]


AMAZON_2018 = [
    {"overall": 5.0, "verified": True, "reviewTime": "09 1, 2016", "reviewerID": "A3CIUOJXQ5VDQ2",
     "asin": "B0000530HU", "reviewText": "Works well", "summary": "Five Stars",
     "unixReviewTime": 1472688000},
    {"overall": 2.0, "verified": False, "reviewTime": "01 2, 2014", "reviewerID": "A1B2",
     "asin": "B0000530HU", "reviewText": "Broke after a week", "unixReviewTime": 1388620800},
]

AMAZON_2023 = [
    {"rating": 3.0, "title": "ok", "text": "meh", "images": [], "asin": "B081TJ8YS3",
     "parent_asin": "B08BBQ29N5", "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ",
     "timestamp": 1588615855070, "helpful_vote": 1, "verified_purchase": True},
    {"rating": 5.0, "title": "Great", "text": "", "images": [], "asin": "B00YQ6X8EO",
     "parent_asin": "B00YQ6X8EO", "user_id": "AHV6QCNBJNSGLATP56JAWJ3C4G2A",
     "timestamp": 1588687728923, "helpful_vote": 0, "verified_purchase": True},
]


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_amazon_2018_reviews(db: EventStore, write) -> None:
    path = write("Electronics_5.json", jsonl(AMAZON_2018))
    assert detect_format(path) == "amazon"
    report = import_events(db, path)
    assert (report.format, report.accepted) == ("amazon", 2)
    assert stored(db, "rating", "text") == [
        ("A1B2", "B0000530HU", "review", 1388620800000, 2.0, "Broke after a week"),
        ("A3CIUOJXQ5VDQ2", "B0000530HU", "review", 1472688000000, 5.0,
         "Five Stars. Works well"),
    ]


def test_amazon_2023_reviews_use_parent_asin_and_ms(db: EventStore, write) -> None:
    path = write("All_Beauty.jsonl", jsonl(AMAZON_2023))
    assert detect_format(path) == "amazon"
    report = import_events(db, path)
    assert (report.format, report.accepted) == ("amazon", 2)
    # the 2023 metadata is keyed by parent_asin, so the events must be too
    assert stored(db, "rating", "text") == [
        ("AGKHLEW2SOWHNMFQIJGBECAF7INQ", "B08BBQ29N5", "review", 1588615855070, 3.0, "ok. meh"),
        ("AHV6QCNBJNSGLATP56JAWJ3C4G2A", "B00YQ6X8EO", "review", 1588687728923, 5.0, "Great"),
    ]


AMAZON_META = [
    # 2023 layout
    {"main_category": "All Beauty", "title": "Nail Polish", "average_rating": 4.5,
     "rating_number": 10, "features": [], "description": ["Long lasting.", "Red."],
     "price": None, "images": [], "videos": [], "store": "Acme", "categories": [],
     "details": {"Color": "Red"}, "parent_asin": "B08BBQ29N5", "bought_together": None},
    # 2018 layout
    {"category": ["Books", "Fiction"], "description": ["A novel"], "title": "Book",
     "brand": "Pub", "price": "$1,234.50", "asin": "0000031852", "main_cat": "Books"},
    # 2014 layout: a list of category paths
    {"asin": "0000037214", "title": "Purple Sequin Tiny Dancer", "price": 6.99,
     "categories": [["Clothing", "Girls", "Dresses"]]},
]


def test_amazon_meta_items_then_reviews_join(db: EventStore, write) -> None:
    meta = write("meta_All_Beauty.jsonl", jsonl(AMAZON_META))
    assert detect_format(meta, "items") == "amazon"
    report = import_items(db, meta)
    assert (report.accepted, report.rejected) == (3, 0)
    items = db.items().set_index("item_id")
    assert items.loc["B08BBQ29N5", ["title", "category", "brand", "description"]].tolist() == [
        "Nail Polish", "All Beauty", "Acme", "Long lasting. Red."]
    assert pd.isna(items.loc["B08BBQ29N5", "price"])
    assert json.loads(items.loc["B08BBQ29N5", "attributes"]) == {"Color": "Red"}
    assert items.loc["0000031852", ["category", "brand", "price"]].tolist() == [
        "Books > Fiction", "Pub", 1234.5]
    assert items.loc["0000037214", ["category", "price"]].tolist() == [
        "Clothing > Girls > Dresses", 6.99]
    reviews = write("All_Beauty.jsonl", jsonl(AMAZON_2023[:1]))
    report = import_events(db, reviews, ImportOptions(
        cleaning=CleaningConfig(unknown_items="drop")))
    assert (report.accepted, report.rejected) == (1, 0)


def test_movielens_csv_ratings_and_movies(db: EventStore, write) -> None:
    ratings = write("ratings.csv", "userId,movieId,rating,timestamp\n"
                                   "1,1,4.0,964982703\n1,3,4.5,964981247\n7,1,0.5,1106635946\n")
    assert detect_format(ratings) == "movielens"
    report = import_events(db, ratings)
    assert (report.format, report.accepted) == ("movielens", 3)
    assert stored(db, "rating") == [
        ("1", "1", "review", 964982703000, 4.0),
        ("1", "3", "review", 964981247000, 4.5),
        ("7", "1", "review", 1106635946000, 0.5),
    ]
    movies = write("movies.csv",
                   "movieId,title,genres\n"
                   "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
                   '11,"American President, The (1995)",Comedy|Drama|Romance|Adventure\n'
                   "19,Foo (1990),(no genres listed)\n")
    assert detect_format(movies, "items") == "movielens"
    report = import_items(db, movies)
    assert (report.accepted, report.rejected) == (3, 0)
    items = db.items().set_index("item_id")
    assert items.loc["11", ["title", "category"]].tolist() == [
        "American President, The (1995)", "Movies > Comedy"]
    assert json.loads(items.loc["1", "attributes"]) == {
        "genres": ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]}
    assert items.loc["19", "category"] == "Movies"
    assert items.loc["19", "attributes"] is None


def test_movielens_dat_double_colon(db: EventStore, write) -> None:
    ratings = write("ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n"
                                   "2::1357::4::978298709\n")
    assert detect_format(ratings) == "movielens"
    report = import_events(db, ratings)
    assert (report.rows_read, report.accepted, report.rejected) == (3, 3, 0)
    assert stored(db, "rating") == [
        ("1", "1193", "review", 978300760000, 5.0),
        ("1", "661", "review", 978302109000, 3.0),
        ("2", "1357", "review", 978298709000, 4.0),
    ]
    movies = write("movies.dat", "1::Toy Story (1995)::Animation|Children's|Comedy\n"
                                 "2::Jumanji (1995)::Adventure|Children's|Fantasy\n")
    assert detect_format(movies, "items") == "movielens"
    assert import_items(db, movies).accepted == 2
    assert db.items()[["item_id", "title", "category"]].values.tolist() == [
        ["1", "Toy Story (1995)", "Movies > Animation"],
        ["2", "Jumanji (1995)", "Movies > Adventure"],
    ]


def test_movielens_dat_bad_row_line_number(db: EventStore, write) -> None:
    ratings = write("ratings.dat", "1::1193::5::978300760\n1::661\n\n2::1357::11::978298709\n")
    report = import_events(db, ratings)
    assert report.accepted == 1
    assert rejected(db) == [(2, "malformed_row"), (4, "invalid_rating")]


# -- Tansuo's own containers ---------------------------------------------------------------


def test_parquet_with_datetime_columns(db: EventStore, tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "user_id": ["u1", "u2", "u3"],
        "item_id": [10, 11, 12],
        "type": ["view", "cart", "purchase"],
        "timestamp": pd.to_datetime(["2024-01-01 08:00:00", "2024-01-01 08:00:00.250",
                                     "2024-06-30 23:59:59"], format="ISO8601"),
        "rating": [None, 4.5, None],
    })
    path = tmp_path / "events.parquet"
    frame.to_parquet(path)
    assert detect_format(path) == "parquet"
    import_events(db, path)
    assert stored(db, "rating") == [
        ("u1", "10", "view", 1704096000000, None),
        ("u2", "11", "cart", 1704096000250, 4.5),
        ("u3", "12", "purchase", 1719791999000, None),
    ]


def test_parquet_naive_datetime_follows_timezone(db: EventStore, tmp_path: Path) -> None:
    naive = pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "type": ["view"],
                          "timestamp": pd.to_datetime(["2024-01-01 08:00:00"])})
    aware = naive.assign(user_id=["u2"],
                         timestamp=pd.to_datetime(["2024-01-01 08:00:00+08:00"], utc=True))
    naive.to_parquet(tmp_path / "naive.parquet")
    aware.to_parquet(tmp_path / "aware.parquet")
    opts = ImportOptions(timezone="Asia/Shanghai")
    import_events(db, tmp_path / "naive.parquet", opts)
    import_events(db, tmp_path / "aware.parquet", opts)
    # 08:00 in Shanghai and 08:00+08:00 are both 00:00 UTC
    assert stored(db) == [("u1", "i1", "view", 1704067200000),
                          ("u2", "i1", "view", 1704067200000)]


def test_parquet_written_by_pyarrow_with_ms_ints(db: EventStore, tmp_path: Path) -> None:
    table = pa.table({"user_id": pa.array([1, 2], pa.int64()),
                      "item_id": ["a", "b"], "type": ["pv", "fav"],
                      "timestamp": pa.array([1700000000123, 1700000000456], pa.int64()),
                      "quantity": pa.array([None, 3], pa.int32())})
    path = tmp_path / "e.pq"
    pq.write_table(table, path)
    assert detect_format(path) == "parquet"
    import_events(db, path)
    assert stored(db, "quantity") == [("1", "a", "view", 1700000000123, None),
                                      ("2", "b", "favorite", 1700000000456, 3)]


def test_jsonl_events_with_bad_lines(db: EventStore, write) -> None:
    path = write("e.jsonl",
                 '{"user_id": 1, "item_id": 2.0, "type": "search", "query": "red shoes", '
                 '"timestamp": "2024-01-01T00:00:00Z", "position": 3}\n'
                 '{"user_id": "x", \n'
                 "\n"
                 "[1, 2]\n"
                 '{"user_id": "u2", "item_id": "i2", "type": "view", "timestamp": 1700000000}\n')
    assert detect_format(path) == "jsonl"
    report = import_events(db, path)
    assert (report.rows_read, report.accepted, report.rejected) == (4, 2, 2)
    assert stored(db, "query", "position") == [
        ("1", "2", "search", 1704067200000, "red shoes", 3),
        ("u2", "i2", "view", 1700000000000, None, None),
    ]
    assert rejected(db) == [(2, "malformed_row"), (4, "malformed_row")]
    details = db.quarantined()["detail"].tolist()
    assert details[0].startswith("not valid JSON")
    assert details[1] == "expected a JSON object per line"


@pytest.mark.parametrize("suffix,compress", [(".gz", gzip.compress), (".bz2", bz2.compress),
                                             (".xz", lzma.compress)])
def test_compressed_csv(db: EventStore, tmp_path: Path, suffix: str, compress) -> None:
    path = tmp_path / f"events.csv{suffix}"
    path.write_bytes(compress(f"{HEADER}\nu1,i1,view,1700000000\nu2,i2,cart\n"
                              "u3,i3,click,1700000001000\n".encode()))
    assert detect_format(path) == "csv"
    report = import_events(db, path)
    assert (report.rows_read, report.accepted, report.rejected) == (3, 2, 1)
    assert stored(db) == [("u1", "i1", "view", 1700000000000),
                          ("u3", "i3", "click", 1700000001000)]
    assert rejected(db) == [(3, "malformed_row")]


def test_compressed_retailrocket_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "events.csv.gz"
    path.write_bytes(gzip.compress(b"timestamp,visitorid,event,itemid,transactionid\n"
                                   b"1433221332117,257597,view,355908,\n"))
    assert detect_format(path) == "retailrocket"


def test_quoted_newlines_keep_line_numbers(db: EventStore, write) -> None:
    text = (
        f"{HEADER},text\n"
        'u1,i1,review,1700000000,"first line,\nsecond, line\nthird ""quoted"""\n'  # lines 2-4
        "u2,i2,bogus,1700000000,\n"  # line 5
        'u3,i3,review,1700000001,"a,b"\n'  # line 6
        ",i4,view,1700000002,\n"  # line 7
        "u5,i5,view\n"  # line 8
        'u6,i6,review,1700000003,"x\ny"\n'  # lines 9-10
        "u7,,view,1700000004,\n"  # line 11
    )
    path = write("quoted.csv", text)
    report = import_events(db, path)
    assert (report.rows_read, report.accepted, report.rejected) == (7, 3, 4)
    assert rejected(db) == [(5, "unknown_type"), (7, "missing_user_id"), (8, "malformed_row"),
                            (11, "missing_item_id")]
    assert stored(db, "text") == [
        ("u1", "i1", "review", 1700000000000, 'first line,\nsecond, line\nthird "quoted"'),
        ("u3", "i3", "review", 1700000001000, "a,b"),
        ("u6", "i6", "review", 1700000003000, "x\ny"),
    ]


@pytest.mark.parametrize("sep", ["\t", ";", "|"])
def test_other_delimiters_are_sniffed(db: EventStore, write, sep: str) -> None:
    rows = [HEADER.replace(",", sep), sep.join(["u1", "i1", "view", "1700000000"]),
            sep.join(["u2", "i2", "cart", "2023-11-14T22:13:21Z"])]
    path = write("events.tsv" if sep == "\t" else "events.txt", "\n".join(rows) + "\n")
    assert detect_format(path) == "csv"
    report = import_events(db, path)
    assert report.accepted == 2
    assert stored(db) == [("u1", "i1", "view", 1700000000000),
                          ("u2", "i2", "cart", 1700000001000)]


def test_header_decides_the_delimiter(db: EventStore, write) -> None:
    """Data rows full of another separator ("a|b|c" genres) must not change the delimiter."""
    path = write("movies.csv", "movieId,title,genres\n"
                               "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
                               "2,Jumanji (1995),Adventure|Children|Fantasy|Drama\n")
    report = import_items(db, path)
    assert (report.accepted, report.rejected) == (2, 0)
    assert db.items()["title"].tolist() == ["Toy Story (1995)", "Jumanji (1995)"]


def test_explicit_delimiter(db: EventStore, write) -> None:
    path = write("e.csv", "user_id;item_id;type;timestamp;text\nu1;i1;review;1700000000;a,b,c\n")
    import_events(db, path, ImportOptions(delimiter=";"))
    assert stored(db, "text") == [("u1", "i1", "review", 1700000000000, "a,b,c")]


def test_utf8_bom_header(db: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{HEADER}\nu1,i1,view,1700000000\n".encode())
    report = import_events(db, path)
    assert (report.accepted, report.rejected) == (1, 0)
    assert stored(db) == [("u1", "i1", "view", 1700000000000)]


def test_crlf_line_endings(db: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "crlf.csv"
    path.write_bytes(f"{HEADER}\r\nu1,i1,view,1700000000\r\nu2,i2\r\nu3,i3,view,1\r\n".encode())
    report = import_events(db, path)
    assert report.accepted == 1
    assert stored(db) == [("u1", "i1", "view", 1700000000000)]
    assert rejected(db) == [(3, "malformed_row"), (4, "too_old_timestamp")]


def test_column_and_type_mapping(db: EventStore, write) -> None:
    path = write("shop.csv", "customer,sku,action,when,stars\n"
                             "c1,s1,PageView,1700000000,\n"
                             "c2,s2,basket,1700000001,\n"
                             "c3,s3,rate,1700000002,4\n")
    report = import_events(db, path, ImportOptions(
        column_map={"user_id": "customer", "item_id": "sku", "type": "action",
                    "timestamp": "when", "rating": "stars"},
        type_map={"basket": "cart"}))
    assert (report.accepted, report.rejected) == (3, 0)
    assert stored(db, "rating") == [("c1", "s1", "view", 1700000000000, None),
                                    ("c2", "s2", "cart", 1700000001000, None),
                                    ("c3", "s3", "review", 1700000002000, 4.0)]


def test_type_map_to_unknown_type_is_refused(db: EventStore, write) -> None:
    path = write("e.csv", f"{HEADER}\nu1,i1,view,1700000000\n")
    with pytest.raises(UnreadableSourceError, match="not event types"):
        import_events(db, path, ImportOptions(type_map={"view": "glance"}))


def test_headerless_csv_with_columns(db: EventStore, write) -> None:
    path = write("nohdr.csv", "1700000000,u1,i1,view\n1700000001,u2,i2,purchase\n")
    report = import_events(db, path, ImportOptions(
        header=False, columns=("timestamp", "user_id", "item_id", "type")))
    assert (report.rows_read, report.accepted) == (2, 2)
    assert stored(db) == [("u1", "i1", "view", 1700000000000),
                          ("u2", "i2", "purchase", 1700000001000)]


def test_headerless_csv_without_columns_is_unreadable(db: EventStore, write) -> None:
    path = write("nohdr.csv", "1700000000,u1,i1,view\n")
    with pytest.raises(UnreadableSourceError, match="needs column names") as err:
        import_events(db, path, ImportOptions(header=False))
    assert str(path) in str(err.value)


def test_naive_times_in_a_timezone(db: EventStore, write) -> None:
    path = write("tz.csv", f"{HEADER}\n"
                           "u1,i1,view,2024-03-01 08:00:00\n"  # naive → Asia/Shanghai
                           "u2,i2,view,2024-03-01T08:00:00.5\n"
                           "u3,i3,view,2024-03-01T08:00:00Z\n"  # explicit UTC
                           "u4,i4,view,2024-03-01T08:00:00-05:00\n"
                           "u5,i5,view,1709251200\n")  # epoch: always UTC
    import_events(db, path, ImportOptions(timezone="Asia/Shanghai"))
    assert stored(db) == [("u1", "i1", "view", 1709251200000),
                          ("u2", "i2", "view", 1709251200500),
                          ("u3", "i3", "view", 1709280000000),
                          ("u4", "i4", "view", 1709298000000),
                          ("u5", "i5", "view", 1709251200000)]


def test_naive_times_default_to_utc(db: EventStore, write) -> None:
    path = write("tz.csv", f"{HEADER}\nu1,i1,view,2024-03-01 08:00:00\n")
    import_events(db, path)
    assert stored(db) == [("u1", "i1", "view", 1709280000000)]


def test_epoch_seconds_and_ms_are_told_apart(db: EventStore, write) -> None:
    path = write("epoch.csv", f"{HEADER}\n"
                              "u1,i1,view,1700000000\n"  # seconds
                              "u1,i1,view,1700000000000\n"  # the same instant in ms
                              "u2,i2,view,1700000000.25\n"  # fractional seconds
                              "u3,i3,view,1700000000123\n")  # ms
    report = import_events(db, path)
    assert (report.accepted, report.duplicates, report.rejected) == (3, 1, 0)
    assert stored(db) == [("u1", "i1", "view", 1700000000000),
                          ("u2", "i2", "view", 1700000000250),
                          ("u3", "i3", "view", 1700000000123)]


def test_explicit_timestamp_unit(db: EventStore, write) -> None:
    path = write("epoch.csv", f"{HEADER}\nu1,i1,view,1700000000000\nu2,i2,view,1700000000\n")
    report = import_events(db, path, ImportOptions(timestamp_unit="s"))
    assert report.accepted == 1
    assert stored(db) == [("u2", "i2", "view", 1700000000000)]
    assert rejected(db) == [(2, "future_timestamp")]


# -- unreadable sources --------------------------------------------------------------------


def _make_unreadable(tmp_path: Path, case: str) -> Path:
    if case == "missing":
        return tmp_path / "nope.csv"
    if case == "directory":
        (tmp_path / "dir.csv").mkdir()
        return tmp_path / "dir.csv"
    if case == "empty":
        (tmp_path / "empty.csv").write_text("")
        return tmp_path / "empty.csv"
    if case == "corrupt_parquet":
        (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
        return tmp_path / "bad.parquet"
    (tmp_path / "nouser.csv").write_text("customer,item_id,type,timestamp\nc1,i1,view,1\n")
    return tmp_path / "nouser.csv"


@pytest.mark.parametrize("case,expected", [
    ("missing", "does not exist"),
    ("directory", "is a directory"),
    ("empty", "is empty"),
    ("corrupt_parquet", "not a readable Parquet file"),
    ("no_user_column", "no column for required field 'user_id'"),
])
@pytest.mark.parametrize("fmt", ["auto", "explicit"])
def test_unreadable_sources(db: EventStore, tmp_path: Path, case: str, expected: str,
                            fmt: str) -> None:
    path = _make_unreadable(tmp_path, case)
    if fmt == "explicit":
        opts = ImportOptions(format="parquet" if case == "corrupt_parquet" else "csv")
        expected = {"directory": "Is a directory", "empty": "no readable header line"}.get(
            case, expected)
    else:
        opts = ImportOptions()
    with pytest.raises(UnreadableSourceError) as err:
        import_events(db, path, opts)
    message = str(err.value)
    assert str(path) in message
    assert expected in message
    assert db.count_events() == 0


def test_missing_column_message_lists_the_real_columns(db: EventStore, write) -> None:
    path = write("e.csv", "user,item_id,type,timestamp\nu1,i1,view,1700000000\n")
    with pytest.raises(UnreadableSourceError) as err:
        import_events(db, path)
    assert "columns are ['item_id', 'timestamp', 'type', 'user']" in str(err.value)
    assert "--map user_id=COLUMN" in str(err.value)


def test_missing_column_can_be_mapped(db: EventStore, write) -> None:
    path = write("e.csv", "user,item_id,type,timestamp\nu1,i1,view,1700000000\n")
    report = import_events(db, path, ImportOptions(column_map={"user_id": "user"}))
    assert report.accepted == 1


def test_unknown_format_name(db: EventStore, write) -> None:
    path = write("e.csv", f"{HEADER}\nu1,i1,view,1700000000\n")
    with pytest.raises(UnreadableSourceError, match="unknown format 'excel'"):
        import_events(db, path, ImportOptions(format="excel"))


def test_header_only_file_imports_nothing(db: EventStore, write) -> None:
    report = import_events(db, write("e.csv", f"{HEADER}\n"))
    assert (report.rows_read, report.status) == (0, "nothing_imported")


def test_detect_format_by_content(tmp_path: Path) -> None:
    cases = {
        "a.csv": f"{HEADER}\nu1,i1,view,1\n",
        "b.txt": '{"user_id": "u1"}\n',
        "c.json": '{"reviewerID": "A", "asin": "B"}\n',
        "d.csv": "userId,movieId,rating,timestamp\n",
        "e.csv": "1,2,3,buy,1511544070\n",
        "f.csv": '"timestamp","visitorid","event","itemid"\n',
    }
    expected = {"a.csv": "csv", "b.txt": "jsonl", "c.json": "amazon", "d.csv": "movielens",
                "e.csv": "taobao", "f.csv": "retailrocket"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        assert detect_format(tmp_path / name) == expected[name], name


@pytest.mark.parametrize("quote", [False, True])
def test_na_like_strings_are_values(db: EventStore, write, quote: bool) -> None:
    """"NA", "null", "NaN" are ids and text, not missing values (Arrow's default nulls)."""
    extra = 'u9,i9,review,1700000000,,"quoted, so the Python parser reads this block"\n' \
        if quote else ""
    path = write("na.csv", f"{HEADER},query,text\n"
                           "NA,null,view,1700000000,,N/A\n"
                           "nan,NaN,search,1700000000,NULL,#N/A\n" + extra)
    report = import_events(db, path)
    assert (report.accepted, report.rejected) == (2 + quote, 0)
    frame = db.events(["user_id", "item_id", "query", "text"]).set_index("user_id")
    assert frame.loc["NA"].tolist() == ["null", None, "N/A"]
    assert frame.loc["nan"].tolist() == ["NaN", "NULL", "#N/A"]


def test_retailrocket_properties_across_chunks(db: EventStore, write) -> None:
    """An item's category must survive a later chunk that only updates its availability."""
    filler = "".join(f"14354604{i:05d},{1000 + i},888,{'x' * 40}\n" for i in range(300))
    path = write("item_properties.csv",
                 "timestamp,itemid,property,value\n"
                 "1435460400000,1,categoryid,1338\n"
                 "1435460400000,2,categoryid,5\n" + filler +
                 "1435460500000,1,available,1\n"
                 "1435460300000,2,categoryid,4\n")  # older than the first: ignored
    for chunk_size in (7, 100_000):
        import_items(db, path, ImportOptions(chunk_size=chunk_size))
        items = db.items().set_index("item_id")
        assert items.loc["1", ["category", "attributes"]].tolist() == [
            "1338", '{"available": true}'], chunk_size
        assert items.loc["2", "category"] == "5", chunk_size


def test_retailrocket_property_rejects_name_file_lines(db: EventStore, write) -> None:
    """A rejected item of the pivoted properties is reported at its first line in the file."""
    path = write("item_properties.csv",
                 "timestamp,itemid,property,value\n"
                 "1435460400000,7,888,x\n"            # line 2: not a kept property
                 "1435460400000,,categoryid,12\n"     # line 3: no item id
                 "1435460400000,8,categoryid,5\n"     # line 4
                 "1435460500000,,available,1\n")      # line 5: no item id either
    report = import_items(db, path)
    assert report.rejected == 1 and report.accepted == 1
    assert [(r["line"], r["reason"]) for r in report.first_rejected] == [(3, "missing_item_id")]
