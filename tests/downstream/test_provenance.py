import pytest

from alan.downstream import check_provenance
from alan.errors import ArtifactError


def test_matching_and_partial_keys_pass():
    check_provenance({"backbone_hash": "a", "head_hash": "b", "work_size": 112}, {"backbone_hash": "a"}, what="m")


def test_model_without_provenance_is_refused():
    # an empty record would otherwise match any backbone and head
    with pytest.raises(ArtifactError, match="records no provenance") as e:
        check_provenance({}, {"backbone_hash": "a", "head_hash": "b"}, what="LV model", path="lv.json")
    assert str(e.value).startswith("lv.json: ") and "\n" not in str(e.value)
    with pytest.raises(ArtifactError, match="records no provenance"):
        check_provenance(None, {"backbone_hash": "a"}, what="m")


def test_different_hash_is_refused_with_one_line():
    with pytest.raises(ArtifactError) as e:
        check_provenance({"head_hash": "b"}, {"head_hash": "c"}, what="LV model", path="lv.json")
    assert "lv.json" in str(e.value) and "\n" not in str(e.value)


def test_no_common_key_is_refused():
    # a naming slip (e.g. "head" vs "head_hash") must not silently skip the check
    with pytest.raises(ArtifactError, match="cannot be verified"):
        check_provenance({"backbone": "a", "head": "b"}, {"backbone_hash": "a", "head_hash": "b"}, what="m")
