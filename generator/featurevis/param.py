"""How a feature visualisation's image is parameterised: a Fourier spectrum, decorrelated colour.

Optimising pixels directly gives high-frequency noise. Lucid's remedy, kept here: the
free parameters are the image's 2-D Fourier coefficients, scaled by 1/frequency so every
frequency starts with equal energy, and its colours are expressed in a decorrelated
basis (the square root of the colour covariance of natural images), then squashed into
[0, 1] by a sigmoid. The basis is for RGB: images of any other number of channels (one,
for a grayscale model) are parameterised by their spectrum alone. Images may be any
``(height, width)``.
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


def frequency_scale(height: int, width: int, decay: float = 1.0) -> torch.Tensor:
    """``[height, width // 2 + 1]`` factors that give every spatial frequency equal energy."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    frequencies = np.sqrt(fx * fx + fy * fy)
    scale = 1.0 / np.maximum(frequencies, 1.0 / max(height, width)) ** decay
    return torch.from_numpy((scale * np.sqrt(height * width)).astype(np.float32))


class FourierImage(torch.nn.Module):
    """A batch of images in [0, 1], ``[B, channels, height, width]``, whose parameter is a spectrum.

    ``spectra`` are the initial coefficients, ``[B, channels, height, width // 2 + 1, 2]``
    (real and imaginary parts), normally drawn with :func:`initial_spectra`; ``width`` is
    given, since an odd and the even width below it have spectra of the same shape.
    ``decorrelate`` applies only to 3 channels (RGB); other channel counts are never mixed.
    """

    def __init__(self, spectra: torch.Tensor, decorrelate: bool = True, width: int | None = None):
        super().__init__()
        self.height = spectra.shape[2]
        self.width = width if width is not None else 2 * (spectra.shape[3] - 1)
        if self.width // 2 + 1 != spectra.shape[3]:
            raise ValueError(f"a spectrum of {spectra.shape[3]} columns is not of an image {self.width} wide")
        self.spectrum = torch.nn.Parameter(spectra)
        self.register_buffer("scale", frequency_scale(self.height, self.width).to(spectra.device), persistent=False)
        colours = spectra.shape[1]
        self.decorrelate = decorrelate and colours == 3
        basis = COLOUR_CORRELATION / np.linalg.norm(COLOUR_CORRELATION, axis=0).max()
        self.register_buffer("basis", torch.from_numpy(basis).to(spectra.device), persistent=False)

    def forward(self) -> torch.Tensor:
        coefficients = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfft2(coefficients, s=(self.height, self.width)) / 4.0
        if self.decorrelate:
            image = torch.nn.functional.conv2d(image, self.basis[:, :, None, None])
        return torch.sigmoid(image)


def initial_spectra(generators: list[np.random.Generator], channels: int, size: tuple[int, int]) -> torch.Tensor:
    """Small random spectra of ``size = (height, width)`` images, one per generator (so each
    image depends only on its own seed)."""
    height, width = size
    shape = (channels, height, width // 2 + 1, 2)
    return torch.from_numpy(np.stack([g.normal(0.0, INITIAL_SD, shape) for g in generators]).astype(np.float32))
