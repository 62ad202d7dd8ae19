"""Train the default model from scratch, reproducibly: ``python -m generator.default_model.train``.

The network sees a fresh procedural batch every step (no image is seen twice), is scored
on a held-out set drawn from another seed, and is written as safetensors with its
held-out accuracy in the file's metadata. Two choices let the learned first-layer kernels
dominate their random initial values: the first layer starts at a tenth of its default
scale, and pixel noise in the images makes a kernel pay for every component that does
not help the task.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from . import INPUT_SIZE, MEAN, STD, WEIGHTS, NarrowInceptionV1
from .procedural import ATTRIBUTES, draw

TRAIN_SEED, TEST_SEED = 0, 1


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


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: int = 4096, seed: int = TEST_SEED) -> dict[str, float]:
    """Held-out accuracy per attribute, and of all attributes at once."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    hits = {name: 0 for name in ATTRIBUTES}
    hits["all"] = 0
    for _ in range(images // 256):
        batch = draw(256, INPUT_SIZE, g)
        groups = attribute_logits(model(normalise(batch.images)))
        correct = torch.ones(256, dtype=torch.bool)
        for name, logits in groups.items():
            right = logits.argmax(1) == batch.labels[name]
            hits[name] += int(right.sum())
            correct &= right
        hits["all"] += int(correct.sum())
    model.train()
    return {name: count / (images // 256 * 256) for name, count in hits.items()}


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


def train(steps: int, batch_size: int, lr: float, seed: int, log_every: int = 100) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = NarrowInceptionV1(classes=len(class_names()))
    with torch.no_grad():
        model.conv2d0.weight.mul_(0.1)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-3)
    warmup = steps // 20

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    g = torch.Generator().manual_seed(TRAIN_SEED + seed)
    start = time.time()
    for step in range(steps):
        batch = draw(batch_size, INPUT_SIZE, g)
        groups = attribute_logits(model(normalise(batch.images)))
        loss = sum(F.cross_entropy(logits, batch.labels[name]) for name, logits in groups.items())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            smooth = neighbour_correlation(model.conv2d0.weight.detach())
            print(f"step {step + 1}/{steps}  loss {loss.item():.3f}  kernel correlation median "
                  f"{smooth.median():.2f}, >=0.5 {(smooth >= 0.5).float().mean():.0%}  "
                  f"{time.time() - start:.0f}s", flush=True)
    model.eval()
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.time()
    model = train(args.steps, args.batch_size, args.lr, args.seed)
    accuracy = evaluate(model)
    metadata = {
        "accuracy": json.dumps(accuracy),
        "classes": json.dumps(class_names()),
        "training": json.dumps({"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                                 "seed": args.seed, "seconds": round(time.time() - start)}),
    }
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out), metadata=metadata)
    print(json.dumps(accuracy, indent=1))
    print(f"wrote {args.out} in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
