"""Data sets: shapes, seeding, standardisation, the gmm oracle, digits, user files."""
import math
import os
import sys

import numpy as np
import pytest
import torch

from scoresde.data import DATASETS, Dataset, gmm_oracle, load_dataset
from scoresde.oracles import GaussianMixture

TOY = ["gmm", "moons", "swiss_roll", "checkerboard", "rings"]


@pytest.mark.parametrize("name", TOY)
def test_toy_sets_shapes_seeding_and_scale(name):
    d = load_dataset(name, n=5000, seed=3)
    assert isinstance(d, Dataset) and d.kind == "points" and d.name == name
    assert d.x.shape == (5000, 2) and len(d) == 5000 and d.shape == (2,)
    assert d.x.dtype == torch.get_default_dtype() and torch.isfinite(d.x).all()
    assert torch.equal(d.x, load_dataset(name, n=5000, seed=3).x)
    assert not torch.allclose(d.x, load_dataset(name, n=5000, seed=4).x)
    assert not torch.allclose(d.x, load_dataset(name, "test", n=5000, seed=3).x)
    # standardised: zero mean, mean per-coordinate variance 1 (MC error ~ 0.02 at n=5000)
    assert d.x.mean(0).abs().max() < 0.06
    assert abs(d.x.pow(2).mean().item() - 1.0) < 0.06
    assert load_dataset(name, dtype=torch.float32).x.dtype == torch.float32
    assert len(load_dataset(name)) == 10000 and len(load_dataset(name, "test")) == 2000
    assert d.spec == {"name_or_path": name, "split": "train", "n": 5000, "seed": 3,
                      "dtype": torch.get_default_dtype()}


def test_gmm_density_is_the_oracle():
    d = load_dataset("gmm", n=20000, seed=1)
    oracle = d.oracle
    assert isinstance(oracle, GaussianMixture)
    assert torch.allclose(oracle.mean, torch.zeros(2, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(oracle.covariance, torch.eye(2, dtype=torch.float64), atol=1e-14)
    # the data follow the oracle: the cross-entropy -E_data log p equals the oracle's
    # entropy (estimated from its own samples), and moments agree
    logp_data = oracle.log_prob(d.x)
    fresh = oracle.sample(20000, generator=torch.Generator().manual_seed(99))
    logp_fresh = oracle.log_prob(fresh)
    se = math.hypot(logp_data.std().item(), logp_fresh.std().item()) / math.sqrt(20000)
    assert abs(logp_data.mean().item() - logp_fresh.mean().item()) < 4 * se
    assert torch.allclose(d.x.T.cov(), torch.eye(2, dtype=torch.float64), atol=0.05)
    # a wrong density (modes rotated by half the spacing) fits the data much worse
    rot = torch.tensor([[math.cos(math.pi / 8), -math.sin(math.pi / 8)],
                        [math.sin(math.pi / 8), math.cos(math.pi / 8)]], dtype=torch.float64)
    wrong = GaussianMixture(oracle.weights, oracle.means @ rot.T, oracle.covs)
    assert wrong.log_prob(d.x).mean() < logp_data.mean() - 0.5
    assert torch.equal(gmm_oracle().means, oracle.means)


def test_digits_split_fixed_and_disjoint():
    pytest.importorskip("sklearn")
    train, test = load_dataset("digits"), load_dataset("digits", "test")
    assert train.kind == "images" and train.x.shape == (1497, 1, 8, 8)
    assert test.x.shape == (300, 1, 8, 8)
    assert train.x.min() == -1.0 and train.x.max() == 1.0
    assert set(train.index.tolist()).isdisjoint(test.index.tolist())
    assert len(set(train.index.tolist()) | set(test.index.tolist())) == 1797
    assert torch.equal(test.index, torch.arange(0, 1797, 6))  # fixed, independent of seed
    assert torch.equal(load_dataset("digits", "test", seed=5).x, test.x)
    all_ = load_dataset("digits", "all")
    assert torch.equal(all_.x[train.index], train.x) and train.y.shape == (1497,)
    sub = load_dataset("digits", n=100, seed=2)
    assert sub.x.shape == (100, 1, 8, 8)
    assert torch.equal(sub.x, load_dataset("digits", n=100, seed=2).x)
    assert set(sub.index.tolist()) <= set(train.index.tolist())
    with pytest.raises(ValueError, match="exceeds"):
        load_dataset("digits", "test", n=301)


def test_digits_without_sklearn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="scikit-learn"):
        load_dataset("digits")


def test_npy_and_pt_files(tmp_path):
    pts = np.random.default_rng(0).normal(size=(50, 3))
    np.save(tmp_path / "pts.npy", pts)
    d = load_dataset(str(tmp_path / "pts.npy"), split="all")
    assert d.kind == "points" and torch.equal(d.x, torch.from_numpy(pts))
    train = load_dataset(tmp_path / "pts.npy")
    test = load_dataset(tmp_path / "pts.npy", "test")
    assert len(train) == 45 and len(test) == 5
    assert torch.equal(torch.cat([train.x, test.x]).sort(0).values, d.x.sort(0).values)
    assert train.spec["name_or_path"] == str((tmp_path / "pts.npy").resolve())

    imgs = torch.randint(0, 256, (20, 28, 28), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))
    torch.save(imgs, tmp_path / "imgs.pt")
    d = load_dataset(str(tmp_path / "imgs.pt"), split="all", dtype=torch.float32)
    assert d.kind == "images" and d.x.shape == (20, 1, 28, 28) and d.x.dtype == torch.float32
    assert torch.equal(d.x[:, 0], (imgs.double() / 127.5 - 1.0).float())


def test_bad_files_and_names(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'mnist'.*gmm, moons"):
        load_dataset("mnist")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.npy"))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="object"):
        load_dataset(str(tmp_path / "obj.npy"))
    torch.save({"x": torch.zeros(3, 2)}, tmp_path / "dict.pt")
    with pytest.raises(ValueError, match="single tensor"):
        load_dataset(str(tmp_path / "dict.pt"))
    (tmp_path / "bad.pt").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="could not read"):
        load_dataset(str(tmp_path / "bad.pt"))
    (tmp_path / "d.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"\.npy or \.pt"):
        load_dataset(str(tmp_path / "d.csv"))
    np.save(tmp_path / "five.npy", np.zeros((2, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match="shape"):
        load_dataset(str(tmp_path / "five.npy"))
    with pytest.raises(ValueError, match="split"):
        load_dataset("gmm", split="val")
    with pytest.raises(ValueError, match="'all'"):
        load_dataset("moons", split="all")
    with pytest.raises(ValueError, match="n must"):
        load_dataset("gmm", n=0)
    assert "digits" in DATASETS


def test_builtin_name_wins_over_a_same_named_folder(tmp_path, monkeypatch):
    # a scratch folder called "gmm" in the working directory must not shadow the data set
    (tmp_path / "gmm").mkdir()
    (tmp_path / "notes").write_text("x")
    monkeypatch.chdir(tmp_path)
    data = load_dataset("gmm", n=10)
    assert data.name == "gmm" and data.oracle is not None
    with pytest.raises(ValueError, match=r"'notes' must end in \.npy or \.pt"):
        load_dataset("notes")
    with pytest.raises(ValueError, match=r"must end in \.npy or \.pt"):
        load_dataset(os.path.join(".", "gmm"))
