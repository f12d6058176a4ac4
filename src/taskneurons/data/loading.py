"""Read a task's rows from its source, normalise and check every row, sample the caps.

Everything here runs before a model is loaded, and collects every problem it finds (with file:line)
into one ConfigError, so a bad file is reported completely in one run.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskneurons.data import hub_sources, package_sources
from taskneurons.data.examples import Example, normalize_row, sample_examples
from taskneurons.data.tasks import TaskSpec
from taskneurons.errors import ConfigError

SPLITS = ("train", "test")
MAX_PROBLEMS_PER_FILE = 5


@dataclass
class TaskData:
    spec: TaskSpec
    train: list[Example]
    test: list[Example]

    def split(self, name: str) -> list[Example]:
        return getattr(self, name)

    def fingerprint(self, split: str) -> str:
        """A hash of exactly the examples used, for artifacts that depend on the data."""
        h = hashlib.sha256()
        for ex in self.split(split):
            h.update(json.dumps([ex.id, ex.fields, ex.target], sort_keys=True).encode())
        return h.hexdigest()[:16]


def _not_utf8(path: Path, offset: int, lineno: int, raw: bytes) -> str:
    return (f"{path}: not UTF-8 text (byte 0x{raw[0]:02x} at byte offset {offset}, line {lineno}); "
            f"convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8")


def _utf8_lines(path: Path, problems: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file (a byte-order mark is accepted); the first byte that is not
    UTF-8 ends the file with one problem naming its byte offset."""
    offset = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            body = raw[3:] if lineno == 1 and raw.startswith(codecs.BOM_UTF8) else raw
            try:
                yield lineno, body.decode("utf-8")
            except UnicodeDecodeError as e:
                at = offset + (len(raw) - len(body)) + e.start
                problems.append(_not_utf8(path, at, lineno, body[e.start : e.start + 1]))
                return
            offset += len(raw)


def read_utf8_text(path: Path, problems: list[str]) -> str | None:
    """A whole small UTF-8 file (BOM accepted), or None with one problem naming the byte offset."""
    found: list[str] = []
    text = "".join(line for _, line in _utf8_lines(path, found))
    problems += found
    return None if found else text


def _read_jsonl(path: Path, spec: TaskSpec, problems: list[str]) -> list[Example]:
    out: list[Example] = []
    bad = 0
    for lineno, line in _utf8_lines(path, problems):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            ex, err = None, f"{where}: not valid JSON ({e.msg})"
        else:
            ex, err = normalize_row(row, spec, where)
        if err:
            bad += 1
            if bad <= MAX_PROBLEMS_PER_FILE:
                problems.append(err)
            continue
        out.append(ex)
    if bad > MAX_PROBLEMS_PER_FILE:
        problems.append(f"{path}: {bad - MAX_PROBLEMS_PER_FILE} more bad rows not listed")
    return out


def _local_rows(spec: TaskSpec, split: str, data_dir: str | None, problems: list[str]) -> list[Example]:
    if not data_dir:
        problems.append(
            f"paths.data_dir is not set but task '{spec.name}' reads local files: "
            "export TASKNEURONS_DATA=/path/to/shared/data or pass paths.data_dir=..."
        )
        return []
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        problems.append(f"paths.data_dir='{root}' does not exist: point TASKNEURONS_DATA at the benchmark data folder")
        return []
    folder = root / spec.source["path"]
    if not folder.is_dir():
        problems.append(f"tasks.{spec.name}.source.path: folder '{folder}' does not exist under paths.data_dir")
        return []
    labels_file = folder / "labels.json"
    if spec.labels is not None and labels_file.is_file():
        text = read_utf8_text(labels_file, problems)
        file_labels = json.loads(text) if text is not None else spec.labels
        if set(file_labels) != set(spec.labels):
            problems.append(f"{labels_file}: labels {file_labels} differ from tasks.{spec.name}.labels {list(spec.labels)}")
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        if split == "test":
            problems.append(f"{path}: missing; every task needs a test split")
        return []  # test-only tasks (e.g. amazonfood) have no train split; callers that need one say so
    return _read_jsonl(path, spec, problems)


def _normalised(rows: list[dict[str, Any]], spec: TaskSpec, origin: str, problems: list[str]) -> list[Example]:
    out = []
    for i, row in enumerate(rows):
        ex, err = normalize_row(row, spec, f"{origin}[{i}]")
        if err:
            problems.append(err)
            if len(problems) > MAX_PROBLEMS_PER_FILE:
                break
        else:
            out.append(ex)
    return out


def load_split(spec: TaskSpec, split: str, data_dir: str | None, problems: list[str]) -> list[Example]:
    kind = spec.source["type"]
    if kind == "local":
        return _local_rows(spec, split, data_dir, problems)
    if kind == "package":
        loader = package_sources.LOADERS.get(spec.source["loader"])
        if loader is None:
            problems.append(
                f"tasks.{spec.name}.source.loader='{spec.source['loader']}' is unknown; "
                f"available: {', '.join(package_sources.LOADERS)}"
            )
            return []
        try:
            rows = loader(split)
        except ConfigError as e:
            problems.extend(e.problems)
            return []
        return _normalised(rows, spec, f"package:{spec.source['loader']}:{split}", problems)
    rows = hub_sources.load_hub_rows(spec.source["hub"], split)
    return _normalised(rows, spec, f"hub:{spec.source['hub']['id']}:{split}", problems)


def load_tasks(
    specs: list[TaskSpec],
    data_dir: str | None,
    max_train: int | None,
    max_test: int | None,
    seed: int,
    splits: tuple[str, ...] = SPLITS,
    need_train: Collection[str] = (),
) -> dict[str, TaskData]:
    """Load, check and sample every task; raise one ConfigError listing all problems."""
    problems: list[str] = []
    if max_test is not None and max_test <= 0:
        problems.append(f"data.max_test={max_test} must be a positive number of test examples (or null for all)")
    if max_train is not None and max_train < 0:
        problems.append(f"data.max_train={max_train} must be >= 0 (or null for all)")
    if problems:
        raise ConfigError(problems)
    out: dict[str, TaskData] = {}
    for spec in specs:
        parts: dict[str, list[Example]] = {"train": [], "test": []}
        for split in splits:
            rows = load_split(spec, split, data_dir, problems)
            cap = max_train if split == "train" else max_test
            parts[split] = sample_examples(rows, cap, seed, spec.name, split)
        if spec.name in need_train and "train" in splits and not parts["train"] and not problems:
            problems.append(f"task '{spec.name}' has no training data; it can only be an evaluation (test) task")
        if "test" in splits and not parts["test"] and not problems:
            problems.append(f"task '{spec.name}' has no test examples after loading; check its source")
        out[spec.name] = TaskData(spec, parts["train"], parts["test"])
    if problems:
        raise ConfigError(problems)
    return out
