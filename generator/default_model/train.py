"""Train the default model from scratch, reproducibly: ``python -m generator.default_model.train``.

The network sees a fresh procedural batch every step (no image is seen twice), is scored
on a held-out set drawn from another seed, and is written as safetensors with its
held-out accuracy in the file's metadata. Two choices let the learned first-layer kernels
dominate their random initial values: the first layer starts at a tenth of its default
scale, and pixel noise in the images makes a kernel pay for every component that does
not help the task.

Two more make its gradients perceptually aligned, so that its feature visualisations are
pictures rather than high-frequency texture (Santurkar et al. 2019; Engstrom et al. 2019):

- augmentation: every image is moved, scaled, and changed in brightness and contrast;
- adversarial training (Madry et al. 2018): the network learns from images perturbed
  against it, each found by a few steps of projected gradient ascent of the loss within
  an L2 ball of radius ``eps`` in [0, 1] pixel units.

One more gives it a curve circuit to read (:class:`CurveTuning`): the first units of the
3x3 branch of each mixed block (``TUNED_UNITS``) are asked to be curve detectors, their
orientations evenly spaced. Which units of the layer before they read, and through which
spatial pattern, is learnt.

Training has two phases, each with its own optimiser and image seed: a clean one, where
the task is learnt at a third of the cost per step, then an adversarial one from there,
whose radius grows from 0 to ``eps`` over its first quarter.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from . import INPUT_SIZE, MEAN, STD, WEIGHTS, NarrowInceptionV1
from .procedural import ATTRIBUTES, draw

TRAIN_SEED, TEST_SEED = 0, 1
ADVERSARIAL_SEED = 1000  # added to the training seed for the adversarial phase's images
# Curve units asked for (:class:`CurveTuning`): how many of each branch, its first channels.
TUNED_UNITS = {("mixed3a", "conv_3x3"): 32, ("mixed3b", "conv_3x3"): 64}


def normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN)[:, None, None]
    std = torch.tensor(STD)[:, None, None]
    return (images - mean) / std


def attribute_logits(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split the classifier's outputs into one group of logits per attribute."""
    groups, start = {}, 0
    for name, values in ATTRIBUTES.items():
        groups[name] = logits[:, start : start + len(values)]
        start += len(values)
    return groups


def class_names() -> list[str]:
    return [f"{name}={value}" for name, values in ATTRIBUTES.items() for value in values]


def task_loss(model: torch.nn.Module, images: torch.Tensor, labels: dict[str, torch.Tensor],
              reduction: str = "mean") -> torch.Tensor:
    """The sum over attributes of the cross-entropy of ``images`` (in [0, 1])."""
    groups = attribute_logits(model(normalise(images)))
    return sum(F.cross_entropy(logits, labels[name], reduction=reduction) for name, logits in groups.items())


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: int = 4096, seed: int = TEST_SEED, eps: float = 0.0,
             steps: int = 0) -> dict[str, float]:
    """Held-out accuracy per attribute, and of all attributes at once; with ``eps`` and
    ``steps``, on images perturbed against the model (:func:`perturbed`)."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    hits = {name: 0 for name in ATTRIBUTES}
    hits["all"] = 0
    for _ in range(images // 256):
        batch = draw(256, INPUT_SIZE, g)
        pictures = batch.images
        if eps > 0 and steps > 0:
            with torch.enable_grad():
                pictures = perturbed(model, pictures, batch.labels, eps, steps)
        groups = attribute_logits(model(normalise(pictures)))
        correct = torch.ones(256, dtype=torch.bool)
        for name, logits in groups.items():
            right = logits.argmax(1) == batch.labels[name]
            hits[name] += int(right.sum())
            correct &= right
        hits["all"] += int(correct.sum())
    model.train()
    return {name: count / (images // 256 * 256) for name, count in hits.items()}


class CurveTuning:
    """A training loss that asks chosen units to be curve detectors, each of its own orientation.

    The first ``count`` channels of a branch's convolution (after its ReLU) are given
    preferred orientations ``k * 360 / count`` degrees. On an image whose curve faces
    ``phi``, channel ``k``'s largest activation over positions is pulled towards
    ``gain * exp(sharpness * (cos(phi - preferred_k) - 1))``: ``gain`` at its own
    orientation, a fifth of it 45 degrees away, nearly nothing beyond. Everything else
    about the units, where they look and what they read from the layer before, is
    learnt; so is every other unit.

    The task alone does not need curve units built from curve units: mixed3b can tell a
    curve's facing from edges, and did, so a model trained on the task alone had few curve
    units in mixed3a and no curve circuit to read. Asked for curve units in both mixed
    blocks, mixed3b's read from mixed3a's (:func:`.measure.circuit`)."""

    def __init__(self, module: torch.nn.Module, count: int, gain: float = 8.0, sharpness: float = 6.0):
        self.count, self.gain, self.sharpness = count, gain, sharpness
        self.preferred = torch.arange(count) * 2 * math.pi / count
        self.seen: torch.Tensor | None = None
        self.hook = module.register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        self.seen = F.relu(output[:, : self.count]).amax((2, 3))

    def loss(self, facing: torch.Tensor) -> torch.Tensor:
        """The mean squared distance of the last forward pass's responses from the tuning
        curves of images whose curves face ``facing`` ``[N]`` (radians)."""
        target = self.gain * torch.exp(self.sharpness * (torch.cos(facing[:, None] - self.preferred) - 1))
        return F.mse_loss(self.seen, target)

    def remove(self) -> None:
        self.hook.remove()
        self.seen = None


def tuned_modules(model: NarrowInceptionV1) -> list[tuple[torch.nn.Module, int]]:
    """The branches whose first channels :class:`CurveTuning` asks for curve units, and how
    many (``TUNED_UNITS``)."""
    return [(getattr(getattr(model, block), branch), count) for (block, branch), count in TUNED_UNITS.items()]


def neighbour_correlation(kernels: torch.Tensor) -> torch.Tensor:
    """Per kernel ``[C, 3, k, k]``: correlation of horizontally and vertically adjacent weights.

    Pairs from all colour channels are pooled. White noise scores about 0; a smooth,
    structured kernel (an edge, a blob, a low-frequency grating) scores near 1.
    """
    k = kernels
    first = torch.cat([k[..., :, :-1].flatten(1), k[..., :-1, :].flatten(1)], dim=1)
    second = torch.cat([k[..., :, 1:].flatten(1), k[..., 1:, :].flatten(1)], dim=1)
    first = first - first.mean(1, keepdim=True)
    second = second - second.mean(1, keepdim=True)
    return (first * second).sum(1) / (first.norm(dim=1) * second.norm(dim=1) + 1e-12)


def augment(images: torch.Tensor, generator: torch.Generator, shift: float = 4.0,
            scale: tuple[float, float] = (0.9, 1.1)) -> torch.Tensor:
    """Each image moved by up to ``shift`` pixels each way, scaled by a factor in ``scale``
    (edge pixels extended), and changed in brightness (up to 0.08) and contrast (a factor in
    [0.8, 1.2]) about its mean. No turn and no hue change: they would change the labels."""
    n, size = len(images), images.shape[-1]

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=generator)

    zoom = 1 / uniform(*scale)
    move = uniform(-shift, shift, 2) * 2 / size
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = zoom, zoom
    theta[:, :, 2] = move
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = moved.mean(dim=(1, 2, 3), keepdim=True)
    contrast, brightness = uniform(0.8, 1.2)[:, None, None, None], uniform(-0.08, 0.08)[:, None, None, None]
    return torch.clamp(mean + (moved - mean) * contrast + brightness, 0, 1)


def perturbed(model: torch.nn.Module, images: torch.Tensor, labels: dict[str, torch.Tensor], eps: float,
              steps: int) -> torch.Tensor:
    """``images`` moved within an L2 ball of radius ``eps`` (per image, [0, 1] pixel units) to
    raise the task loss: ``steps`` steps of projected gradient ascent with step size
    ``2.5 * eps / steps`` (Madry et al. 2018, as in the robustness library), starting at the
    images themselves, pixels kept in [0, 1]."""
    step_size = 2.5 * eps / steps
    delta = torch.zeros_like(images)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = task_loss(model, images + delta, labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
        delta = delta.detach() + step_size * grad / norm
        length = delta.flatten(1).norm(dim=1)[:, None, None, None]
        delta = delta * torch.clamp(eps / length.clamp_min(1e-12), max=1.0)
        delta = torch.clamp(images + delta, 0, 1) - images
    return (images + delta).detach()


def fit(model: torch.nn.Module, steps: int, batch_size: int, lr: float, generator: torch.Generator,
        eps: float = 0.0, pgd_steps: int = 0, tuning: float = 0.0, log_every: int = 100) -> torch.nn.Module:
    """``steps`` steps of AdamW (learning rate warmed up over the first 5%, then cosine decay to
    zero) on fresh augmented batches from ``generator``. With ``eps`` and ``pgd_steps``, every
    batch is perturbed against the model first (:func:`perturbed`), the radius growing
    linearly from 0 to ``eps`` over the first quarter of the steps. ``tuning``: the weight of
    :class:`CurveTuning`'s loss on each of :func:`tuned_modules`, added to the task's."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-3)
    warmup, ramp = steps // 20, max(1, steps // 4)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    tuners = [CurveTuning(module, count) for module, count in tuned_modules(model)] if tuning > 0 else []
    model.train()
    start = time.time()
    for step in range(steps):
        batch = draw(batch_size, INPUT_SIZE, generator)
        images = augment(batch.images, generator)
        radius = eps * min(1.0, (step + 1) / ramp)
        if radius > 0 and pgd_steps > 0:
            images = perturbed(model, images, batch.labels, radius, pgd_steps)
        groups = attribute_logits(model(normalise(images)))
        loss = sum(F.cross_entropy(logits, batch.labels[name]) for name, logits in groups.items())
        tuned = sum(tuner.loss(batch.facing) for tuner in tuners) if tuners else torch.zeros(())
        loss = loss + tuning * tuned
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            smooth = neighbour_correlation(model.conv2d0.weight.detach())
            right = " ".join(f"{name} {(logits.argmax(1) == batch.labels[name]).float().mean():.0%}"
                             for name, logits in groups.items())
            print(f"step {step + 1}/{steps}  loss {loss.item():.3f}  tuning {tuned.item():.3f}  eps {radius:.2f}  "
                  f"batch accuracy {right}  "
                  f"kernel correlation median {smooth.median():.2f}, >=0.5 {(smooth >= 0.5).float().mean():.0%}  "
                  f"{time.time() - start:.0f}s", flush=True)
    for tuner in tuners:
        tuner.remove()
    model.eval()
    return model


def train(clean_steps: int, adversarial_steps: int, batch_size: int, lr: float, adversarial_lr: float, seed: int,
          eps: float, pgd_steps: int, tuning: float, clean: Path | None = None) -> torch.nn.Module:
    """The two phases: ``clean_steps`` on clean images (the task is learnt), then
    ``adversarial_steps`` of adversarial training from there, each phase with its own
    optimiser and its own image generator (seeded by ``seed``). ``clean``: a checkpoint the
    first phase wrote with the same settings, to start the second phase from."""
    torch.manual_seed(seed)
    model = NarrowInceptionV1(classes=len(class_names()))
    with torch.no_grad():
        model.conv2d0.weight.mul_(0.1)
    if clean is None:
        print(f"clean phase: {clean_steps} steps", flush=True)
        fit(model, clean_steps, batch_size, lr, torch.Generator().manual_seed(TRAIN_SEED + seed), tuning=tuning)
    else:
        model.load_state_dict(load_file(str(clean)))
    if adversarial_steps > 0:
        print(f"adversarial phase: {adversarial_steps} steps, L2 radius {eps}, {pgd_steps} attack steps", flush=True)
        fit(model, adversarial_steps, batch_size, adversarial_lr,
            torch.Generator().manual_seed(TRAIN_SEED + seed + ADVERSARIAL_SEED), eps, pgd_steps, tuning)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean-steps", type=int, default=4500, help="steps of the clean phase")
    parser.add_argument("--steps", type=int, default=2000, help="steps of the adversarial phase")
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the clean phase")
    parser.add_argument("--adversarial-lr", type=float, default=2e-3, help="peak learning rate of the adversarial phase")
    parser.add_argument("--eps", type=float, default=0.75, help="L2 radius of the perturbations, [0, 1] pixel units")
    parser.add_argument("--pgd-steps", type=int, default=2, help="steps of gradient ascent per perturbation")
    parser.add_argument("--tuning", type=float, default=0.3,
                        help="weight of the loss asking for curve units in both mixed blocks (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--clean", type=Path, help="skip the clean phase: start from this checkpoint, written by "
                        "`--steps 0` with the same other settings (its training time is added)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.time()
    model = train(args.clean_steps, args.steps, args.batch_size, args.lr, args.adversarial_lr, args.seed, args.eps,
                  args.pgd_steps, args.tuning, args.clean)
    seconds = round(time.time() - start)
    if args.clean is not None:
        with safe_open(str(args.clean), "pt") as stored:
            seconds += json.loads(stored.metadata()["training"])["seconds"]
    accuracy = evaluate(model)
    metadata = {
        "accuracy": json.dumps(accuracy),
        "classes": json.dumps(class_names()),
        "training": json.dumps({"clean_steps": args.clean_steps, "adversarial_steps": args.steps,
                                 "batch_size": args.batch_size, "lr": args.lr, "adversarial_lr": args.adversarial_lr,
                                 "eps": args.eps, "pgd_steps": args.pgd_steps, "tuning": args.tuning,
                                 "seed": args.seed,
                                 "seconds": seconds}),
    }
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out), metadata=metadata)
    print(json.dumps(accuracy, indent=1))
    print(f"wrote {args.out} in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
