#!/usr/bin/env python3
"""Export the robot perception stack as TorchScript modules for ecomap.

torchvision's detection, segmentation and (int8) classification models,
built with random weights (weights=None, weights_backbone=None: nothing is
downloaded), each wrapped so its forward takes one image batch tensor
[1, 3, H, W] (FP32, values in [0, 1]) and returns plain tensors:

- detectors -> (boxes [N, 4] FP32, labels [N] INT64, scores [N] FP32)
- segmenters -> logits [1, 21, H, W] FP32 (the model's "out")
- classifiers -> logits [1, 1000] FP32 (the int8 one quantized with fbgemm,
  x86's int8 kernels — qnnpack on ARM — by torchvision's own post-training
  quantization on a dummy batch)

torchvision's detection models call two of its C++ operators (nms,
roi_align) that a libtorch process without torchvision's library lacks (ecomap
loads modules through libtorch alone, as a Jetson deployment would), and
box_iou calls a third for rotated boxes. Before scripting, all three are replaced with pure TorchScript equivalents below, so the
exported modules need nothing but libtorch. They compute the same thing up to
floating-point detail (roi_align samples outside the map as zeros where
torchvision's clamps); with random weights that changes nothing measured, and
the accuracies cited are torchvision's, for its operators.

Usage: export_models.py OUT_DIR   (scripts/setup.sh runs it into models/)
The published accuracies of each architecture are in
policies/perception-models.ron, cited from torchvision's documentation.
"""

import os
import sys
import time
from typing import List, Tuple

import torch
import torch.nn.functional as F
import torchvision
import torchvision.ops.boxes
import torchvision.ops.poolers
from torch import Tensor, nn


def pairwise_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every box of `a` with every box of `b` (x1, y1, x2, y2)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression; indices kept, by decreasing score."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = scores.argsort(descending=True)
    iou = pairwise_iou(boxes[order], boxes[order])
    n = order.size(0)
    later = torch.arange(n, device=boxes.device)
    keep = torch.ones(n, dtype=torch.bool, device=boxes.device)
    for i in range(n):
        if bool(keep[i]):
            keep = keep & ~((iou[i] > iou_threshold) & (later > i))
    return order[keep]


def roi_align(input: Tensor, boxes: Tensor, output_size: List[int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False) -> Tensor:
    """RoIAlign for a batch of one image: `boxes` [K, 5] (image index, x1,
    y1, x2, y2); bilinear samples (sampling_ratio² per bin, 2² if not set)
    averaged per output bin."""
    k = boxes.size(0)
    c, h, w = input.size(1), input.size(2), input.size(3)
    ph, pw = output_size[0], output_size[1]
    s = sampling_ratio if sampling_ratio > 0 else 2
    if k == 0:
        return input.new_zeros((0, c, ph, pw))
    off = 0.5 if aligned else 0.0
    x1 = boxes[:, 1] * spatial_scale - off
    y1 = boxes[:, 2] * spatial_scale - off
    rw = boxes[:, 3] * spatial_scale - off - x1
    rh = boxes[:, 4] * spatial_scale - off - y1
    if not aligned:
        rw = rw.clamp(min=1.0)
        rh = rh.clamp(min=1.0)
    dev = input.device
    fy = (torch.arange(ph, device=dev).view(ph, 1)
          + (torch.arange(s, device=dev).view(1, s) + 0.5) / s).reshape(-1)
    fx = (torch.arange(pw, device=dev).view(pw, 1)
          + (torch.arange(s, device=dev).view(1, s) + 0.5) / s).reshape(-1)
    ys = y1.view(k, 1) + fy.view(1, -1) * (rh / ph).view(k, 1)
    xs = x1.view(k, 1) + fx.view(1, -1) * (rw / pw).view(k, 1)
    gy = ((ys + 0.5) / h * 2 - 1).view(k, -1, 1).expand(k, ph * s, pw * s)
    gx = ((xs + 0.5) / w * 2 - 1).view(k, 1, -1).expand(k, ph * s, pw * s)
    grid = torch.stack([gx, gy], dim=3).reshape(1, k * ph * s, pw * s, 2)
    sampled = F.grid_sample(input[:1], grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
    sampled = sampled.view(c, k, ph * s, pw * s).permute(1, 0, 2, 3)
    return F.avg_pool2d(sampled, kernel_size=s, stride=s)


# Scripting resolves these names from the modules' globals: the detection
# models then call the pure versions above.
torchvision.ops.boxes.nms = nms
torchvision.ops.boxes.box_iou = pairwise_iou
torchvision.ops.box_iou = pairwise_iou
torchvision.ops.poolers.roi_align = roi_align


class Detector(nn.Module):
    """One image batch in, (boxes, labels, scores) of its first image out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        images: List[Tensor] = [x[0]]
        _, detections = self.model(images)
        d = detections[0]
        return d["boxes"], d["labels"], d["scores"]


class Segmenter(nn.Module):
    """One image batch in, per-pixel class logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)["out"]


# A robot acts on confident detections: 0.3, where torchvision's defaults
# (0.05, 0.001) suit mAP evaluation. With random weights the defaults would
# also let thousands of near-uniform scores into non-maximum suppression,
# timing post-processing no trained model would do.
SCORE_THRESHOLD = 0.3


def detectors():
    d = torchvision.models.detection
    yield "fasterrcnn_mobilenet_v3_large_320_fpn", Detector(
        d.fasterrcnn_mobilenet_v3_large_320_fpn(
            weights=None, weights_backbone=None, box_score_thresh=SCORE_THRESHOLD))
    yield "ssdlite320_mobilenet_v3_large", Detector(
        d.ssdlite320_mobilenet_v3_large(
            weights=None, weights_backbone=None, score_thresh=SCORE_THRESHOLD))


def segmenters():
    s = torchvision.models.segmentation
    yield "deeplabv3_mobilenet_v3_large", Segmenter(
        s.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=False))
    yield "lraspp_mobilenet_v3_large", Segmenter(
        s.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None))


def classifiers():
    m = torchvision.models
    q = torchvision.models.quantization
    yield "mobilenet_v3_large", m.mobilenet_v3_large(weights=None)
    torch.backends.quantized.engine = "fbgemm"
    yield "mobilenet_v3_large_int8", q.mobilenet_v3_large(weights=None, quantize=True)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "models"
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(2026)
    torch.set_num_threads(1)
    example = torch.rand(1, 3, 240, 320)
    for group in (detectors, segmenters, classifiers):
        for name, module in group():
            path = os.path.join(out, f"{name}.pt")
            t0 = time.time()
            module.eval()
            scripted = torch.jit.script(module)
            with torch.no_grad():
                result = scripted(example)
            shapes = ([tuple(t.shape) for t in result] if isinstance(result, tuple)
                      else [tuple(result.shape)])
            scripted.save(path)
            print(f"export: {path} ({os.path.getsize(path) / 1e6:.1f} MB, outputs {shapes}, "
                  f"{time.time() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
