"""A PyTorch CPU reference of the GenSCL pretraining step, to compare JAX against on the same CPU.

Same work as `python -m genscl_jax.bench` with --moco off, --teacher none, --mix none: the ResNet of
genscl_jax.models (same stage layout, width multiplier, CIFAR or ImageNet stem, torchvision paddings,
BatchNorm in train mode), the MLP projection head, two views of each source image in one forward, the GenSCL
loss with the same formula as genscl_jax.objectives.losses (cosine label similarity, self excluded, row-max shift,
label-sum normalisation, tau / tau_base scaling), and SGD with momentum 0.9 and weight decay 1e-4 on every
parameter (optax.add_decayed_weights + optax.sgd is torch.optim.SGD's arithmetic).

    python benchmarks/torch_reference_step.py --model resnet18 --width 0.5 --image-size 32 --batch 32

Our own code; nothing from the authors' repository. Needs torch only (torchvision is not used).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = {
    "resnet10": ((1, 1, 1, 1), "basic"),
    "resnet18": ((2, 2, 2, 2), "basic"),
    "resnet34": ((3, 4, 6, 3), "basic"),
    "resnet50": ((3, 4, 6, 3), "bottleneck"),
    "resnet101": ((3, 4, 23, 3), "bottleneck"),
}


def conv(cin: int, cout: int, kernel: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, filters: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = conv(cin, filters, 3, stride), nn.BatchNorm2d(filters)
        self.conv2, self.bn2 = conv(filters, filters, 3, 1), nn.BatchNorm2d(filters)
        self.shortcut = _shortcut(cin, filters, stride)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, filters: int, stride: int):
        super().__init__()
        out = filters * 4
        self.conv1, self.bn1 = conv(cin, filters, 1, 1), nn.BatchNorm2d(filters)
        self.conv2, self.bn2 = conv(filters, filters, 3, stride), nn.BatchNorm2d(filters)  # v1.5: stride on 3x3
        self.conv3, self.bn3 = conv(filters, out, 1, 1), nn.BatchNorm2d(out)
        self.shortcut = _shortcut(cin, out, stride)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))


class ContrastiveResNet(nn.Module):
    def __init__(self, name: str, width: float, stem: str, head_dim: int = 128, head_hidden: int = 0):
        super().__init__()
        stage_sizes, kind = ARCHS[name]
        block = Basic if kind == "basic" else Bottleneck
        base = int(round(64 * width))
        widths = [base * 2**i for i in range(4)]
        if stem == "cifar":
            self.stem = nn.Sequential(conv(3, base, 3, 1), nn.BatchNorm2d(base), nn.ReLU())
        else:
            self.stem = nn.Sequential(conv(3, base, 7, 2), nn.BatchNorm2d(base), nn.ReLU(),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        layers, cin = [], base
        for s, n in enumerate(stage_sizes):
            for b in range(n):
                layers.append(block(cin, widths[s], 2 if s > 0 and b == 0 else 1))
                cin = widths[s] * block.expansion
        self.blocks = nn.Sequential(*layers)
        hidden = head_hidden or cin
        self.head = nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(), nn.Linear(hidden, head_dim))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        features = self.blocks(self.stem(x)).mean(dim=(2, 3))
        return F.normalize(self.head(features), dim=1, eps=1e-12)


def generalized_supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1,
                            base_temperature: float = 0.07) -> torch.Tensor:
    """genscl_jax.objectives.losses.generalized_supcon_loss, all-vs-all with self excluded, label_sum normalisation."""
    unit = F.normalize(labels.float(), dim=1, eps=1e-12)
    similarity = unit @ unit.T
    logits = (z @ z.T) / temperature
    n = z.shape[0]
    keep = ~torch.eye(n, dtype=torch.bool, device=z.device)
    similarity = torch.where(keep, similarity, torch.zeros_like(similarity))
    row_max = torch.where(keep, logits, torch.full_like(logits, -float("inf"))).max(dim=1, keepdim=True).values
    shifted = logits - row_max.detach()
    log_den = torch.log(torch.where(keep, shifted.exp(), torch.zeros_like(shifted)).sum(dim=1, keepdim=True))
    log_prob = torch.where(keep, shifted - log_den, torch.zeros_like(shifted))
    row_loss = -(similarity * log_prob).sum(dim=1) / (similarity.sum(dim=1) + 1e-8)
    return (temperature / base_temperature) * row_loss.mean()


class TorchStep:
    """The model, optimizer and one fixed batch; `run(n)` does n training steps."""

    def __init__(self, *, model: str, width: float, stem: str, image_size: int, batch: int, num_views: int = 2,
                 num_classes: int = 10, head_dim: int = 128, channels_last: bool = False, seed: int = 0):
        torch.manual_seed(seed)
        if stem == "auto":
            stem = "cifar" if image_size < 64 else "imagenet"
        self.model = ContrastiveResNet(model, width, stem, head_dim).train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        views = torch.randn(batch * num_views, 3, image_size, image_size)
        class_ids = torch.randint(0, num_classes, (batch,)).repeat_interleave(num_views)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            views = views.contiguous(memory_format=torch.channels_last)
        self.images, self.labels = views, F.one_hot(class_ids, num_classes).float()
        self.batch = batch
        self.num_params = sum(p.numel() for p in self.model.parameters())

    def run(self, num_steps: int) -> float:
        loss = None
        for _ in range(num_steps):
            self.optimizer.zero_grad(set_to_none=True)
            loss = generalized_supcon_loss(self.model(self.images), self.labels)
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="resnet18", choices=sorted(ARCHS))
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--stem", default="auto")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=32, help="source images; the step sees 2x views")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")


def build(args: argparse.Namespace) -> TorchStep:
    if args.threads:
        torch.set_num_threads(args.threads)
    return TorchStep(model=args.model, width=args.width, stem=args.stem, image_size=args.image_size,
                     batch=args.batch, num_classes=args.num_classes, channels_last=args.channels_last)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    step = build(args)
    step.run(args.warmup)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step.run(args.steps)
        times.append((time.perf_counter() - start) / args.steps)
    step_s = statistics.median(times)
    result = {"framework": "torch", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "step_ms": round(step_s * 1e3, 3), "images_per_s": round(args.batch / step_s, 2),
              "step_ms_repeats": [round(t * 1e3, 3) for t in times], "num_params": step.num_params}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
