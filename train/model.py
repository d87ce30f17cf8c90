"""Baseline model on the reference model's inputs (REFERENCE.md 8.3).

Inputs, as PixelDiffusion consumes them:

* condition = ``cat([eo (1), x (C), amax_C(x_valid_mask) (1)])``: 52 channels for 50 levels;
* ``coords`` (lat, lon degrees) as the unit-sphere vector ``(cos φ cos λ, cos φ sin λ, sin φ)`` and
  ``date`` (YYYYMMDD) as a non-leap day of year ``2π·doy/365 -> (sin, cos)``; both reach every
  U-Net block through FiLM (scale and shift per channel);
* output: C levels (z-scored kelvin, like y).

Losses: masked MSE ``Σ(mask·(target − pred)²) / Σmask`` (0 when the mask is empty), in the
reference's **standard** mode (target y on ``y_valid_mask``) or **ambient** mode (target x on
``x_valid_mask & y_valid_mask``, the condition built from an x thinned further by dropping observed
entries). ``kind='diffusion'`` trains the same U-Net as an x0-parameterised conditional denoiser
(noisy target concatenated to the condition, timestep in the FiLM embedding) and samples with
deterministic DDIM.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import LossConfig, ModelConfig

#: Cumulative days before each month in a non-leap year (the model's calendar).
_MONTH_START = torch.tensor([0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334])
_MONTH_DAYS = torch.tensor([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


# --------------------------------------------------------------------------------------------
# Inputs


def build_condition(eo: torch.Tensor, x: torch.Tensor, x_valid_mask: torch.Tensor) -> torch.Tensor:
    """``(B, C+2, H, W)`` = eo, x, and x_valid_mask collapsed over levels with ``amax`` (one channel)."""
    mask = x_valid_mask.to(x.dtype).amax(dim=1, keepdim=True)
    return torch.cat([eo.to(x.dtype), x, mask], dim=1)


def date_features(date: torch.Tensor) -> torch.Tensor:
    """``(B, 2)`` = (sin, cos) of ``2π·doy/365`` for YYYYMMDD ints on the non-leap calendar.

    Raises ValueError for an impossible date, Feb 29 included (as the reference model does; the
    loaders map Feb 29 to Feb 28 by default).
    """
    date = date.reshape(-1).to(torch.int64)
    month, day = (date // 100) % 100, date % 100
    ok = (month >= 1) & (month <= 12)
    m = month.clamp(1, 12) - 1
    ok &= (day >= 1) & (day <= _MONTH_DAYS.to(date.device)[m])
    if not bool(ok.all()):
        raise ValueError(f"invalid YYYYMMDD date(s) for the non-leap calendar: {date[~ok].tolist()}")
    doy = _MONTH_START.to(date.device)[m] + day - 1
    angle = 2 * math.pi * doy.to(torch.float32) / 365.0
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=1)


def coord_features(coords: torch.Tensor) -> torch.Tensor:
    """``(B, 3)`` unit-sphere position of (lat, lon) in degrees."""
    lat, lon = torch.deg2rad(coords[:, 0].float()), torch.deg2rad(coords[:, 1].float())
    return torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], dim=1)


def timestep_features(t: torch.Tensor, dim: int, steps: int) -> torch.Tensor:
    """Sinusoidal embedding ``(B, dim)`` of diffusion timesteps (scaled to [0, 1000))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1))
    arg = (t.float() * (1000.0 / steps))[:, None] * freqs[None]
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
    return F.pad(emb, (0, dim - emb.shape[1]))


# --------------------------------------------------------------------------------------------
# Losses and masks


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Σ(mask·(target − pred)²) / Σmask`` over the whole batch; 0 (with a gradient path) if empty."""
    m = mask.to(torch.float32)
    err = (target.float() - pred.float()) ** 2
    total = m.sum()
    return (err * m).sum() / total.clamp_min(1.0)


def further_mask(observed: torch.Tensor, drop_prob: float, *, shared_spatial: bool = True, min_kept: int = 0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Ambient-mode thinning: ``observed`` (B, C, H, W) bool with each observed entry dropped with
    probability ``drop_prob``; one (B, 1, H, W) draw shared by every level when ``shared_spatial``.

    At least ``min_kept`` originally observed entries per sample stay (pixels when shared, entries
    otherwise), or all of them when fewer were observed: the ``min_kept`` with the lowest random
    draws are restored, so which ones is random too.
    """
    b = observed.shape[0]
    unit = observed.any(dim=1, keepdim=True) if shared_spatial else observed
    u = torch.rand(unit.shape, generator=generator, device=unit.device)
    keep = unit & (u >= drop_prob)
    if min_kept > 0:
        flat = torch.where(unit, u, torch.full_like(u, 2.0)).reshape(b, -1)
        k = min(min_kept, flat.shape[1])
        kth = flat.kthvalue(k, dim=1).values.reshape((b,) + (1,) * (unit.ndim - 1))
        keep |= unit & (u <= kth)
    return observed & keep


def loss_terms(batch: dict, loss: LossConfig, generator: torch.Generator | None = None):
    """``(condition, target, loss_mask, cond_mask)`` of one batch for the configured loss mode.

    standard: condition from (eo, x, x_valid_mask), target y on y_valid_mask.
    ambient: target x on x_valid_mask & y_valid_mask; the condition sees x only where the further
    mask keeps it (``cond_mask``), so the model learns to fill observed entries it did not see.
    """
    eo, x, xm, y, ym = batch["eo"], batch["x"], batch["x_valid_mask"], batch["y"], batch["y_valid_mask"]
    if loss.mode == "standard":
        return build_condition(eo, x, xm), y, ym, xm
    observed = xm & ym
    kept = further_mask(observed, loss.further_drop_prob, shared_spatial=loss.shared_spatial_mask,
                        min_kept=loss.min_kept_observed_pixels, generator=generator)
    return build_condition(eo, x * kept, kept), x, observed, kept


# --------------------------------------------------------------------------------------------
# Network


class FiLMBlock(nn.Module):
    """conv3x3 -> GroupNorm -> FiLM(embedding) -> SiLU, twice."""

    def __init__(self, cin: int, cout: int, emb: int):
        super().__init__()
        groups = math.gcd(cout, 8)
        self.conv1, self.norm1 = nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout)
        self.conv2, self.norm2 = nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout)
        self.film = nn.Linear(emb, 2 * cout)
        nn.init.zeros_(self.film.weight)  # start as a plain U-Net; the embedding learns its effect
        nn.init.zeros_(self.film.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm1(self.conv1(h)) * (1 + scale) + shift)
        return F.silu(self.norm2(self.conv2(h)))


class UNet(nn.Module):
    """Compact U-Net: ``levels`` poolings, channels doubling from ``base``, FiLM in every block."""

    def __init__(self, cin: int, cout: int, base: int, levels: int, emb: int):
        super().__init__()
        widths = [base * 2**i for i in range(levels + 1)]
        self.down = nn.ModuleList([FiLMBlock(cin if i == 0 else widths[i - 1], widths[i], emb) for i in range(levels)])
        self.mid = FiLMBlock(widths[levels - 1], widths[levels], emb)
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(levels))])
        self.dec = nn.ModuleList([FiLMBlock(2 * widths[i], widths[i], emb) for i in reversed(range(levels))])
        self.out = nn.Conv2d(widths[0], cout, 1)
        self.multiple = 2**levels

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        H, W = h.shape[-2:]
        # Pad to a multiple of 2**levels so any tile size works; crop back at the end.
        h = F.pad(h, (0, -W % self.multiple, 0, -H % self.multiple))
        skips = []
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
            h = F.max_pool2d(h, 2)
        h = self.mid(h, emb)
        for up, block in zip(self.up, self.dec):
            h = block(torch.cat([up(h), skips.pop()], dim=1), emb)
        return self.out(h)[..., :H, :W]


class Baseline(nn.Module):
    """The baseline on the reference's inputs; ``kind='unet'`` regresses y, ``'diffusion'`` denoises
    with x0-parameterisation. Use :meth:`training_loss` for a batch and :meth:`predict` for a field."""

    def __init__(self, channels: int, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.channels, self.cfg = channels, cfg
        diffusion = cfg.kind == "diffusion"
        cin = channels + 2 + (channels if diffusion else 0)
        extra = cfg.embed_dim if diffusion else 0
        self.embed = nn.Sequential(nn.Linear(5 + extra, cfg.embed_dim), nn.SiLU(), nn.Linear(cfg.embed_dim, cfg.embed_dim))
        self.net = UNet(cin, channels, cfg.base_channels, cfg.levels, cfg.embed_dim)
        if diffusion:
            self.register_buffer("alpha_bar", _cosine_alpha_bar(cfg.diffusion_steps), persistent=False)

    def embedding(self, coords: torch.Tensor, date: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        feats = [coord_features(coords), date_features(date).to(coords.device)]
        if t is not None:
            feats.append(timestep_features(t, self.cfg.embed_dim, self.cfg.diffusion_steps))
        return self.embed(torch.cat(feats, dim=1))

    def forward(self, cond: torch.Tensor, coords: torch.Tensor, date: torch.Tensor,
                noisy: torch.Tensor | None = None, t: torch.Tensor | None = None) -> torch.Tensor:
        """Network output (B, C, H, W): y for the U-Net, the x0 estimate for diffusion."""
        h = cond if noisy is None else torch.cat([noisy, cond], dim=1)
        return self.net(h, self.embedding(coords, date, t))

    def training_loss(self, batch: dict, loss: LossConfig, generator: torch.Generator | None = None) -> torch.Tensor:
        """Masked MSE of one batch in the configured mode (x0 target for diffusion)."""
        cond, target, mask, kept = loss_terms(batch, loss, generator)
        if self.cfg.kind == "unet":
            return masked_mse(self(cond, batch["coords"], batch["date"]), target, mask)
        b = target.shape[0]
        t = torch.randint(0, self.cfg.diffusion_steps, (b,), generator=generator, device=target.device)
        ab = self.alpha_bar[t].view(b, 1, 1, 1)
        noise = torch.randn(target.shape, generator=generator, device=target.device)
        noisy = ab.sqrt() * target + (1 - ab).sqrt() * noise
        if loss.mode == "ambient":
            noisy = noisy * kept  # the reference's apply_to_noisy_branch
        return masked_mse(self(cond, batch["coords"], batch["date"], noisy, t), target, mask)

    @torch.no_grad()
    def predict(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """The model's estimate of the dense field y from the batch's eo and x (no further thinning)."""
        cond = build_condition(batch["eo"], batch["x"], batch["x_valid_mask"])
        if self.cfg.kind == "unet":
            return self(cond, batch["coords"], batch["date"])
        return self._ddim(cond, batch["coords"], batch["date"], generator)

    def _ddim(self, cond, coords, date, generator):
        b, (h, w) = cond.shape[0], cond.shape[-2:]
        steps = torch.linspace(self.cfg.diffusion_steps - 1, 0, self.cfg.sample_steps, device=cond.device).round().long()
        y = torch.randn((b, self.channels, h, w), generator=generator, device=cond.device)
        x0 = y
        for i, t in enumerate(steps):
            ab = self.alpha_bar[t]
            x0 = self(cond, coords, date, y, t.expand(b))
            eps = (y - ab.sqrt() * x0) / (1 - ab).sqrt()
            ab_next = self.alpha_bar[steps[i + 1]] if i + 1 < len(steps) else torch.ones((), device=cond.device)
            y = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
        return x0


def _cosine_alpha_bar(steps: int, s: float = 0.008) -> torch.Tensor:
    """Cumulative signal fraction of the cosine schedule (Nichol & Dhariwal), clipped away from 0/1."""
    t = torch.linspace(0, 1, steps + 1)
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (f[1:] / f[0]).clamp(1e-4, 0.9999)
