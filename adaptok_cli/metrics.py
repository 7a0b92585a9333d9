"""Quality metrics on uint8 frames: PSNR and SSIM (Gaussian window 11, sigma 1.5, per RGB channel)."""
import math

import numpy as np
import torch
import torch.nn.functional as F


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of one frame pair (H, W, 3) uint8; identical frames give 100."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 100.0 if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _gaussian(size=11, sigma=1.5):
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean SSIM per frame for (T, H, W, 3) uint8 stacks -> (T,). Frames smaller than 11 px use a smaller window."""
    x = torch.from_numpy(a).permute(0, 3, 1, 2).double()
    y = torch.from_numpy(b).permute(0, 3, 1, 2).double()
    size = min(11, x.shape[-1], x.shape[-2])
    size -= 1 - size % 2
    g = _gaussian(size).double()
    win = (g[:, None] * g[None, :]).expand(3, 1, size, size)
    blur = lambda t: F.conv2d(t, win, groups=3)
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3)).numpy()
