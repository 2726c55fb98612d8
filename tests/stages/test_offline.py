"""Offline by default: the demo's data stages run with every socket refused, and no model code from a
hub runs unless a param says so."""

from __future__ import annotations

import shutil
import socket

import pytest
import yaml
from dvc_spec import ROOT
from stagerun import run_stage

from empathy_pipeline.core import params


class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test (unix sockets are not network)."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise NetworkUsed(f"network connection attempted: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(NetworkUsed(str(a))))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_the_guard_itself_refuses_a_connection(no_network):
    with pytest.raises(NetworkUsed), socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.connect(("127.0.0.1", 9))


def test_cheap_demo_stages_run_with_sockets_blocked(tmp_path, no_network):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "data" / "sample", tmp_path / "data" / "sample")
    for stage in ("environment", "prepare", "rate", "split"):
        run_stage(stage, tmp_path)
    assert (tmp_path / "data/split/sensibility.parquet").exists()
    assert yaml.safe_load((tmp_path / "metrics/provenance.json").read_text())["profile"] == "demo"


def test_trust_remote_code_is_off_unless_a_param_says_so():
    assert params.Models.model_fields["trust_remote_code"].default is False
    assert params.load("models", ROOT / "params.yaml").trust_remote_code is False
