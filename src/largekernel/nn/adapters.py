"""Modality adapters: turn raw audio, time series, point clouds and video into what a 1-D, 2-D or
3-D large-kernel backbone eats.

Two routes per modality, the authors' (UniRepLKNet feeds everything to a 2-D image network) and a
native one (a 1-D or 3-D UniRepLKNet, ``spatial_dims=1|3``):

============  ==============================================  =======================================
modality      authors' way (2-D map)                          native
============  ==============================================  =======================================
audio         :func:`log_mel_spectrogram` ``(1, mels, T)``     :func:`mfcc_sequence` ``(n_mfcc, T)``
              (librosa's mel filterbank)                      (librosa), for ``spatial_dims=1``
time series   :class:`SeriesToImage`: windows embedded and     ``(C, L)`` as it is, ``spatial_dims=1``
              reshaped to a square ``(1, S, S)`` map
point cloud   :func:`depth_views`: one depth image per view    :func:`voxelize`: occupancy grid
              ``(views, S, S)``                               ``(1, G, G, G)``, ``spatial_dims=3``
video         :func:`fold_frames`: ``T`` frames tiled into     ``(C, T, H, W)`` as it is,
              one ``(C, rows*H, cols*W)`` map                 ``spatial_dims=3``
============  ==============================================  =======================================

Meshes are sampled with trimesh (see :mod:`largekernel.data.pointcloud`); mel and MFCC features come
from librosa (imported lazily); everything else is plain PyTorch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "log_mel_spectrogram",
    "mfcc_sequence",
    "SeriesToImage",
    "depth_views",
    "voxelize",
    "fold_frames",
    "unfold_frames",
    "normalise_points",
]


# ----------------------------------------------------------------------------------------- audio
def _as_wave(wave: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().numpy()
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"wave must be a non-empty mono 1-D signal, got shape {wave.shape}")
    return wave


def log_mel_spectrogram(
    wave: np.ndarray | torch.Tensor,
    sample_rate: int,
    n_mels: int = 128,
    hop_ms: float = 10.0,
    win_ms: float = 25.0,
    num_frames: int | None = None,
) -> torch.Tensor:
    """Log-mel filterbank of a mono waveform as a 1-channel image ``(1, n_mels, frames)``.

    The authors' audio input: 128 mel bins at a 10 ms hop (25 ms windows), in decibels relative to
    the loudest bin (``librosa.power_to_db(ref=np.max)``), optionally cut or zero-padded (at the
    floor value) to ``num_frames`` frames (they use 128).

    Args:
        wave: Mono signal, 1-D.
        sample_rate: Samples per second.
        n_mels: Mel bins (image height).
        hop_ms: Hop between frames in milliseconds.
        win_ms: Analysis window in milliseconds.
        num_frames: Fixed number of frames (image width); ``None`` keeps all.

    Example:
        >>> t = np.arange(8000) / 8000
        >>> log_mel_spectrogram(np.sin(2 * np.pi * 440 * t), 8000, n_mels=64).shape
        torch.Size([1, 64, 101])
    """
    import librosa

    wave = _as_wave(wave, sample_rate)
    hop = max(1, round(sample_rate * hop_ms / 1000))
    win = max(hop, round(sample_rate * win_ms / 1000))
    n_fft = 1 << (win - 1).bit_length()
    power = librosa.feature.melspectrogram(
        y=wave, sr=sample_rate, n_fft=n_fft, hop_length=hop, win_length=win, n_mels=n_mels, power=2.0
    )
    db = librosa.power_to_db(power, ref=np.max, top_db=80.0)
    out = torch.from_numpy(db.astype(np.float32))
    if num_frames is not None:
        if out.shape[1] >= num_frames:
            out = out[:, :num_frames]
        else:
            out = F.pad(out, (0, num_frames - out.shape[1]), value=float(out.min()))
    return out.unsqueeze(0)


def mfcc_sequence(
    wave: np.ndarray | torch.Tensor, sample_rate: int, n_mfcc: int = 13, hop_ms: float = 10.0
) -> torch.Tensor:
    """MFCCs of a mono waveform as a sequence ``(n_mfcc, frames)`` for a 1-D backbone (librosa).

    Example:
        >>> mfcc_sequence(np.random.default_rng(0).normal(size=4000), 8000).shape
        torch.Size([13, 51])
    """
    import librosa

    wave = _as_wave(wave, sample_rate)
    hop = max(1, round(sample_rate * hop_ms / 1000))
    m = librosa.feature.mfcc(y=wave, sr=sample_rate, n_mfcc=n_mfcc, hop_length=hop)
    return torch.from_numpy(m.astype(np.float32))


# ----------------------------------------------------------------------------------- time series
class SeriesToImage(nn.Module):
    """Embed windows of a series and reshape the tokens into one square map (the authors' way).

    ``(N, C, L)`` -> zero-pad ``L`` to a multiple of ``patch_len`` -> ``T = L / patch_len`` windows
    of ``C * patch_len`` values -> ``nn.Linear`` to ``E = side**2 / T`` values each -> the ``T * E``
    values, token after token, reshaped row-major to ``(N, 1, side, side)``.

    Args:
        in_chans: Channels of the series.
        seq_len: Series length ``L``.
        patch_len: Window length.
        side: Side of the output map; ``side**2`` must be a multiple of the number of windows.

    Raises:
        ValueError: If ``side**2`` is not divisible by the number of windows (the message says which
            sides would work) or an argument is not a positive int.

    Example:
        >>> embed = SeriesToImage(in_chans=1, seq_len=150, patch_len=10, side=30)
        >>> embed(torch.randn(4, 1, 150)).shape
        torch.Size([4, 1, 30, 30])
    """

    def __init__(self, in_chans: int, seq_len: int, patch_len: int, side: int, *, device=None, dtype=None):
        super().__init__()
        for name, value in (("in_chans", in_chans), ("seq_len", seq_len), ("patch_len", patch_len), ("side", side)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_chans, self.seq_len, self.patch_len, self.side = in_chans, seq_len, patch_len, side
        self.num_tokens = math.ceil(seq_len / patch_len)
        if side * side % self.num_tokens:
            ok = [s for s in range(1, 8 * side + self.num_tokens + 1) if s * s % self.num_tokens == 0][:5]
            raise ValueError(
                f"side**2 ({side * side}) must be a multiple of the number of windows "
                f"ceil(seq_len / patch_len) = {self.num_tokens}; sides that work: {ok}"
            )
        self.embed_dim = side * side // self.num_tokens
        self.proj = nn.Linear(in_chans * patch_len, self.embed_dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_chans or x.shape[2] != self.seq_len:
            raise ValueError(
                f"x must be (N, {self.in_chans}, {self.seq_len}) (in_chans, seq_len), got {tuple(x.shape)}"
            )
        pad = self.num_tokens * self.patch_len - self.seq_len
        x = F.pad(x, (0, pad))
        n = x.shape[0]
        # (N, C, T, P) -> (N, T, C * P): one token per window, all channels of the window together
        tokens = x.reshape(n, self.in_chans, self.num_tokens, self.patch_len).permute(0, 2, 1, 3)
        tokens = self.proj(tokens.reshape(n, self.num_tokens, -1))
        return tokens.reshape(n, 1, self.side, self.side)

    def extra_repr(self) -> str:
        return f"in_chans={self.in_chans}, seq_len={self.seq_len}, patch_len={self.patch_len}, side={self.side}"


# ----------------------------------------------------------------------------------- point clouds
def normalise_points(points: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Centre a point cloud ``(P, 3)`` at its centroid and scale it into the unit ball.

    Example:
        >>> float(normalise_points(torch.tensor([[0., 0, 0], [2, 0, 0]])).abs().max())
        1.0
    """
    p = torch.as_tensor(points, dtype=torch.float32)
    if p.dim() != 2 or p.shape[1] != 3 or p.shape[0] == 0:
        raise ValueError(f"points must be a non-empty (P, 3) array, got shape {tuple(p.shape)}")
    p = p - p.mean(dim=0)
    radius = p.norm(dim=1).max()
    return p / radius if radius > 0 else p


def _grid_index(coords: torch.Tensor, size: int) -> torch.Tensor:
    """Map coordinates in [-1, 1] to integer cells 0..size-1."""
    return ((coords + 1) * 0.5 * size).floor().clamp_(0, size - 1).long()


def depth_views(points: np.ndarray | torch.Tensor, size: int = 32) -> torch.Tensor:
    """Three orthographic depth images of a point cloud in the unit ball: ``(3, size, size)``.

    View ``a`` looks along axis ``a`` (x, y, z) from the negative side: each pixel of the plane
    spanned by the two other axes holds the nearness ``(1 - depth) / 2`` of the closest point that
    projects into it (1 = nearest possible, 0 = empty pixel). The authors project point clouds to
    several 2-D views for their image network; here the views are the image channels.

    Example:
        >>> depth_views(torch.tensor([[0.0, 0.0, -1.0]]), size=4)[2, 2, 2].item()
        1.0
    """
    p = torch.as_tensor(points, dtype=torch.float32)
    if p.dim() != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (P, 3), got shape {tuple(p.shape)}")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    p = p.clamp(-1, 1)
    out = torch.zeros(3, size * size)
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        cell = _grid_index(p[:, u], size) * size + _grid_index(p[:, v], size)
        near = (1 - p[:, axis]) / 2
        out[axis].scatter_reduce_(0, cell, near, reduce="amax", include_self=True)
    return out.reshape(3, size, size)


def voxelize(points: np.ndarray | torch.Tensor, grid: int = 16) -> torch.Tensor:
    """Binary occupancy grid ``(1, grid, grid, grid)`` of a point cloud in the unit ball.

    Cell ``(i, j, k)`` is 1 when a point falls into it (x -> i, y -> j, z -> k), for a 3-D backbone.

    Example:
        >>> voxelize(torch.tensor([[0.0, 0.0, 0.0], [0.99, 0.99, 0.99]]), grid=4).sum().item()
        2.0
    """
    p = torch.as_tensor(points, dtype=torch.float32)
    if p.dim() != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (P, 3), got shape {tuple(p.shape)}")
    if isinstance(grid, bool) or not isinstance(grid, int) or grid <= 0:
        raise ValueError(f"grid must be a positive int, got {grid!r}")
    idx = _grid_index(p.clamp(-1, 1), grid)
    flat = (idx[:, 0] * grid + idx[:, 1]) * grid + idx[:, 2]
    occ = torch.zeros(grid**3)
    occ[flat] = 1.0
    return occ.reshape(1, grid, grid, grid)


# ------------------------------------------------------------------------------------------ video
def fold_frames(video: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Tile the ``T = rows * cols`` frames of a clip ``(..., C, T, H, W)`` into one map ``(..., C, rows*H, cols*W)``.

    Frame ``t`` lands in tile row ``t // cols``, column ``t % cols`` (the authors feed 16 frames as a
    4 x 4 mosaic to their image network).

    Example:
        >>> fold_frames(torch.zeros(2, 3, 8, 16, 16), rows=2, cols=4).shape
        torch.Size([2, 3, 32, 64])
    """
    if video.dim() < 4:
        raise ValueError(f"video must be (..., C, T, H, W), got shape {tuple(video.shape)}")
    *lead, c, t, h, w = video.shape
    if rows * cols != t:
        raise ValueError(f"rows * cols must equal the number of frames T={t}, got rows={rows}, cols={cols}")
    x = video.reshape(*lead, c, rows, cols, h, w)
    x = x.movedim(-2, -3)  # (..., C, rows, H, cols, W)
    return x.reshape(*lead, c, rows * h, cols * w)


def unfold_frames(image: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`fold_frames`: ``(..., C, rows*H, cols*W)`` -> ``(..., C, rows*cols, H, W)``.

    Example:
        >>> v = torch.randn(1, 4, 5, 6)
        >>> torch.equal(unfold_frames(fold_frames(v, 2, 2), 2, 2), v)
        True
    """
    *lead, c, hh, ww = image.shape
    if hh % rows or ww % cols:
        raise ValueError(f"image of size {hh}x{ww} does not split into {rows}x{cols} tiles")
    h, w = hh // rows, ww // cols
    x = image.reshape(*lead, c, rows, h, cols, w).movedim(-2, -3)
    return x.reshape(*lead, c, rows * cols, h, w)
