"""Text domains: the Blitzer et al. 2007 multi-domain sentiment reviews (books, dvd, electronics, kitchen).

The raw ``.review`` files are pseudo-XML (unescaped ``&``, stray markup), so they are parsed with tolerant
regular expressions, never an XML parser. The loader reads an extracted ``sorted_data_acl/`` folder or the
``blitzer_sorted_data_acl_labeled.tar.xz`` archive directly, and splits each domain deterministically.
"""
from __future__ import annotations

import functools
import html
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dacl.errors import DataError

BLITZER_DOMAINS = ("books", "dvd", "electronics", "kitchen")
BLITZER_ARCHIVE = "blitzer_sorted_data_acl_labeled.tar.xz"
_REVIEW = re.compile(r"<review>(.*?)</review>", re.S)


@dataclass
class Review:
    title: str
    text: str
    rating: float | None

    @property
    def full_text(self) -> str:
        return f"{self.title}. {self.text}" if self.title else self.text


@dataclass
class TextDomain:
    name: str
    texts_train: list[str]
    y_train: np.ndarray
    texts_test: list[str]
    y_test: np.ndarray


def _field(block: str, tag: str) -> str:
    m = re.search(rf"<{tag}>(.*?)</{tag}>", block, re.S)
    return html.unescape(" ".join(m.group(1).split())) if m else ""


def parse_reviews(raw: str) -> list[Review]:
    """All ``<review>`` blocks of one ``.review`` file (title, text, star rating)."""
    reviews = []
    for block in _REVIEW.findall(raw):
        rating = _field(block, "rating")
        try:
            stars = float(rating) if rating else None
        except ValueError:
            stars = None
        reviews.append(Review(_field(block, "title"), _field(block, "review_text"), stars))
    return reviews


@functools.lru_cache(maxsize=2)
def _archive_reviews(archive: Path, mtime: float) -> dict[str, str]:
    """Every ``.review`` member of the archive, decompressed in one pass (xz is slow; a cross-domain benchmark
    needs four members, so reading them one by one would decompress the archive four times)."""
    with tarfile.open(archive, "r:xz") as tar:
        return {m.name: tar.extractfile(m).read().decode("latin-1") for m in tar if m.name.endswith(".review")}


def _read_raw(root: Path, domain: str, polarity: str) -> str:
    rel = f"sorted_data_acl/{domain}/{polarity}.review"
    for candidate in (root / rel, root / domain / f"{polarity}.review"):
        if candidate.is_file():
            return candidate.read_bytes().decode("latin-1")
    archive = root / BLITZER_ARCHIVE
    if archive.is_file():
        members = _archive_reviews(archive.resolve(), archive.stat().st_mtime)
        if rel not in members:
            raise DataError(f"{archive} has no {rel}: is it the labelled Blitzer archive?")
        return members[rel]
    raise DataError(f"Blitzer reviews for '{domain}' not found under {root}: expected {rel} or {BLITZER_ARCHIVE} "
                    "(set data_root to the folder holding them, e.g. ../shared/data)")


def blitzer_domain(data_root: str | Path, domain: str, test_fraction: float = 0.2, split_seed: int = 0) -> TextDomain:
    """One domain as a stratified train/test split (label 1 = positive); same split for every caller."""
    if domain not in BLITZER_DOMAINS:
        raise DataError(f"unknown Blitzer domain '{domain}'; choose one of {', '.join(BLITZER_DOMAINS)}")
    root = Path(data_root)
    texts, labels = [], []
    for label, polarity in ((0, "negative"), (1, "positive")):
        reviews = parse_reviews(_read_raw(root, domain, polarity))
        if not reviews:
            raise DataError(f"no <review> blocks in {domain}/{polarity}.review: the file is empty or corrupt")
        texts += [r.full_text for r in reviews]
        labels += [label] * len(reviews)
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(split_seed)
    test_idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:int(round(test_fraction * (y == c).sum()))]
                               for c in (0, 1)])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test_idx] = True
    pick = lambda mask: [t for t, m in zip(texts, mask) if m]  # noqa: E731
    return TextDomain(domain, pick(~is_test), y[~is_test], pick(is_test), y[is_test])
