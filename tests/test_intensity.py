"""The one intensity rule (rls_core.intensity), case by case, and the same rule in the CLI."""
import numpy as np
import pytest
import tifffile

from rls_core.errors import InputError
from rls_core.intensity import (SATURATED_FRACTION, dtype_notes, intensity_warnings, parse_intensity_range,
                                range_warnings, to_full_scale)


@pytest.mark.parametrize("dtype, value, expected", [
    (np.uint8, 255, 1.0), (np.uint8, 51, 0.2),
    (np.uint16, 65535, 1.0), (np.uint16, 4095, 4095 / 65535),   # 12-bit data: the container's bits
    (np.uint32, 2 ** 32 - 1, 1.0),
    (np.int16, 0, 32768 / 65535), (np.int16, -32768, 0.0),    # CellProfiler shifts signed types
    (np.int32, 2 ** 31 - 1, 1.0),
    (np.float32, 0.25, 0.25), (np.bool_, True, 1.0),
])
def test_each_type_scales_as_cellprofiler_does(dtype, value, expected):
    arr = np.array([[value, 0], [0, 0]], dtype=dtype)
    assert to_full_scale(arr)[0, 0] == pytest.approx(expected, rel=1e-6)


def test_signed_types_carry_a_note_unless_a_range_is_given():
    assert "0 becomes 0.5" in dtype_notes(np.int16)[0] and "0,32767" in dtype_notes(np.int16)[0]
    assert dtype_notes(np.int16, (0.0, 4095.0)) == [] and dtype_notes(np.uint16) == []


@pytest.mark.parametrize("values, needle", [
    ([0.0, 3000.0], "values from 0 to 3000"),     # raw counts saved as float
    ([-0.5, 0.5], "values from -0.5 to 0.5"),
    ([0.0, np.nan], "1 NaN or infinite"),
    ([0.0, np.inf], "1 NaN or infinite"),
])
def test_floats_outside_0_1_or_not_finite_fail_with_the_fix(values, needle):
    with pytest.raises(InputError) as err:
        to_full_scale(np.array(values, np.float32)[None], source="a.tif")
    assert str(err.value).startswith("a.tif: ") and needle in str(err.value)
    if "values" in needle:
        assert "--intensity-range" in err.value.fix and "Manual" in err.value.fix


def test_a_given_range_maps_raw_values_of_any_type():
    assert to_full_scale(np.array([[0.0, 4095.0]], np.float32), (0.0, 4095.0)).tolist() == [[0.0, 1.0]]
    assert to_full_scale(np.array([[100, 1100]], np.uint16), (100.0, 2100.0)).tolist() == [[0.0, 0.5]]
    with pytest.raises(InputError, match="after scaling by the given range"):
        to_full_scale(np.array([[0, 5000]], np.uint16), (0.0, 4095.0))


@pytest.mark.parametrize("text, expected", [("0,4095", (0.0, 4095.0)), ("65535", (0.0, 65535.0)),
                                            ("100, 2100", (100.0, 2100.0)), (None, None)])
def test_range_option_parses(text, expected):
    assert parse_intensity_range(text) == expected


@pytest.mark.parametrize("text", ["", "a,b", "5,5", "10,1", "0,nan", "1,2,3"])
def test_bad_range_option_is_refused(text):
    with pytest.raises(InputError, match="--intensity-range expects LO,HI"):
        parse_intensity_range(text)


def test_saturation_warning_starts_above_one_percent_at_the_maximum():
    img = np.full((2, 100, 100), 0.2, np.float32)
    img[:, 0, :50] = 0.7  # channel B varies too, so only saturation can be reported
    img[0].flat[:100] = 1.0          # exactly 1 %: no warning
    img[1].flat[:101] = 1.0          # just over: warning
    w = intensity_warnings(img, ["A", "B"])
    assert len(w) == 1 and w[0].startswith("channel B is saturated (1.0 % of pixels")
    assert SATURATED_FRACTION == 0.01


def test_pixels_brighter_than_the_models_training_range_warn_above_one_percent():
    """The model's units clip them: say so, instead of a clean-looking result (and LR PSNR)."""
    img = np.full((2, 100, 100), 0.01, np.float32)
    img[0].flat[:100] = 0.5          # exactly 1 % above the range: no warning
    img[1].flat[:101] = 0.5          # just over: warning
    w = range_warnings(img, ["DNA", "NFkB"], [0.0626, 0.0626])
    assert len(w) == 1 and w[0].startswith("channel NFkB: 1.0 % of pixels are brighter than the model's training")
    assert range_warnings(img, ["DNA", "NFkB"], [1.0, 1.0]) == []


def test_constant_channel_warns_and_a_dim_but_varying_one_does_not():
    img = np.zeros((2, 16, 16), np.float32)
    img[1, 3, 3] = 0.001
    w = intensity_warnings(img, ["DNA", "NFkB"])
    assert w == ["channel DNA is constant (0 everywhere): there is nothing to super-resolve"]


def test_cli_applies_the_rule_per_field(tmp_path, generated_field, tiny_model_path):
    """One run with a file of each kind: each gets its status, and the given range reproduces
    the uint16 file's output from the same values stored as raw float counts."""
    from test_cli import read_summary

    from rls_core.cli import main

    _, lr = generated_field
    raw = np.round(np.clip(lr, 0, 1) * 0.8 * 65535).astype(np.uint16)  # 0.8: the tiny model's field clips at 1
    d = tmp_path / "lr"
    d.mkdir()
    tifffile.imwrite(d / "good.tif", raw)
    tifffile.imwrite(d / "counts.tif", raw.astype(np.float32))            # raw counts as float
    nan = raw.astype(np.float32) / 65535
    nan[0, 1, 1] = np.nan
    tifffile.imwrite(d / "nan.tif", nan)
    sat = raw.copy()
    sat[1, :4] = 65535                                                     # > 1 % at the maximum
    tifffile.imwrite(d / "sat.tif", sat)
    tifffile.imwrite(d / "signed.tif", (raw // 2).astype(np.int16))
    common = ["--model", str(tiny_model_path), "--factor", "8", "--method", "plain", "--steps", "3", "-q"]
    out = tmp_path / "sr"
    assert main(["super-resolve", *sorted(map(str, d.iterdir())), "-o", str(out), *common]) == 1
    rows = {r["field"]: r for r in read_summary(out)}
    assert rows["good"]["status"] == "ok" and rows["good"]["warnings"] == ""
    assert rows["counts"]["status"] == "failed" and "values from 0 to" in rows["counts"]["reason"]
    assert rows["nan"]["status"] == "failed" and "1 NaN or infinite" in rows["nan"]["reason"]
    assert rows["sat"]["status"] == "warning" and "channel NFkB is saturated" in rows["sat"]["warnings"]
    assert rows["signed"]["status"] == "warning" and "0 becomes 0.5" in rows["signed"]["warnings"]
    assert (out / "sat_sr.tif").exists() and not (out / "counts_sr.tif").exists()

    # the float counts with their range give the uint16 file's bytes (same field name: same seeds)
    d2 = tmp_path / "lr2"
    d2.mkdir()
    (d / "counts.tif").rename(d2 / "good.tif")
    out2 = tmp_path / "sr2"
    assert main(["super-resolve", str(d2 / "good.tif"), "-o", str(out2), *common,
                 "--intensity-range", "0,65535"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out2 / "good_sr.tif"), tifffile.imread(out / "good_sr.tif"))
