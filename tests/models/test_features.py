import pytest

from largekernel.models.features import FeatureInfo

ENTRIES = [dict(num_chs=8 * 2**i, reduction=4 * 2**i, module=f"stages.{i}") for i in range(4)]


def test_feature_info_selection_and_negative_indices():
    info = FeatureInfo(ENTRIES, out_indices=(1, -1))
    assert info.channels() == [16, 64]
    assert info.reduction() == [8, 32]
    assert info.module_name() == ["stages.1", "stages.3"]
    assert len(info) == 2 and info[1]["num_chs"] == 64


def test_feature_info_rejects_out_of_range():
    with pytest.raises(ValueError, match="out_indices"):
        FeatureInfo(ENTRIES, out_indices=(4,))
