"""The pixel encoder the model-free backbones share, and its random-shift augmentation.

DrQ-v2 (Yarats et al., "Mastering Visual Continuous Control: Improved Data-Augmented
Reinforcement Learning", ICLR 2022) as URLB uses it for ``obs_type=pixels``:

* :class:`PixelEncoder`: frames ``uint8 (B, C, H, W)`` (C = 3 x frame stack) scaled to
  ``x / 255 - 0.5``, a stride-2 3x3 convolution then three stride-1 ones, 32 channels each,
  ReLU after every one, flattened (``32 * 35 * 35 = 39200`` values at 84x84);
* :class:`RandomShift`: DrQ-v2's ``RandomShiftsAug``, pad 4: each frame is shifted by a
  whole number of pixels, ``(dx, dy)`` uniform in ``[-pad, pad]^2``, its border repeated;
* :func:`make_encoder`: the encoder for an observation spec (the identity for state vectors);
* :func:`zero_shot_encoder_depth`: HILP's zero-shot code (``hilp_zsrl``, ``agent/ddpg.py``'s
  ``Encoder``) keeps the stride-2 convolution and drops stride-1 ones on small frames (3 at
  sides >= 64, 2 at >= 48, else 1), with pad ``side // 21`` (3 at 64x64).

And the encoders of METRA's pixel networks and DreamerV2's world model:

* :class:`ConvEncoder`: DreamerV2's four stride-2 convolutions (METRA's ``CNN``, the same);
* :class:`FlatFrameEncoder`: a network's own encoder when every network has one (METRA's
  ``WithEncoder``): the frames at the start of a flat input are encoded, the rest (skill,
  action) passes through; :class:`FlatFrames` makes that flat input from frames.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from agents.parts.nets import orthogonal_init

# DrQ-v2's encoder: channels of every convolution and the number of stride-1 ones after the
# stride-2 one.
CHANNELS, STRIDE_ONE_LAYERS = 32, 3


def weight_init(module: nn.Module) -> None:
    """URLB's ``utils.weight_init``: orthogonal weights (gain sqrt(2), ReLU's, for
    convolutions), zero biases."""
    if isinstance(module, nn.Conv2d):
        nn.init.orthogonal_(module.weight, nn.init.calculate_gain("relu"))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    else:
        orthogonal_init(module)


def conv_output_size(size: int, stride_one_layers: int = STRIDE_ONE_LAYERS) -> int:
    """Side of the encoder's last feature map for a frame side ``size`` (no padding:
    3x3 stride 2, then ``stride_one_layers`` 3x3 stride 1)."""
    return (size - 3) // 2 + 1 - 2 * stride_one_layers


def zero_shot_encoder_depth(side: int) -> int:
    """Stride-1 convolutions HILP's zero-shot encoder puts after its stride-2 one for frames of
    height ``side``: 3 (URLB's encoder) at >= 64, 2 at >= 48, else 1."""
    return 3 if side >= 64 else 2 if side >= 48 else 1


class PixelEncoder(nn.Module):
    """DrQ-v2 / URLB's convolutional encoder.

    Args:
        obs_shape: ``(C, H, W)`` of the frames.
        stride_one_layers: 3x3 stride-1 convolutions after the stride-2 one (URLB's 3).

    Attributes:
        repr_dim: size of the flat output, ``32 * h * w`` of the last feature map.
    """

    def __init__(self, obs_shape: tuple[int, int, int], stride_one_layers: int = STRIDE_ONE_LAYERS):
        super().__init__()
        channels, height, width = obs_shape
        if stride_one_layers < 0:
            raise ValueError(f"stride_one_layers={stride_one_layers} must be >= 0")
        out_h = conv_output_size(height, stride_one_layers)
        out_w = conv_output_size(width, stride_one_layers)
        if out_h < 1 or out_w < 1:
            least = 4 * stride_one_layers + 3
            raise ValueError(
                f"frames of {height}x{width} are too small for the encoder's convolutions "
                f"(min {least}x{least})"
            )
        self.repr_dim = CHANNELS * out_h * out_w
        layers: list[nn.Module] = [nn.Conv2d(channels, CHANNELS, 3, stride=2), nn.ReLU()]
        for _ in range(stride_one_layers):
            layers += [nn.Conv2d(CHANNELS, CHANNELS, 3, stride=1), nn.ReLU()]
        self.convnet = nn.Sequential(*layers, nn.Flatten())
        self.apply(weight_init)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` pixel values in [0, 255] (uint8 or float) -> ``(B, repr_dim)``."""
        return self.convnet(observation.float() / 255.0 - 0.5)


class RandomShift(nn.Module):
    """DrQ-v2's random shift: replicate-pad each frame by ``pad`` pixels, then crop an
    ``H x W`` window at an integer offset drawn uniformly from ``[0, 2 * pad]`` in each axis,
    independently per sample (the same shift for all channels of a sample: a frame stack
    moves together). The offsets ``(B, 2)`` are ``(x, y)``, horizontal first, as DrQ-v2
    draws them; a caller may pass its own (``shift``: the zero-shot agents draw them through
    their ``randomness``).

    Done as two gathers of clamped indices (pixel ``i`` of the crop is pixel
    ``clamp(i + offset - pad, 0, H - 1)`` of the frame), with no Python loop over the batch
    and no padded copy. DrQ-v2 resamples the padded image by ``grid_sample`` at pixel
    centres, which gives the same integer shifts; gathering keeps them exact and keeps the
    input's dtype: ``uint8`` in, ``uint8`` out (the encoder does the scaling).
    """

    def __init__(self, pad: int = 4):
        super().__init__()
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.pad = pad

    def forward(
        self,
        frames: torch.Tensor,
        generator: torch.Generator | None = None,
        shift: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, C, H, W)`` -> shifted ``(B, C, H, W)``, same dtype; ``generator`` (on the
        frames' device) draws the shifts unless ``shift`` ``(B, 2)`` (integers in
        ``[0, 2 * pad]``, ``(x, y)``) gives them."""
        if frames.ndim != 4:
            raise ValueError(f"RandomShift expects frames (B, C, H, W), got shape {tuple(frames.shape)}")
        n, c, h, w = frames.shape
        if shift is None:
            shift = torch.randint(0, 2 * self.pad + 1, (n, 2), device=frames.device, generator=generator)
        offset = shift.to(device=frames.device, dtype=torch.long) - self.pad
        rows = (torch.arange(h, device=frames.device) + offset[:, 1:]).clamp(0, h - 1)  # (B, H)
        cols = (torch.arange(w, device=frames.device) + offset[:, :1]).clamp(0, w - 1)  # (B, W)
        shifted = frames.gather(2, rows[:, None, :, None].expand(n, c, h, w))
        return shifted.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def make_encoder(obs_spec) -> tuple[nn.Module, int]:
    """The encoder for an observation spec and the size of what it outputs: the identity for
    a state size ``D`` (an int), :class:`PixelEncoder` for frames ``(C, H, W)``."""
    if isinstance(obs_spec, numbers.Integral) and not isinstance(obs_spec, bool):
        return nn.Identity(), int(obs_spec)
    try:
        shape = tuple(int(size) for size in obs_spec)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3:
        raise ValueError(f"observation spec {obs_spec!r}: expected a state size (int) or frames (C, H, W)")
    encoder = PixelEncoder(shape)
    return encoder, encoder.repr_dim


class ConvEncoder(nn.Module):
    """DreamerV2's image encoder, which METRA's ``CNN`` also is: four stride-2 convolutions of
    ``depth`` x 1, 2, 4, 8 channels (kernel 4, ELU, torch's default initialisation), flattened
    (1536 values for 64x64 frames at depth 48). uint8 frames are scaled to
    ``x / 255 - offset``: DreamerV2's 0.5, METRA's 0."""

    def __init__(self, obs_shape: tuple[int, int, int], depth: int = 48, offset: float = 0.5):
        super().__init__()
        if min(obs_shape[1:]) < 46:
            raise ValueError(
                f"frames of {obs_shape[1]}x{obs_shape[2]} are too small for four stride-2 4x4 "
                "convolutions: set obs.size>=46 (or, for METRA, agent.pixel_encoders=shared)"
            )
        self.offset = offset
        layers: list[nn.Module] = []
        channels = obs_shape[0]
        for i in range(4):
            layers += [nn.Conv2d(channels, depth * 2**i, 4, stride=2), nn.ELU()]
            channels = depth * 2**i
        self.net = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            self.embed_dim = self.net(torch.zeros(1, *obs_shape)).shape[-1]

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        """``(..., C, H, W)`` -> ``(..., embed_dim)``."""
        x = observation.float() / 255.0 - self.offset if observation.dtype == torch.uint8 else observation
        batch = x.shape[:-3]
        return self.net(x.reshape(-1, *x.shape[-3:])).reshape(*batch, -1)


class FlatFrames(nn.Module):
    """Frames ``(B, C, H, W)`` as a flat float input ``(B, C * H * W)`` in [0, 255], which a
    skill and an action can be appended to (the backbone's ``encoder`` when each network has
    its own: ``pixel_encoders=per_network``)."""

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return observation.flatten(start_dim=-3).float()


class FlatFrameEncoder(nn.Module):
    """One network's own frame encoder (METRA's ``Encoder`` in ``WithEncoder``): the first
    ``C * H * W`` entries of a flat input ``(B, C * H * W + k)`` are the frames (pixel values in
    [0, 255]), encoded by a :class:`ConvEncoder` at METRA's scale (``x / 255``); the other ``k``
    (skill, action) pass through after the features: ``(B, embed_dim + k)``.

    Args:
        frame_shape: ``(C, H, W)``.
        depth: the convolutions' first channel count (METRA's 48).
    """

    def __init__(self, frame_shape: tuple[int, int, int], depth: int = 48):
        super().__init__()
        self.frame_shape = tuple(int(size) for size in frame_shape)
        self.frame_size = math.prod(self.frame_shape)
        self.conv = ConvEncoder(self.frame_shape, depth, offset=0.0)
        self.embed_dim = self.conv.embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x[:, : self.frame_size].reshape(-1, *self.frame_shape) / 255.0
        return torch.cat([self.conv(frames), x[:, self.frame_size :]], dim=-1)
