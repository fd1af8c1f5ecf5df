from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnssl.config.enums import Normalization, look_up_option
from nnssl.config.plans import IntensityStats, Plans
from nnssl.errors import NnsslError


def _plans(**overrides) -> Plans:
    kwargs = dict(
        dataset_name="Dataset500_Test",
        spacing=(3.0, 0.8, 0.8),
        normalization=Normalization.CT,
        intensity_stats=IntensityStats(mean=-300.0, std=400.0, median=-50.0, percentile_00_5=-1000.0,
                                       percentile_99_5=1200.0, min=-1024.0, max=3000.0),
        patch_size=(64, 160, 160),
        downstream_patch_size=(64, 160, 160),
        median_shape=(100, 400, 400),
        original_median_spacing=(3.0, 0.8, 0.8),
        decisions=("spacing: median",),
    )
    kwargs.update(overrides)
    return Plans(**kwargs)


def test_json_round_trip(tmp_path: Path) -> None:
    plans = _plans()
    plans.save(tmp_path / "nnsslPlans.json")
    assert Plans.load(tmp_path / "nnsslPlans.json") == plans
    assert not list(tmp_path.glob("*.tmp")), "atomic write left a temp file"


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    data = _plans().to_dict()
    data["patchsize"] = [1, 2, 3]
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(NnsslError, match="unknown plans keys \\['patchsize'\\]"):
        Plans.load(tmp_path / "p.json")


def test_ct_normalization_needs_statistics() -> None:
    with pytest.raises(NnsslError, match="needs intensity_stats"):
        _plans(intensity_stats=None)
    assert _plans(normalization=Normalization.ZSCORE, intensity_stats=None).intensity_stats is None


def test_missing_plans_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(NnsslError, match="nnssl_plan_experiment"):
        Plans.load(tmp_path / "absent.json")


def test_wrong_version_is_refused(tmp_path: Path) -> None:
    data = _plans().to_dict() | {"version": 99}
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(NnsslError, match="version 99"):
        Plans.load(tmp_path / "p.json")


def test_look_up_option_suggests() -> None:
    assert look_up_option("ct", [n.value for n in Normalization], "normalization") == "ct"
    with pytest.raises(NnsslError, match="did you mean 'zscore'"):
        look_up_option("zscor", [n.value for n in Normalization], "normalization")
