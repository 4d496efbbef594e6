#!/usr/bin/env python3
"""Compute the estimator's per-model descriptors from the networks themselves.

Writes rt-config/model-descriptors.csv: for every variant name the catalog
and the device models use, the torchvision architecture (the same one
tch::vision builds), its input size, multiply-accumulate FLOPs and
parameters counted with forward hooks on a real forward pass, and its layer
mix (the share of FLOPs in dense k×k convolutions, 1×1 convolutions,
depthwise convolutions and fully connected layers).

Needs torchvision matching the set-up's torch (no downloads of weights):
    .venv/bin/python -m pip install --no-deps torchvision==0.28.0 numpy pillow
    .venv/bin/python scripts/model_descriptors.py > rt-config/model-descriptors.csv
"""
import csv
import sys

import torch
import torchvision.models as tvm

# name -> (constructor, input pixels)
MODELS = {
    "resnet152": (tvm.resnet152, 224),
    "resnet101": (tvm.resnet101, 224),
    "resnet50": (tvm.resnet50, 224),
    "resnet34": (tvm.resnet34, 224),
    "resnet18": (tvm.resnet18, 224),
    "mobilenet_v2": (tvm.mobilenet_v2, 224),
    "mobilenet_v2@160": (tvm.mobilenet_v2, 160),
    "mobilenet_v2@128": (tvm.mobilenet_v2, 128),
    "squeezenet1_1": (tvm.squeezenet1_1, 224),
    "efficientnet_b0": (tvm.efficientnet_b0, 224),
}


def describe(ctor, px):
    net = ctor(weights=None).eval()
    flops = {"conv_kxk": 0, "conv_1x1": 0, "depthwise": 0, "linear": 0}
    counts = {"layers": 0, "activations": 0}

    def conv_hook(m, _inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        macs = out.numel() * (m.in_channels // m.groups) * k
        if m.groups > 1 and m.groups == m.in_channels:
            flops["depthwise"] += macs
        elif k == 1:
            flops["conv_1x1"] += macs
        else:
            flops["conv_kxk"] += macs
        counts["layers"] += 1
        counts["activations"] += out.numel()

    def linear_hook(m, _inp, out):
        flops["linear"] += out.numel() * m.in_features
        counts["layers"] += 1
        counts["activations"] += out.numel()

    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, torch.nn.Linear):
            m.register_forward_hook(linear_hook)
    with torch.inference_mode():
        net(torch.zeros(1, 3, px, px))
    total = sum(flops.values())
    params = sum(p.numel() for p in net.parameters())
    return {
        "gmacs": total / 1e9,
        "mparams": params / 1e6,
        "layers": counts["layers"],
        "mactivations": counts["activations"] / 1e6,
        **{f"{k}_frac": v / total for k, v in flops.items()},
    }


def main():
    w = csv.writer(sys.stdout, lineterminator="\n")
    cols = ["gmacs", "mparams", "layers", "mactivations",
            "conv_kxk_frac", "conv_1x1_frac", "depthwise_frac", "linear_frac"]
    w.writerow(["variant", "architecture", "input_px"] + cols)
    for name, (ctor, px) in MODELS.items():
        d = describe(ctor, px)
        w.writerow([name, ctor.__name__, px] + [f"{d[c]:.6g}" for c in cols])


if __name__ == "__main__":
    main()
