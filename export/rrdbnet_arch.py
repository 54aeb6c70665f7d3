"""RRDBNet (ESRGAN; RealESRGAN x2plus configuration) from its published architecture, with the
parameter names of BasicSR's ``rrdbnet_arch.py`` so ``RealESRGAN_x2plus.pth`` (``params_ema``)
loads strictly. Scale 2 folds the input with a pixel unshuffle first, as the original does."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class RRDBConfig:
    scale: int = 2
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32

    @classmethod
    def narrow_test(cls) -> RRDBConfig:
        """One block, 8 features: the same graph shape in a few milliseconds per tile."""
        return cls(num_feat=8, num_block=1, num_grow_ch=4)


class ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int):
        super().__init__()
        g = num_grow_ch
        self.conv1 = nn.Conv2d(num_feat, g, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + g, g, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * g, g, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * g, g, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * g, num_feat, 3, 1, 1)
        for c in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            c.weight.data *= 0.1  # the original's residual-friendly init scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


def pixel_unshuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
    b, c, hh, hw = x.shape
    h, w = hh // scale, hw // scale
    return x.reshape(b, c, h, scale, w, scale).permute(0, 1, 3, 5, 2, 4).reshape(b, c * scale * scale, h, w)


class RRDBNet(nn.Module):
    """RGB in [0, 1], (B, 3, H, W) with H, W even for scale 2 -> (B, 3, 2H, 2W)."""

    def __init__(self, cfg: RRDBConfig = RRDBConfig()):
        super().__init__()
        self.cfg = cfg
        in_ch = 3 * {1: 16, 2: 4, 4: 1}[cfg.scale]
        f = cfg.num_feat
        self.conv_first = nn.Conv2d(in_ch, f, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(f, cfg.num_grow_ch) for _ in range(cfg.num_block)])
        self.conv_body = nn.Conv2d(f, f, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(f, f, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(f, f, 3, 1, 1)
        self.conv_hr = nn.Conv2d(f, f, 3, 1, 1)
        self.conv_last = nn.Conv2d(f, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = x
        if self.cfg.scale == 2:
            feat = pixel_unshuffle(x, 2)
        elif self.cfg.scale == 1:
            feat = pixel_unshuffle(x, 4)
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


def random_init(cfg: RRDBConfig, seed: int = 0) -> RRDBNet:
    torch.manual_seed(seed)
    return RRDBNet(cfg).eval()


def load_weights(path, cfg: RRDBConfig = RRDBConfig()) -> RRDBNet:
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        state = state.get("params_ema", state.get("params", state))
    net = RRDBNet(cfg)
    net.load_state_dict(state, strict=True)
    return net.eval()
