"""Text benchmarks as DomainPairs of token ids: Blitzer multi-domain sentiment, in-domain or cross-domain.

``source == target`` is the in-domain setting (train and test splits of one domain); otherwise the target's
reviews are the unlabelled target train set and its test split the target test set. Tokenisation happens
once, here, into device tensors (pad id = padding), so every method and baseline runs on text unchanged.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dacl.benchmarks.domain_pair import DomainPair
from dacl.data.text import blitzer_domain
from dacl.errors import DataError
from dacl.registry import BENCHMARKS


def tokenize(texts: list[str], tokenizer: Any, max_length: int, device) -> torch.Tensor:
    ids = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")["input_ids"]
    return ids.to(device)


@BENCHMARKS.register("blitzer")
def blitzer(data_root: str | None = None, download: bool = False, device="cpu", source: str = "books",
            target: str = "kitchen", tokenizer: str = "minilm", max_length: int = 128, val_fraction: float = 0.1,
            split_seed: int = 0, max_source_train: int | None = None, **_: Any) -> DomainPair:
    """Blitzer et al. 2007 reviews (books, dvd, electronics, kitchen), binary sentiment."""
    from dacl.models.text import load_tokenizer

    if not data_root:
        raise DataError("the blitzer benchmark needs data_root (the folder with blitzer_sorted_data_acl_labeled.tar.xz)")
    tok = load_tokenizer(tokenizer)
    src = blitzer_domain(data_root, source, split_seed=split_seed)
    tgt = src if target == source else blitzer_domain(data_root, target, split_seed=split_seed)
    rng = np.random.default_rng(split_seed)
    perm = rng.permutation(len(src.texts_train))
    n_val = int(round(val_fraction * len(perm)))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if max_source_train is not None:
        train_idx = train_idx[:max_source_train]
    enc = lambda texts: tokenize(texts, tok, max_length, device)  # noqa: E731
    lab = lambda y: torch.as_tensor(y, dtype=torch.long, device=device)  # noqa: E731
    pick = lambda idx: [src.texts_train[i] for i in idx]  # noqa: E731
    return DomainPair(
        name="blitzer", task=f"{source}->{target}" if source != target else f"{source} (in-domain)", num_classes=2,
        in_channels=0, image_size=max_length,
        source_train=(enc(pick(train_idx)), lab(src.y_train[train_idx])),
        source_val=(enc(pick(val_idx)), lab(src.y_train[val_idx])),
        source_test=(enc(src.texts_test), lab(src.y_test)),
        target_train_x=enc(tgt.texts_train), target_test=(enc(tgt.texts_test), lab(tgt.y_test)))
