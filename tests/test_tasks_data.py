import json

import pytest

from rkif.task_files import load_records
from rkif.errors import InputError
from rkif.tasks import TASK_ORDERS, check_task_id, resolve_order


def test_builtin_orders_match_the_design_doc():
    assert resolve_order(4) == ("4", ["dbpedia", "amazon", "yahoo", "agnews"])
    assert resolve_order("6")[1] == ["yahoo", "amazon", "agnews", "dbpedia"]
    for i in (1, 2, 3):
        assert len(TASK_ORDERS[i]) == 15 and len(set(TASK_ORDERS[i])) == 15
    assert set(TASK_ORDERS[1]) == set(TASK_ORDERS[2]) == set(TASK_ORDERS[3])


def test_custom_order_from_list_or_object(tmp_path):
    (tmp_path / "mine.json").write_text(json.dumps(["b", "a"]))
    (tmp_path / "obj.json").write_text(json.dumps({"tasks": ["x", "y", "z"]}))
    assert resolve_order(str(tmp_path / "mine.json")) == ("mine", ["b", "a"])
    assert resolve_order(str(tmp_path / "obj.json")) == ("obj", ["x", "y", "z"])


@pytest.mark.parametrize("content, message", [
    ("[1, 2", "malformed JSON"), ("[]", "non-empty"), ('["a", "a"]', "unique"), ('{"order": ["a"]}', "'tasks'")])
def test_custom_order_errors(tmp_path, content, message):
    p = tmp_path / "o.json"
    p.write_text(content)
    with pytest.raises(InputError, match=message):
        resolve_order(str(p))


def test_unknown_order_and_task_id():
    with pytest.raises(InputError, match="unknown order"):
        resolve_order(9)
    with pytest.raises(InputError, match="does not exist"):
        resolve_order("nowhere/order.json")
    with pytest.raises(InputError, match="0..3"):
        check_task_id(4, TASK_ORDERS[4])
    with pytest.raises(InputError, match="out of range"):
        check_task_id(-1, TASK_ORDERS[4])


@pytest.mark.parametrize("content, message", [
    ('[{"input": "a", "output": "b"}', "malformed JSON"),
    ('{"input": "a"}', "expected a JSON list"),
    ("[]", "no records"),
    ('[{"id": "t_0", "input": "a"}]', "record 0 \\(id t_0\\) has no 'output'"),
    ('[{"input": "a", "output": "b"}, {"output": "b"}]', "record 1 .* no 'input'"),
    ('[{"input": "a", "output": 3}]', "'output' must be a string"),
    ('["text"]', "record 0 is str"),
])
def test_load_records_errors_name_file_and_problem(tmp_path, content, message):
    p = tmp_path / "t_T5.json"
    p.write_text(content)
    with pytest.raises(InputError, match=message) as e:
        load_records(str(p))
    assert str(p) in str(e.value)


def test_load_records_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_records(str(tmp_path / "none.json"))
