"""``scoresde inpaint``: fill a masked half of test images with a trained run.

    scoresde inpaint --run runs/digits --mask right --num 32 --out inpainted.png
    scoresde inpaint --run runs/digits --mask bottom --resample 5 --jumps 5 --steps 200

Takes the first --num images of the run's test split, hides one half (--mask: the
unknown half), and fills it with ``scoresde.inpaint`` (the replacement method; RePaint with
--resample > 1). The picture shows the test images, the known halves and the inpainted
images; the mean squared error of the filled half against the hidden truth is printed.
A class-conditional run is used unconditionally (its null label).
"""
from __future__ import annotations

import argparse
import os
import time

import torch

import scoresde as sd
from scoresde.inpainting import INPAINT_SOLVERS

from .arguments import positive_int, positive_real
from .errors import _Fail
from .plots import check_picture_path, plot_images
from .runs import check_writable, load_run, save_tensor

HALVES = ("left", "right", "top", "bottom")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("inpaint", help="fill a masked half of test images, write a picture",
                       description=__doc__.replace("``", ""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory written by 'scoresde train'")
    p.add_argument("--mask", choices=HALVES, default="right",
                   help="the half to hide and fill (default right)")
    p.add_argument("--num", type=positive_int, default=32, help="test images (default 32)")
    p.add_argument("--solver", choices=INPAINT_SOLVERS, default="euler_maruyama",
                   metavar="NAME", help=f"one of {', '.join(INPAINT_SOLVERS)} (default "
                                        f"euler_maruyama)")
    p.add_argument("--steps", type=positive_int, default=500,
                   help="network evaluations per pass down the grid (default 500)")
    p.add_argument("--resample", type=positive_int, default=1,
                   help="RePaint's r: each block of --jumps steps done r times (default 1: "
                        "the replacement method)")
    p.add_argument("--jumps", type=positive_int, default=1,
                   help="RePaint's jump length (default 1)")
    p.add_argument("--eps", type=positive_real, default=1e-3, help="end time (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="seeds the generator")
    p.add_argument("--out", help="picture to write (default RUN/inpainted.png)")
    p.add_argument("--save-samples", metavar="PATH",
                   help="also write the inpainted images to a .npy or .pt file")
    return p


def half_mask(shape, half: str) -> torch.Tensor:
    """[C, H, W] 0/1 mask, 0 on the ``half`` to fill (left/right: columns, top/bottom: rows)."""
    mask = torch.ones(shape)
    h, w = shape[-2], shape[-1]
    if half == "left":
        mask[..., :, : w // 2] = 0
    elif half == "right":
        mask[..., :, w // 2:] = 0
    elif half == "top":
        mask[..., : h // 2, :] = 0
    else:
        mask[..., h // 2:, :] = 0
    return mask


def run(args: argparse.Namespace) -> None:
    out = args.out or os.path.join(args.run, "inpainted.png")
    check_picture_path(out)
    if args.save_samples is not None:
        check_writable(args.save_samples, (".npy", ".pt"), "--save-samples")
    run_ = load_run(args.run)
    test = run_.data("test")
    if test.kind != "images":
        raise _Fail(f"inpaint fills half of an image; {test.name} holds points")
    if args.num > len(test):
        raise _Fail(f"--num {args.num} exceeds the {len(test)} test images of {test.name!r}")
    truth = test.x[:args.num].to(run_.dtype)
    mask = half_mask(truth.shape[1:], args.mask).to(run_.dtype)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    res = sd.inpaint(run_.model, run_.sde, truth, mask, args.solver, steps=args.steps,
                     eps=args.eps, resample=args.resample, jumps=args.jumps, generator=g)
    seconds = time.perf_counter() - t0
    filled = (1 - mask).bool().expand_as(truth)
    mse = float((res.x - truth)[filled].pow(2).mean())
    print(f"inpainted the {args.mask} half of {args.num} test images with {args.solver} "
          f"(resample {args.resample}, jumps {args.jumps}): NFE {res.nfe}, {seconds:.1f} s; "
          f"MSE of the filled half {mse:.4f}")
    masked = truth * mask - (1 - mask)   # the hidden half shown black
    path = plot_images(truth, [("known half", masked), (f"inpainted (NFE {res.nfe})", res.x)],
                       out, data_title="test images")
    print(f"wrote {path}")
    if args.save_samples is not None:
        save_tensor(res.x, args.save_samples)
        print(f"wrote {args.save_samples} ({list(res.x.shape)} {str(res.x.dtype)[6:]})")
