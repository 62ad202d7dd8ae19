"""How a feature visualisation's image is parameterised: a Fourier spectrum, decorrelated colour.

Optimising pixels directly gives high-frequency noise. Lucid's remedy, kept here: the
free parameters are the image's 2-D Fourier coefficients, scaled by 1/frequency so every
frequency starts with equal energy, and its colours are expressed in a decorrelated
basis (the square root of the colour covariance of natural images), then squashed into
[0, 1] by a sigmoid.
"""

from __future__ import annotations

import numpy as np
import torch

# Square root of ImageNet's colour covariance, from an SVD (Lucid's published values):
# columns are the decorrelated colour directions in RGB.
COLOUR_CORRELATION = np.array([[0.26, 0.09, 0.02],
                               [0.27, 0.00, -0.05],
                               [0.27, -0.09, 0.03]], dtype=np.float32)
INITIAL_SD = 0.01


def frequency_scale(size: int, decay: float = 1.0) -> torch.Tensor:
    """``[size, size // 2 + 1]`` factors that give every spatial frequency equal energy."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    frequencies = np.sqrt(fx * fx + fy * fy)
    scale = 1.0 / np.maximum(frequencies, 1.0 / size) ** decay
    return torch.from_numpy((scale * size).astype(np.float32))


class FourierImage(torch.nn.Module):
    """A batch of images in [0, 1], ``[B, channels, size, size]``, whose parameter is a spectrum.

    ``spectra`` are the initial coefficients, ``[B, channels, size, size // 2 + 1, 2]``
    (real and imaginary parts), normally drawn with :func:`initial_spectra`.
    """

    def __init__(self, spectra: torch.Tensor, decorrelate: bool = True):
        super().__init__()
        self.size = spectra.shape[2]
        self.spectrum = torch.nn.Parameter(spectra)
        self.register_buffer("scale", frequency_scale(self.size).to(spectra.device), persistent=False)
        colours = spectra.shape[1]
        self.decorrelate = decorrelate and colours == 3
        basis = COLOUR_CORRELATION / np.linalg.norm(COLOUR_CORRELATION, axis=0).max()
        self.register_buffer("basis", torch.from_numpy(basis).to(spectra.device), persistent=False)

    def forward(self) -> torch.Tensor:
        coefficients = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfft2(coefficients, s=(self.size, self.size)) / 4.0
        if self.decorrelate:
            image = torch.nn.functional.conv2d(image, self.basis[:, :, None, None])
        return torch.sigmoid(image)


def initial_spectra(generators: list[np.random.Generator], channels: int, size: int) -> torch.Tensor:
    """Small random spectra, one per generator (so each image depends only on its own seed)."""
    shape = (channels, size, size // 2 + 1, 2)
    return torch.from_numpy(np.stack([g.normal(0.0, INITIAL_SD, shape) for g in generators]).astype(np.float32))
