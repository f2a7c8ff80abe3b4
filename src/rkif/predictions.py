"""Reading prediction files, as data, never executed: JSON lines {"id", "gold", "pred"}, or the released
`id|||gold|||['pred']` lines, whose last field is parsed with ast.literal_eval."""

import ast
import json
import os

from .errors import InputError

SEP = "|||"
RELEASED = "released"  # the "format" of a row read from a released id|||gold|||['pred'] line


def read_predictions(path):
    """[{"id", "gold", "pred"}] from a .jsonl file or a released-format text file."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: prediction file not found (run the generation step first)")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            rows.append(_parse_line(line.rstrip("\n"), path, n))
    return rows


def _parse_line(line, path, n):
    if line.startswith("{"):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n}: not a JSON line ({e.msg})") from None
        if not all(isinstance(row.get(k), str) for k in ("id", "gold", "pred")):
            raise InputError(f"{path}:{n}: a prediction line needs string fields id, gold and pred")
        return row
    parts = line.split(SEP)
    if len(parts) < 3:
        raise InputError(f"{path}:{n}: expected a JSON line or 'id|||gold|||[pred]', got {line[:80]!r}")
    # as the released eval: the id is the first field, the prediction the last
    ident, gold, pred = parts[0], SEP.join(parts[1:-1]), parts[-1]
    try:
        value = ast.literal_eval(pred)
    except (ValueError, SyntaxError):
        value = pred  # a bare prediction string
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return {"id": ident, "gold": gold, "pred": str(value), "format": RELEASED}


def check_complete(rows, test_records, path):
    """The prediction ids must be exactly the test split's ids, each once."""
    ids = [r["id"] for r in rows]
    expected = [r["id"] for r in test_records]
    seen = set()
    dupes = {i for i in ids if i in seen or seen.add(i)}
    if dupes:
        raise InputError(f"{path}: duplicate ids, e.g. {sorted(dupes)[:3]}")
    unknown = set(ids) - set(expected)
    if unknown:
        raise InputError(f"{path}: {len(unknown)} ids not in the test split, e.g. {sorted(unknown)[:3]}")
    missing = set(expected) - set(ids)
    if missing:
        raise InputError(
            f"{path}: incomplete, {len(rows)} of {len(expected)} test examples predicted "
            f"(missing e.g. {sorted(missing)[:3]}); rerun generation to finish it"
        )


def check_released_order(rows, test_records, path):
    """Released-format lines follow the test split's order, as the released eval requires."""
    for n, (row, record) in enumerate(zip(rows, test_records), 1):
        if row["id"] != record["id"]:
            raise InputError(f"{path}: prediction {n} has id {row['id']!r} where the test split has "
                             f"{record['id']!r}; released-format files follow the test split's order")
