"""The Blitzer .review reader: tolerant of the pseudo-XML, deterministic stratified splits, clear errors."""
from pathlib import Path

import pytest

from dacl.data.text import blitzer_domain, parse_reviews
from dacl.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RAW = """<review>
<unique_id>
x1
</unique_id>
<rating>
5.0
</rating>
<title>
Great &amp; cheap
</title>
<review_text>
Works well & lasts
 long.
</review_text>
</review>
<review>
<rating>
oops
</rating>
<review_text>
No title here
</review_text>
</review>
"""


def _write(root: Path, domain: str, n: int) -> None:
    d = root / "sorted_data_acl" / domain
    d.mkdir(parents=True)
    for polarity in ("positive", "negative"):
        (d / f"{polarity}.review").write_text(RAW * (n // 2), encoding="latin-1")


def test_parse_reviews_tolerates_unescaped_markup():
    reviews = parse_reviews(RAW)
    assert len(reviews) == 2
    assert reviews[0].title == "Great & cheap" and reviews[0].text == "Works well & lasts long." and reviews[0].rating == 5.0
    assert reviews[1].rating is None and reviews[1].full_text == "No title here"


def test_blitzer_domain_splits_stratified_and_deterministically(tmp_path):
    _write(tmp_path, "books", 20)
    a, b = blitzer_domain(tmp_path, "books"), blitzer_domain(tmp_path, "books")
    assert len(a.texts_train) == 32 and len(a.texts_test) == 8 and a.y_test.sum() == 4
    assert a.texts_test == b.texts_test and (a.y_train == b.y_train).all()


def test_blitzer_errors_name_the_fix(tmp_path):
    with pytest.raises(DataError, match="data_root"):
        blitzer_domain(tmp_path, "books")
    with pytest.raises(DataError, match="choose one of"):
        blitzer_domain(tmp_path, "movies")


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED / "blitzer_sorted_data_acl_labeled.tar.xz").exists(), reason="needs ../shared/data (Blitzer archive)")
def test_real_archive_has_2000_reviews_per_domain():
    d = blitzer_domain(SHARED, "kitchen")
    assert len(d.texts_train) + len(d.texts_test) == 2000 and d.y_train.mean() == pytest.approx(0.5)
