import json

import pytest

from autoseg.data.splits import fold_cases, kfold_indices, load_or_create_splits, make_splits, parse_groups
from autoseg.errors import ConfigError

CASES = [f"hippocampus_{i:03d}" for i in (1, 3, 4, 6, 7, 8, 11, 14, 17, 19, 23)]


def test_kfold_matches_sklearn_reference():
    # val folds of sklearn KFold(5, shuffle=True, random_state=12345).split(range(11)), computed with scikit-learn
    expected = [[0, 3, 7], [6, 10], [8, 9], [1, 4], [2, 5]]
    folds = kfold_indices(11, 5, 12345)
    assert [v.tolist() for _, v in folds] == expected
    assert folds[0][0].tolist() == [1, 2, 4, 5, 6, 8, 9, 10]
    for train, val in folds:
        assert sorted(set(train) | set(val)) == list(range(11)) and not set(train) & set(val)


def test_make_splits_sorted_and_seeded():
    a = make_splits(list(reversed(CASES)))
    b = make_splits(CASES)
    assert a == b and len(a) == 5
    assert sorted(sum((f["val"] for f in a), [])) == sorted(CASES)


def test_group_by_regex_keeps_patients_together():
    cases = [f"pat{p}_scan{s}" for p in range(7) for s in range(3)]
    groups = parse_groups(r"^(pat\d+)_", cases)
    splits = make_splits(cases, groups=groups)
    for fold in splits:
        val_pat = {c.split("_")[0] for c in fold["val"]}
        assert not any(c.split("_")[0] in val_pat for c in fold["train"])
        assert len(fold["val"]) % 3 == 0


def test_group_by_csv(tmp_path):
    cases = [f"c{i}" for i in range(10)]
    csv = tmp_path / "groups.csv"
    csv.write_text("case,group\n" + "".join(f"c{i},p{i // 2}\n" for i in range(10)))
    splits = make_splits(cases, groups=parse_groups(str(csv), cases))
    assert all(len(f["val"]) == 2 for f in splits)
    assert all(f["val"][0][1:] == str(int(f["val"][1][1:]) - 1) for f in splits)
    csv.write_text("case,patient\nc0,p0\n")
    with pytest.raises(ConfigError, match="needs the columns 'case' and 'group'"):
        parse_groups(str(csv), cases)
    with pytest.raises(ConfigError, match="exactly one"):
        parse_groups(r"c\d", cases)


def test_file_created_then_user_file_respected(tmp_path):
    path = tmp_path / "splits.json"
    created = load_or_create_splits(path, CASES)
    assert json.loads(path.read_text()) == created
    custom = [{"train": CASES[:8], "val": CASES[8:]}, {"train": CASES[3:], "val": CASES[:3]}]
    path.write_text(json.dumps(custom))
    assert load_or_create_splits(path, CASES) == custom
    assert fold_cases(custom, 1, CASES) == (CASES[3:], CASES[:3])
    assert fold_cases(custom, "all", CASES) == (sorted(CASES), sorted(CASES))
    with pytest.raises(ConfigError, match="splits.json has 2 folds"):
        fold_cases(custom, 3, CASES)


def test_user_file_validated(tmp_path):
    path = tmp_path / "splits.json"
    path.write_text(json.dumps([{"train": CASES[:5] + ["ghost_001"], "val": CASES[5:]}]))
    with pytest.raises(ConfigError, match=r"splits.json: fold 0 'train' names 1 case\(s\).*ghost_001"):
        load_or_create_splits(path, CASES)
    path.write_text(json.dumps([{"train": CASES, "val": CASES[:1]}]))
    with pytest.raises(ConfigError, match="in both train and val"):
        load_or_create_splits(path, CASES)
    path.write_text(json.dumps({"train": CASES}))
    with pytest.raises(ConfigError, match="non-empty list"):
        load_or_create_splits(path, CASES)
