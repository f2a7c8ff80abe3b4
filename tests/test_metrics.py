import pytest

from rkif.errors import InputError
from rkif.metrics import accuracy, backward_transfer, matrix_metrics, overall_performance
from rkif.predictions import check_complete, read_predictions


def test_accuracy_is_exact_match_after_strip_and_lower():
    rows = [{"pred": " Sunny ", "gold": "sunny"}, {"pred": "rainy", "gold": "Snowy"}, {"pred": "", "gold": "x"},
            {"pred": "SPORTS", "gold": "sports "}]
    assert accuracy(rows) == 0.5


def test_op_and_bwt_by_hand():
    assert overall_performance([0.5, 1.0, 0.75]) == pytest.approx(0.75)
    # a_ii = 0.9, 0.8, (0.7); a_Ti = 0.6, 0.7, 0.7 -> ((0.6-0.9) + (0.7-0.8)) / 2 = -0.2
    assert backward_transfer([0.9, 0.8, 0.7], [0.6, 0.7, 0.7]) == pytest.approx(-0.2)
    with pytest.raises(ValueError):
        backward_transfer([1.0], [1.0])


def test_matrix_metrics_by_hand():
    R = [[0.9],
         [0.5, 0.8],
         [0.7, 0.6, 1.0]]
    m = matrix_metrics(R)
    assert m["OP"] == pytest.approx((0.7 + 0.6 + 1.0) / 3)
    assert m["BWT"] == pytest.approx(((0.7 - 0.9) + (0.6 - 0.8)) / 2)
    # forgetting: task 0 best before the end max(0.9, 0.5) = 0.9 -> 0.2; task 1: 0.8 -> 0.2
    assert m["forgetting"] == pytest.approx(0.2)
    assert matrix_metrics([[0.4]]) == {"OP": 0.4}


def test_reads_jsonl_and_released_format_without_executing(tmp_path):
    p = tmp_path / "0-t.txt"
    p.write_text("t_0|||sunny|||['sunny']\n"
                 "t_1|||rainy|||[\"snowy\"]\n"
                 "t_2|||x|||__import__('os').system('touch HACKED')\n"
                 "t_3|||y|||plain text\n\n")
    rows = read_predictions(str(p))
    assert [r["pred"] for r in rows] == ["sunny", "snowy", "__import__('os').system('touch HACKED')", "plain text"]
    assert not (tmp_path / "HACKED").exists()
    q = tmp_path / "0-t.jsonl"
    q.write_text('{"id": "a", "gold": "g", "pred": "p"}\n')
    assert read_predictions(str(q)) == [{"id": "a", "gold": "g", "pred": "p"}]


@pytest.mark.parametrize("text, message", [
    ("t_0|||only two\n", "expected a JSON line"),
    ('{"id": "a", "gold": "g"}\n', "string fields id, gold and pred"),
    ('{"id": "a", \n', "not a JSON line"),
])
def test_malformed_prediction_lines(tmp_path, text, message):
    p = tmp_path / "f.jsonl"
    p.write_text(text)
    with pytest.raises(InputError, match=message):
        read_predictions(str(p))


def test_missing_file_and_id_mismatches(tmp_path):
    with pytest.raises(InputError, match="prediction file not found"):
        read_predictions(str(tmp_path / "none.jsonl"))
    test = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    row = lambda i: {"id": i, "gold": "", "pred": ""}  # noqa: E731
    with pytest.raises(InputError, match="incomplete, 2 of 3"):
        check_complete([row("a"), row("b")], test, "f")
    with pytest.raises(InputError, match="not in the test split"):
        check_complete([row("a"), row("b"), row("z")], test, "f")
    with pytest.raises(InputError, match="duplicate ids"):
        check_complete([row("a"), row("a"), row("b")], test, "f")
    check_complete([row("c"), row("a"), row("b")], test, "f")


def test_a_rounding_error_around_zero_is_shown_as_zero_not_minus_zero():
    from rkif.metrics import backward_transfer, shown

    # the real-model benchmark's RKIF, 24 test examples a task: +2, -2 and +1 answers, BWT exactly 0 by hand
    bwt = backward_transfer([11 / 24, 10 / 24, 15 / 24, 0.6], [12 / 24, 8 / 24, 16 / 24, 0.6])
    assert bwt != 0 and abs(bwt) < 1e-15
    assert shown(bwt) == "0.0000" and shown(bwt, 3) == "0.000" and shown(-0.18055556) == "-0.1806"
