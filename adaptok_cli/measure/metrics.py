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


def ssim(a: np.ndarray, b: np.ndarray, batch: int = 8) -> np.ndarray:
    """Mean SSIM per frame for (T, H, W, 3) uint8 stacks -> (T,). Frames smaller than 11 px use a smaller window.

    The Gaussian window is applied as two 1-D passes in float32 on [0, 1] values, a few frames at a
    time: the same figure as the textbook 2-D window, at a fraction of the time and memory.
    """
    size = min(11, a.shape[1], a.shape[2])
    size -= 1 - size % 2
    g = _gaussian(size).float()
    gh, gw = g.view(1, 1, size, 1).expand(3, 1, size, 1), g.view(1, 1, 1, size).expand(3, 1, 1, size)
    blur = lambda t: F.conv2d(F.conv2d(t, gh, groups=3), gw, groups=3)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    out = []
    for i in range(0, len(a), batch):
        x = torch.from_numpy(a[i:i + batch]).permute(0, 3, 1, 2).float() / 255
        y = torch.from_numpy(b[i:i + batch]).permute(0, 3, 1, 2).float() / 255
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
        out.append(s.double().mean(dim=(1, 2, 3)))
    return torch.cat(out).numpy() if out else np.zeros(0)
