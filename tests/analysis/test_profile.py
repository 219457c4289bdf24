"""Profiler: MACs agree with count_macs and the published figures; bytes by hand; timing; roofs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import largekernel
from largekernel.analysis.peak import MachinePeak, measure_peak
from largekernel.analysis.profile import parse_input_size, profile_model
from largekernel.models.counting import count_macs


@pytest.mark.parametrize("name, published_g", [("unireplknet_a", 0.64), ("unireplknet_p", 1.57)])
def test_macs_agree_with_count_macs_and_published(name, published_g):
    with torch.device("meta"):
        model = largekernel.create_model(name, deploy=True)
    p = profile_model(model, (1, 3, 224, 224), measure=False)
    assert p.total_macs == count_macs(model, (1, 3, 224, 224))
    assert abs(p.total_macs / 1e9 - published_g) < 0.01


def test_training_form_macs_agree_with_count_macs():
    torch.manual_seed(0)
    model = largekernel.create_model("unireplknet_a", num_classes=10, depths=(1, 1, 2, 1), dims=(8, 16, 24, 32),
                                     kernel_sizes=((3,), (13,), (7, 3), (0,)))
    p = profile_model(model, "2x3x64x64", measure=False)
    assert p.total_macs == count_macs(model, (2, 3, 64, 64))
    assert p.form == "train"
    assert profile_model(model, "2x3x64x64", deploy=True, measure=False).form == "deploy"


def test_counts_bytes_and_intensity_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, groups=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    p = profile_model(net, (2, 3, 6, 6), measure=False, accelerate=None)
    rows = {layer.name: layer for layer in p.layers}
    conv, bn, relu, fc = rows["0"], rows["1"], rows["2"], rows["4"]
    out_elems = 2 * 8 * 36
    assert conv.macs == out_elems * 3 * 9
    assert conv.flops == 2 * conv.macs
    assert conv.bytes == 4 * (2 * 3 * 36 + out_elems + 8 * 3 * 9 + 8)
    assert conv.intensity == pytest.approx(conv.flops / conv.bytes)
    assert conv.params == 8 * 3 * 9 + 8 and conv.kind == "dense conv 3x3"
    assert bn.macs == 0 and bn.params == 16
    assert bn.bytes == 4 * (2 * out_elems + 4 * 8 + 1 * 2)  # weight, bias, running mean/var + int64 count
    assert relu.bytes == 4 * 2 * out_elems
    assert fc.macs == 2 * 5 * 288
    t = profile_model(net, (2, 3, 6, 6), measure=False, accelerate=None, train=True)
    conv_t = {layer.name: layer for layer in t.layers}["0"]
    assert conv_t.flops == 6 * conv.macs
    in_b, out_b, par_b = 4 * 2 * 3 * 36, 4 * out_elems, 4 * (8 * 3 * 9 + 8)
    assert conv_t.bytes == (in_b + out_b + par_b) + (out_b + 2 * in_b + 2 * par_b)


def test_measured_profile_tables_and_roofline(tmp_path):
    torch.manual_seed(0)
    model = largekernel.create_model("unireplknet_a", num_classes=10, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32),
                                     kernel_sizes=((3,), (13,), (7,), (3,)))
    peak = MachinePeak(matmul_gflops=50.0, bandwidth_gbs=10.0, threads=1, matmul_size=1, copy_bytes=1)
    for train, accelerate, clock in ((False, True, "wall"), (True, False, "cpu")):
        p = profile_model(model, "2x3x32x32", train=train, accelerate=accelerate, repeats=2, warmup=0, peak=peak,
                          clock=clock)
        assert p.engine is accelerate and p.meta["clock"] == clock
        assert p.step_time_s > 0 and p.hooked_time_s > 0
        timed = [layer for layer in p.layers if layer.time_s is not None]
        assert len(timed) == len(p.layers) and all(layer.time_s >= 0 for layer in timed)
        for layer in timed:
            ideal = max(layer.flops / 50e9, layer.bytes / 10e9)
            assert layer.ideal_s == pytest.approx(ideal)
            assert layer.lost_s == pytest.approx(layer.time_s - ideal)
        gap = p.efficiency_gap(5)
        assert [g.lost_s for g in gap] == sorted((g.lost_s for g in gap), reverse=True)
        assert "| layer |" in p.format_gap_table(5) and "| kind |" in p.format_gap_table(5, by_kind=True)
        kinds = {row["kind"]: row for row in p.by_kind()}
        assert kinds["depthwise conv 13x13"]["layers"] == 1
    p.plot_roofline(tmp_path / "roof.png")
    assert (tmp_path / "roof.png").stat().st_size > 1000
    assert model.training  # the profiled model is a copy; the original is untouched


def test_measure_peak_is_positive_and_roofline_bounded():
    peak = measure_peak(128, 2**20, repeats=1)
    assert peak.matmul_gflops > 0 and peak.bandwidth_gbs > 0
    assert peak.attainable_gflops(1e-3) == pytest.approx(1e-3 * peak.bandwidth_gbs)
    assert peak.attainable_gflops(1e9) == peak.matmul_gflops
    with pytest.raises(ValueError, match="n must"):
        measure_peak(0)
    with pytest.raises(ValueError, match="clock"):
        measure_peak(64, clock="sundial")


def test_bad_input():
    with pytest.raises(ValueError, match="--input"):
        parse_input_size("1x3xfoo", "--input")
    with pytest.raises(ValueError, match="input_size"):
        profile_model(nn.Conv2d(3, 3, 3), "3x3", measure=False)
    assert parse_input_size("1,3,8,8") == (1, 3, 8, 8)
    with torch.device("meta"):
        m = nn.Conv2d(3, 3, 3)
    with pytest.raises(ValueError, match="meta"):
        profile_model(m, (1, 3, 8, 8))
