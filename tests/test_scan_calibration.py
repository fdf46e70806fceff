"""The threshold a model directory carries: read, written, refused when broken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtrace.scan.calibration import (
    UNCALIBRATED_THRESHOLD,
    CalibrationError,
    read_calibration,
    write_calibration,
)


def test_write_then_read(tmp_path: Path) -> None:
    write_calibration(tmp_path, 0.8125, 0.001, "inner CV", model_version="v2")
    c = read_calibration(tmp_path)
    assert (c.threshold, c.target_fpr, c.source, c.model_version, c.calibrated) == (
        0.8125,
        0.001,
        "inner CV",
        "v2",
        True,
    )


def test_uncalibrated_default_and_config_fallback(tmp_path: Path) -> None:
    c = read_calibration(tmp_path)
    assert c.threshold == UNCALIBRATED_THRESHOLD and c.target_fpr is None and not c.calibrated
    c = read_calibration(tmp_path, {"calibration": {"threshold": 0.7, "target_fpr": 0.01}})
    assert (c.threshold, c.target_fpr) == (0.7, 0.01) and "config.json" in c.source


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "unreadable"),
        ('{"target_fpr": 0.01}', "'threshold' missing"),
        ('{"threshold": 0.5}', "'target_fpr' missing"),
        ('{"threshold": "high", "target_fpr": 0.01}', "threshold must be a number"),
        ('{"threshold": 0.5, "target_fpr": 1.5}', "target_fpr must be between 0 and 1"),
        (
            '{"format": "other", "version": 1, "threshold": 0.5, "target_fpr": 0.01}',
            "unsupported calibration",
        ),
        ("[0.5, 0.01]", "must be a JSON object"),
        ('{"threshold": 0.5, "target_fpr": 0.01, "probability": {"method": "isotonic"}}', "method 'platt'"),
        (
            '{"threshold": 0.5, "target_fpr": 0.01, '
            '"probability": {"method": "platt", "slope": "x", "intercept": 0}}',
            "slope must be a number",
        ),
        (
            '{"threshold": 0.5, "target_fpr": 0.01, '
            '"probability": {"method": "platt", "slope": -1, "intercept": 0}}',
            "slope must be positive",
        ),
        (
            '{"format": "runtrace-calibration", "version": 3, "threshold": 0.5, "target_fpr": 0.01}',
            "unsupported calibration",
        ),
    ],
)
def test_broken_calibration_is_one_line_naming_the_file(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "calibration.json").write_text(content)
    with pytest.raises(CalibrationError, match=message) as info:
        read_calibration(tmp_path)
    assert str(tmp_path / "calibration.json") in str(info.value) and "\n" not in str(info.value)


def test_written_file_is_plain_json(tmp_path: Path) -> None:
    path = write_calibration(tmp_path, 0.5, 0.01, "s")
    assert json.loads(path.read_text())["format"] == "runtrace-calibration"
    with pytest.raises(CalibrationError):
        write_calibration(tmp_path, 1.5, 0.01, "s")


def test_probabilities_near_0_or_1_are_printed_with_the_digits_that_tell_them_apart():
    from runtrace.scan.render import probability_text

    assert probability_text(0.5) == "0.500" and probability_text(0.123456) == "0.123"
    # An n-gram model's 1 % FPR threshold sits this close to 1: three decimals would print 1.000 for
    # the threshold and for a score on either side of it.
    assert probability_text(0.9999747) == "0.999975"
    assert probability_text(0.9999747) != probability_text(0.9999701)
    assert probability_text(0.0004) == "0.00040"
    assert probability_text(1.0) == "1.00000000"
