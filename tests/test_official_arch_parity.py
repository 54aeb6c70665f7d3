"""The project's own networks (``export/gfpgan_arch.py``, ``export/rrdbnet_arch.py``) against
the official ones: ``gfpgan`` 1.3.8 (``GFPGANv1Clean``) and ``basicsr`` 1.4.2 (``RRDBNet``),
installed by ``make test`` (Makefile target ``official-nets``: ``--no-deps``).

Each test makes one seeded random state dict with the official network, saves it as an
official-style checkpoint (``{"params_ema": ...}``), loads that file into the official network
the way GFPGANer / RealESRGANer do (``params_ema``, ``strict=True``) and into the project's
network through its real loader (``load_weights``, ``strict=True``, no key mapping: the names
are the official ones), then runs one input through both in fp32 and compares
(max abs diff <= 1e-4, printed).

The state dict is the official random init plus seeded noise on every tensor (10 % of the
tensor's spread, or 0.05 where the init is a constant): otherwise the biases, the noise
strengths (init 0) and the modulation biases (init 1) would all be constants and a wrong
bias or noise path could hide. GFPGAN runs in the v1.3/v1.4 configuration GFPGANer builds
(``input_is_latent``, ``different_w``, ``sft_half``) with ``randomize_noise=False``: the
official network then injects its stored ``noises.noise<i>`` buffers, which are in the state
dict and which the project's network always uses, so both outputs are deterministic.

Why the official packages are imported without their ``__init__``: ``import gfpgan`` runs
``gfpgan/__init__.py``, which imports ``gfpgan.utils`` -> ``facexlib`` (face detection and
parsing networks, filterpy, numba), and ``import basicsr`` imports ``basicsr.data``,
``.losses``, ``.metrics``, ``.models``, ``.train`` (scipy, scikit-image, lmdb, addict, yapf,
and ``torchvision.transforms.functional_tensor``, gone from torchvision 0.29). None of that is
network code. So the two top-level packages (and ``gfpgan.archs``, whose ``__init__`` imports
every gfpgan arch) are entered as empty package modules pointing at their real directories;
everything below them is imported for real from the installed files: ``basicsr.archs`` (its
``__init__`` imports all of BasicSR's archs), ``basicsr.ops``, ``basicsr.utils``,
``gfpgan.archs.gfpganv1_clean_arch`` and ``stylegan2_clean_arch``. No extra package and no
``functional_tensor`` alias is needed for that, and the stubs are removed from
``sys.modules`` again once the classes are loaded.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from export import gfpgan_arch, rrdbnet_arch

TOL = 1e-4  # fp32, same math in a different formulation (the modulated conv)
PINNED = {"gfpgan": "1.3.8", "basicsr": "1.4.2"}  # Makefile: OFFICIAL_NETS


def _import_official() -> types.SimpleNamespace:
    specs = {name: importlib.util.find_spec(name) for name in PINNED}
    missing = [name for name, spec in specs.items() if spec is None]
    if missing:
        pytest.skip(f"official {', '.join(missing)} not installed: `make test` installs them "
                    f"(target official-nets: pip install --no-deps {' '.join(f'{k}=={v}' for k, v in PINNED.items())})")
    before = set(sys.modules)
    stubs = {"basicsr": Path(specs["basicsr"].origin).parent, "gfpgan": Path(specs["gfpgan"].origin).parent}
    stubs["gfpgan.archs"] = stubs["gfpgan"] / "archs"
    try:
        for name, path in stubs.items():
            if name not in sys.modules:  # a real import already done elsewhere is used as it is
                pkg = types.ModuleType(name)
                pkg.__path__ = [str(path)]
                pkg.__file__ = str(path / "__init__.py")
                sys.modules[name] = pkg
        gfpgan_mod = importlib.import_module("gfpgan.archs.gfpganv1_clean_arch")
        rrdb_mod = importlib.import_module("basicsr.archs.rrdbnet_arch")
    finally:
        for name in set(sys.modules) - before:
            if name.split(".")[0] in PINNED:
                del sys.modules[name]
    return types.SimpleNamespace(
        GFPGANv1Clean=gfpgan_mod.GFPGANv1Clean, RRDBNet=rrdb_mod.RRDBNet,
        files=(gfpgan_mod.__file__, rrdb_mod.__file__),
        versions={name: importlib.metadata.version(name) for name in PINNED})


@pytest.fixture(scope="module")
def official() -> types.SimpleNamespace:
    ns = _import_official()
    print(f"official networks: {ns.versions} from {ns.files}")
    return ns


def random_state_dict(net: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The network's own (seeded) init plus seeded noise on every tensor, so that no parameter
    or buffer is left at a constant init value."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in net.state_dict().items():
        spread = float(v.std()) if v.numel() > 1 and float(v.std()) > 0 else 0.5
        out[k] = v + 0.1 * spread * torch.randn(v.shape, generator=g, dtype=v.dtype)
    return out


def load_official(net: torch.nn.Module, path: Path) -> torch.nn.Module:
    """As GFPGANer / RealESRGANer load a checkpoint: ``params_ema`` if present, strictly."""
    ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    net.load_state_dict(ckpt["params_ema"] if "params_ema" in ckpt else ckpt["params"], strict=True)
    return net.eval()


def report(name: str, ref: torch.Tensor, got: torch.Tensor, t0: float) -> float:
    assert got.shape == ref.shape and got.dtype == ref.dtype == torch.float32
    diff = float((got - ref).abs().max())
    print(f"{name}: max abs diff {diff:.2e} (output |max| {float(ref.abs().max()):.3f}, "
          f"std {float(ref.std()):.3f}), {time.perf_counter() - t0:.1f} s")
    assert float(ref.std()) > 1e-2, "degenerate output: the comparison would prove nothing"
    return diff


GFPGAN_CASES = [
    # the configuration the tests, `make` and the demo export: v1.4 topology at 1/16 width
    pytest.param(gfpgan_arch.GFPGANConfig.narrow_test(), 2, id="narrow_test-512"),
    # other arguments, to check that the project's config maps onto the official constructor
    pytest.param(gfpgan_arch.GFPGANConfig(out_size=256, num_style_feat=64, channel_multiplier=1,
                                          num_mlp=2, narrow=1 / 8), 2, id="cm1-256"),
    # GFPGANv1.4.pth itself: 86 M parameters, ~25 s on 2 cores
    pytest.param(gfpgan_arch.GFPGANConfig(), 1, id="v1.4-full", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("cfg,batch", GFPGAN_CASES)
def test_gfpgan_matches_official(official, tmp_path, cfg, batch):
    t0 = time.perf_counter()
    torch.manual_seed(0)
    ref_net = official.GFPGANv1Clean(
        out_size=cfg.out_size, num_style_feat=cfg.num_style_feat, channel_multiplier=cfg.channel_multiplier,
        decoder_load_path=None, fix_decoder=False, num_mlp=cfg.num_mlp, input_is_latent=True,
        different_w=True, narrow=cfg.narrow, sft_half=True)  # the arguments GFPGANer uses for v1.3/v1.4
    path = tmp_path / "GFPGAN-random.pth"
    torch.save({"params_ema": random_state_dict(ref_net, seed=1)}, path)
    ref_net = load_official(ref_net, path)
    net = gfpgan_arch.load_weights(path, cfg)  # the project's loader for official checkpoints
    x = torch.rand(batch, 3, cfg.out_size, cfg.out_size, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        ref, _ = ref_net(x, return_rgb=False, randomize_noise=False)
        got = net(x)
    assert report(f"GFPGANv1Clean {cfg} batch {batch}", ref, got, t0) <= TOL


RRDB_CASES = [
    pytest.param(rrdbnet_arch.RRDBConfig(scale=s, num_feat=8, num_block=2, num_grow_ch=4), 32, id=f"x{s}-small")
    for s in (2, 4, 1)
] + [
    # RealESRGAN_x2plus.pth / RealESRGAN_x4plus.pth: 64 features, 23 blocks
    pytest.param(rrdbnet_arch.RRDBConfig(scale=s), 32, id=f"x{s}-full", marks=pytest.mark.slow) for s in (2, 4)
]


@pytest.mark.parametrize("cfg,hw", RRDB_CASES)
def test_rrdbnet_matches_official(official, tmp_path, cfg, hw):
    t0 = time.perf_counter()
    torch.manual_seed(0)
    ref_net = official.RRDBNet(num_in_ch=3, num_out_ch=3, scale=cfg.scale, num_feat=cfg.num_feat,
                               num_block=cfg.num_block, num_grow_ch=cfg.num_grow_ch)
    path = tmp_path / "RealESRGAN-random.pth"
    torch.save({"params_ema": random_state_dict(ref_net, seed=1)}, path)
    ref_net = load_official(ref_net, path)
    net = rrdbnet_arch.load_weights(path, cfg)
    x = torch.rand(2, 3, hw, hw, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, got = ref_net(x), net(x)
    assert ref.shape == (2, 3, hw * cfg.scale, hw * cfg.scale)
    assert report(f"RRDBNet {cfg}", ref, got, t0) <= TOL
