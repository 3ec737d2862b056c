"""Look-alike datasets for the reader tests (writers in fixtures.py)."""

from __future__ import annotations

import pytest
from fixtures import acdc_patient, camus_patient, echonet_example, tmed2_example, write_acdc, write_camus_2019


@pytest.fixture
def echonet_data(tmp_path):
    return echonet_example(tmp_path / "echonet")


@pytest.fixture
def tmed2_data(tmp_path):
    return tmed2_example(tmp_path / "tmed2")


@pytest.fixture
def camus_data(tmp_path):
    patients = {"patient0001": {"4CH": camus_patient(seed=1), "2CH": camus_patient(ed=4, es=0, seed=2)}}
    return write_camus_2019(tmp_path / "camus", patients), patients


@pytest.fixture
def acdc_data(tmp_path):
    patients = {"patient001": acdc_patient(seed=1), "patient002": acdc_patient(group="NOR", ed=4, es=1, seed=2)}
    return write_acdc(tmp_path / "acdc", patients), patients
