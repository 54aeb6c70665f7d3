"""GFPGAN v1 "clean" (U-Net encoder + StyleGAN2 decoder with SFT), written from the published
architecture (GFPGAN, Wang et al. 2021; TencentARC/GFPGAN ``gfpganv1_clean_arch.py``) for
export. Module and parameter names follow the official network so ``GFPGANv1.4.pth``
(``params_ema``) loads with ``strict=True``.

Two deliberate differences from the training code, both for export:
- ``ModulatedConv2d`` modulates the input activations and demodulates the output instead of
  building a weight per sample. Same math (conv is linear in each input channel), but the
  weights stay constants, so the ONNX graph has a dynamic batch axis and TensorRT accepts it.
- Noise is always the stored ``noises.noise<i>`` buffers (``randomize_noise=False``): a
  served model must be deterministic, and ``normal_()`` does not export.

``narrow`` scales every channel count (the official argument); tests and the demo use a
narrow network with a fixed random init because no weights can be downloaded here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class GFPGANConfig:
    out_size: int = 512
    num_style_feat: int = 512
    channel_multiplier: int = 2
    num_mlp: int = 8
    narrow: float = 1.0

    @classmethod
    def narrow_test(cls) -> GFPGANConfig:
        """Same topology and crop size as v1.4, 1/16 of the channels: ~0.1 s per 512 px face
        on 2 CPU cores instead of ~6 s. Used by the tests, `make` and the demo."""
        return cls(num_style_feat=32, narrow=1 / 16)


def _channels(multiplier: int, narrow: float) -> dict[int, int]:
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * multiplier, 128: 128 * multiplier,
            256: 64 * multiplier, 512: 32 * multiplier, 1024: 16 * multiplier}
    return {k: max(1, int(v * narrow)) for k, v in base.items()}


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated conv as x*s -> conv(W) -> *d, d = rsqrt(sum_{i,k}(W*s)^2 + eps)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, sample_mode: str | None = None, eps: float = 1e-8):
        super().__init__()
        self.out_channels, self.demodulate, self.sample_mode, self.eps = out_channels, demodulate, sample_mode, eps
        self.modulation = nn.Linear(num_style_feat, in_channels, bias=True)
        nn.init.kaiming_normal_(self.modulation.weight, a=0, mode="fan_in", nonlinearity="linear")
        nn.init.constant_(self.modulation.bias, 1.0)
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size)
                                   / math.sqrt(in_channels * kernel_size ** 2))
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = self.modulation(style)  # (b, c_in)
        w = self.weight[0]  # (c_out, c_in, k, k)
        if self.sample_mode == "upsample":
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        elif self.sample_mode == "downsample":
            x = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        out = F.conv2d(x * s[:, :, None, None], w, padding=self.padding)
        if self.demodulate:
            # sum over c_in and the kernel of (w * s)^2 = (s^2) @ (sum_k w^2)^T
            wsq = w.pow(2).sum(dim=(2, 3))  # (c_out, c_in)
            demod = torch.rsqrt(s.pow(2) @ wsq.t() + self.eps)  # (b, c_out)
            out = out * demod[:, :, None, None]
        return out


class StyleConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, sample_mode: str | None = None):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, kernel_size, num_style_feat,
                                              demodulate=demodulate, sample_mode=sample_mode)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.activate = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = self.modulated_conv(x, style) * 2 ** 0.5
        out = out + self.weight * noise  # (1, 1, h, w) stored noise, broadcast over the batch
        return self.activate(out + self.bias)


class ToRGB(nn.Module):
    def __init__(self, in_channels: int, num_style_feat: int, upsample: bool = True):
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            if self.upsample:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    def __init__(self, num_channel: int, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, num_channel, size, size))

    def forward(self, batch_like: torch.Tensor) -> torch.Tensor:
        # expand from a tensor (not an int) so the batch axis stays symbolic in ONNX
        return self.weight.expand(batch_like.shape[0], -1, -1, -1)


class NormStyleCode(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)


class StyleGAN2GeneratorCSFT(nn.Module):
    """The decoder: StyleGAN2 with SFT conditions from the U-Net on half of the channels."""

    def __init__(self, cfg: GFPGANConfig):
        super().__init__()
        ch = _channels(cfg.channel_multiplier, cfg.narrow)
        f = cfg.num_style_feat
        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(cfg.num_mlp):  # unused with latent input (v1.4), kept for the weights' keys
            mlp += [nn.Linear(f, f), nn.LeakyReLU(0.2)]
        self.style_mlp = nn.Sequential(*mlp)
        self.constant_input = ConstantInput(ch[4], 4)
        self.style_conv1 = StyleConv(ch[4], ch[4], 3, f)
        self.to_rgb1 = ToRGB(ch[4], f, upsample=False)
        self.log_size = int(math.log2(cfg.out_size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.num_latent = self.log_size * 2 - 2
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, r, r))
        c_in = ch[4]
        for i in range(3, self.log_size + 1):
            c_out = ch[2 ** i]
            self.style_convs.append(StyleConv(c_in, c_out, 3, f, sample_mode="upsample"))
            self.style_convs.append(StyleConv(c_out, c_out, 3, f))
            self.to_rgbs.append(ToRGB(c_out, f))
            c_in = c_out

    def forward(self, latent: torch.Tensor, conditions: list[torch.Tensor]) -> torch.Tensor:
        noise = [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]
        out = self.style_conv1(self.constant_input(latent), latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv1, conv2, n1, n2, to_rgb in zip(self.style_convs[::2], self.style_convs[1::2],
                                                 noise[1::2], noise[2::2], self.to_rgbs):
            out = conv1(out, latent[:, i], n1)
            if i < len(conditions):  # SFT on the second half of the channels
                half = out.shape[1] // 2
                same, sft = out[:, :half], out[:, half:]
                out = torch.cat([same, sft * conditions[i - 1] + conditions[i]], dim=1)
            out = conv2(out, latent[:, i + 1], n2)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, mode: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.scale_factor = 0.5 if mode == "down" else 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), 0.2)
        out = F.interpolate(out, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        out = F.leaky_relu(self.conv2(out), 0.2)
        x = F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        return out + self.skip(x)


class GFPGANv1Clean(nn.Module):
    """v1.3/v1.4 configuration: latent input, a different w per layer, SFT on half the channels.
    Input: RGB in [-1, 1], (B, 3, 512, 512); output: the restored face, same range and shape."""

    def __init__(self, cfg: GFPGANConfig = GFPGANConfig()):
        super().__init__()
        self.cfg = cfg
        unet = _channels(cfg.channel_multiplier, cfg.narrow * 0.5)  # the U-Net is half as wide
        self.log_size = int(math.log2(cfg.out_size))
        self.conv_body_first = nn.Conv2d(3, unet[cfg.out_size], 1)
        c_in = unet[cfg.out_size]
        self.conv_body_down = nn.ModuleList()
        for i in range(self.log_size, 2, -1):
            self.conv_body_down.append(ResBlock(c_in, unet[2 ** (i - 1)], "down"))
            c_in = unet[2 ** (i - 1)]
        self.final_conv = nn.Conv2d(c_in, unet[4], 3, 1, 1)
        c_in = unet[4]
        self.conv_body_up = nn.ModuleList()
        self.toRGB = nn.ModuleList()  # only for training losses; kept so the weights load strictly
        self.condition_scale = nn.ModuleList()
        self.condition_shift = nn.ModuleList()
        for i in range(3, self.log_size + 1):
            c_out = unet[2 ** i]
            self.conv_body_up.append(ResBlock(c_in, c_out, "up"))
            self.toRGB.append(nn.Conv2d(c_out, 3, 1))
            c_in = c_out
        self.num_latent = self.log_size * 2 - 2
        self.final_linear = nn.Linear(unet[4] * 16, self.num_latent * cfg.num_style_feat)
        self.stylegan_decoder = StyleGAN2GeneratorCSFT(cfg)
        for i in range(3, self.log_size + 1):
            c = unet[2 ** i]
            for seq in (self.condition_scale, self.condition_shift):
                seq.append(nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(c, c, 3, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.leaky_relu(self.conv_body_first(x), 0.2)
        skips: list[torch.Tensor] = []
        for down in self.conv_body_down:
            feat = down(feat)
            skips.insert(0, feat)
        feat = F.leaky_relu(self.final_conv(feat), 0.2)
        latent = self.final_linear(feat.flatten(1)).view(-1, self.num_latent, self.cfg.num_style_feat)
        conditions = []
        for i, up in enumerate(self.conv_body_up):
            feat = up(feat + skips[i])
            conditions.append(self.condition_scale[i](feat))
            conditions.append(self.condition_shift[i](feat))
        return self.stylegan_decoder(latent, conditions)


def random_init(cfg: GFPGANConfig, seed: int = 0) -> GFPGANv1Clean:
    """A network with a fixed random init (no weights can be downloaded here)."""
    torch.manual_seed(seed)
    return GFPGANv1Clean(cfg).eval()


def load_weights(path, cfg: GFPGANConfig = GFPGANConfig()) -> GFPGANv1Clean:
    """Load an official checkpoint (``params_ema`` if present, as GFPGANer does), strictly."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        state = state.get("params_ema", state.get("params", state))
    net = GFPGANv1Clean(cfg)
    net.load_state_dict(state, strict=True)
    return net.eval()
