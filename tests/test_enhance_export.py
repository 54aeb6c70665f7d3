"""The enhancement networks as written for export: the export-friendly modulated conv is the
original's math, the full GFPGAN v1.4 / RealESRGAN x2plus shapes match the official
checkpoints' keys, an official-style checkpoint loads strictly, ONNX matches PyTorch over a
dynamic batch, and the TensorRT path (no GPU here) runs as a dry run."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from export import gfpgan_arch, rrdbnet_arch
from export.enhance_nets import SPECS, build, export_onnx, sample_input
from tests.conftest import ROOT

TOL = 1e-4  # fp32, torch vs onnxruntime


def original_modulated_conv(mc: gfpgan_arch.ModulatedConv2d, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's formulation as published: a weight per sample, grouped conv."""
    b, c, _, _ = x.shape
    s = mc.modulation(style).view(b, 1, c, 1, 1)
    w = mc.weight * s
    if mc.demodulate:
        w = w * torch.rsqrt(w.pow(2).sum([2, 3, 4]) + mc.eps).view(b, mc.out_channels, 1, 1, 1)
    w = w.view(b * mc.out_channels, c, *w.shape[3:])
    if mc.sample_mode == "upsample":
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    b, c, h, wd = x.shape
    out = F.conv2d(x.view(1, b * c, h, wd), w, padding=mc.padding, groups=b)
    return out.view(b, mc.out_channels, *out.shape[2:])


@pytest.mark.parametrize("demodulate,mode", [(True, None), (True, "upsample"), (False, None)])
def test_export_friendly_modulated_conv_is_the_original_math(demodulate, mode):
    torch.manual_seed(0)
    mc = gfpgan_arch.ModulatedConv2d(8, 6, 3 if demodulate else 1, 16, demodulate=demodulate, sample_mode=mode)
    x, style = torch.randn(3, 8, 10, 10), torch.randn(3, 16)
    with torch.no_grad():
        assert torch.allclose(mc(x, style), original_modulated_conv(mc, x, style), atol=1e-5)


def test_full_size_networks_have_the_official_shapes():
    net = gfpgan_arch.GFPGANv1Clean()  # v1.4: 512 px, channel multiplier 2
    sd = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == 86_444_252  # GFPGANv1.4.pth: ~86 M
    expect = {
        "conv_body_first.weight": (32, 3, 1, 1),
        "final_linear.weight": (16 * 512, 256 * 16),
        "stylegan_decoder.style_mlp.15.weight": (512, 512),
        "stylegan_decoder.constant_input.weight": (1, 512, 4, 4),
        "stylegan_decoder.style_convs.13.modulated_conv.weight": (1, 64, 64, 3, 3),
        "stylegan_decoder.to_rgbs.6.modulated_conv.modulation.weight": (64, 512),
        "stylegan_decoder.noises.noise14": (1, 1, 512, 512),
        "condition_scale.6.2.weight": (32, 32, 3, 3),
        "toRGB.6.weight": (3, 32, 1, 1),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    rr = rrdbnet_arch.RRDBNet().state_dict()
    assert tuple(rr["conv_first.weight"].shape) == (64, 12, 3, 3)  # x2: pixel-unshuffled input
    assert "body.22.rdb3.conv5.weight" in rr and "conv_hr.weight" in rr


@pytest.mark.parametrize("kind", ["gfpgan", "realesrgan"])
def test_official_style_checkpoint_loads_strictly(tmp_path, kind):
    net = build(kind, narrow=True, seed=3)
    path = tmp_path / "w.pth"
    torch.save({"params_ema": net.state_dict(), "params": {}}, path)
    loaded = build(kind, weights=path, narrow=True) if kind == "realesrgan" else \
        gfpgan_arch.load_weights(path, gfpgan_arch.GFPGANConfig.narrow_test())
    x = sample_input(SPECS[kind], 1)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))


@pytest.mark.parametrize("kind", ["gfpgan", "realesrgan"])
def test_onnx_matches_pytorch_over_a_dynamic_batch(tmp_path, kind):
    spec = SPECS[kind]
    net = build(kind, narrow=True)
    path = export_onnx(net, spec, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for b, hw in ((1, spec.sample_hw), (3, spec.sample_hw), (2, 48)):
        if kind == "gfpgan" and hw != 512:
            continue
        x = torch.rand(b, 3, hw, hw) * (2 if kind == "gfpgan" else 1) - (1 if kind == "gfpgan" else 0)
        with torch.no_grad():
            ref = net(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        assert got.shape == ref.shape
        worst = max(worst, float(np.abs(got - ref).max()))
    print(f"{kind}: torch vs onnxruntime max abs diff {worst:.2e}")
    assert worst < TOL


def test_missing_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(SystemExit, match="GFPGANv1.4.pth"):
        build("gfpgan", weights=tmp_path / "GFPGANv1.4.pth")


@pytest.mark.parametrize("kind,profile", [("gfpgan", "(8, 3, 512, 512)"), ("realesrgan", "(8, 3, 640, 640)")])
def test_tensorrt_dry_run_prints_plan_steps_and_config_and_writes_nothing(tmp_path, kind, profile):
    r = subprocess.run([sys.executable, "-m", "export", kind, "--random-init", "--narrow", "--target", "tensorrt",
                        "--fp16", "--dry-run", "--repository", str(tmp_path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "FP16 + FP32 fallback" in r.stdout and profile in r.stdout
    assert 'platform: "tensorrt_plan"' in r.stdout and "KIND_GPU" in r.stdout
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_config_validates(tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from export.enhance_config import enhance_config

    for target in ("onnx", "tensorrt"):
        for spec in SPECS.values():
            cfg = model_config_pb2.ModelConfig()
            text_format.Parse(str(enhance_config(spec, target)), cfg)
            assert cfg.dynamic_batching.max_queue_delay_microseconds > 0 and cfg.max_batch_size == 8
