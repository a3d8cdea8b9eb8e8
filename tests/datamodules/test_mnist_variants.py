"""RotatedMNIST and ColoredMNIST on generated MNIST files: the IDX reader (against torchvision),
the environments against DomainBed's construction (its code, written out here with torch's
global generator), rates within binomial tolerance, angles against an independent rotation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import rotate

from datamodules.data.layout import DatasetLayoutError
from datamodules.data.mnist_idx import (
    IDXFormatError,
    find_mnist_raw,
    load_mnist,
    read_idx,
    write_idx,
)
from datamodules.demo import generate_mnist_demo
from datamodules.mnist_variants import (
    ColoredMNISTDataModule,
    RotatedMNISTDataModule,
)

TRAIN, TEST = 2400, 600


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mnist")
    return generate_mnist_demo(folder, train_images=TRAIN, test_images=TEST)


@pytest.fixture(scope="module")
def colored(root: Path) -> ColoredMNISTDataModule:
    return ColoredMNISTDataModule(root=str(root), num_workers=0, environment_seed=3)


@pytest.fixture(scope="module")
def rotated(root: Path) -> RotatedMNISTDataModule:
    return RotatedMNISTDataModule(root=str(root), num_workers=0, environment_seed=3)


def domainbed_environments(root: Path, environments: list, dataset_transform, seed: int):
    """DomainBed's MultipleEnvironmentMNIST.__init__, on torchvision's reading of the files,
    with torch's global generator seeded as DomainBed's train.py seeds it."""
    original_dataset_tr = torchvision.datasets.MNIST(str(root), train=True, download=False)
    original_dataset_te = torchvision.datasets.MNIST(str(root), train=False, download=False)
    original_images = torch.cat((original_dataset_tr.data, original_dataset_te.data))
    original_labels = torch.cat((original_dataset_tr.targets, original_dataset_te.targets))
    torch.manual_seed(seed)
    shuffle = torch.randperm(len(original_images))
    original_images = original_images[shuffle]
    original_labels = original_labels[shuffle]
    datasets = []
    for i in range(len(environments)):
        images = original_images[i :: len(environments)]
        labels = original_labels[i :: len(environments)]
        datasets.append(dataset_transform(images, labels, environments[i]))
    return datasets, original_labels


def torch_bernoulli_(p, size):
    return (torch.rand(size) < p).float()


def torch_xor_(a, b):
    return (a - b).abs()


def color_dataset(images, labels, environment):
    """DomainBed's ColoredMNIST.color_dataset."""
    labels = (labels < 5).float()
    labels = torch_xor_(labels, torch_bernoulli_(0.25, len(labels)))
    colors = torch_xor_(labels, torch_bernoulli_(environment, len(labels)))
    images = torch.stack([images, images], dim=1)
    images[torch.tensor(range(len(images))), (1 - colors).long(), :, :] *= 0
    return images.float().div_(255.0), labels.view(-1).long()


def rotate_dataset(images, labels, angle):
    """DomainBed's RotatedMNIST.rotate_dataset."""
    rotation = torchvision.transforms.Compose(
        [
            torchvision.transforms.ToPILImage(),
            torchvision.transforms.Lambda(
                lambda x: rotate(x, angle, fill=(0,), interpolation=InterpolationMode.BILINEAR)
            ),
            torchvision.transforms.ToTensor(),
        ]
    )
    x = torch.zeros(len(images), 1, 28, 28)
    for i in range(len(images)):
        x[i] = rotation(images[i])
    return x, labels.view(-1)


def environment(data, name: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(images (n, 28, 28, 3) uint8, labels, original digits) of one environment."""
    built = data.environments
    start, stop = built.ranges[name]
    return built.images[start:stop], built.labels[start:stop], built.digits[start:stop]


# ----- the IDX files --------------------------------------------------------------------------
def test_generated_files_read_the_same_here_and_in_torchvision(root: Path) -> None:
    images, labels, sources = load_mnist(find_mnist_raw(root))
    reference_train = torchvision.datasets.MNIST(str(root), train=True, download=False)
    reference_test = torchvision.datasets.MNIST(str(root), train=False, download=False)
    assert images.shape == (TRAIN + TEST, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(images[:TRAIN], reference_train.data.numpy())
    assert np.array_equal(images[TRAIN:], reference_test.data.numpy())
    assert np.array_equal(labels, np.concatenate([reference_train.targets, reference_test.targets]))
    assert sources[0].name == "train-images-idx3-ubyte" and sources[-1].name.startswith("t10k")
    assert np.bincount(labels[:TRAIN], minlength=10).tolist() == [TRAIN // 10] * 10


def test_idx_header_and_gzip(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = write_idx(tmp_path / "x-idx3-ubyte", array).read_bytes()
    assert data[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4])
    assert np.array_equal(read_idx(write_idx(tmp_path / "x.gz", array), 3), array)


def test_gzipped_files_in_domainbeds_folder_are_found(tmp_path: Path) -> None:
    generate_mnist_demo(tmp_path, train_images=20, test_images=10, layout="domainbed", gzipped=True)
    folder = find_mnist_raw(tmp_path)
    assert folder == tmp_path / "MNIST" / "MNIST" / "raw"
    assert sorted(p.suffix for p in folder.iterdir()) == [".gz"] * 4
    assert load_mnist(folder)[0].shape == (30, 28, 28)


def test_broken_files_are_errors_naming_the_file(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "a", np.zeros((3, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(IDXFormatError, match=rf"{path}: its header says \(3, 28, 28\)"):
        read_idx(path, 3)
    path.write_bytes(b"\x01\x00\x08\x01")
    with pytest.raises(IDXFormatError, match="first two bytes must be zero"):
        read_idx(path, 1)
    with pytest.raises(IDXFormatError, match=r"type 0x08 with 3 dimensions; MNIST's are .* with 1"):
        read_idx(write_idx(path, np.zeros((1, 2, 2), np.uint8)), 1)
    generate_mnist_demo(tmp_path / "m", train_images=20, test_images=10)
    raw = tmp_path / "m" / "MNIST" / "raw"
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(9, np.uint8))
    with pytest.raises(IDXFormatError, match=r"holds 10 images but .*t10k-labels.* 9 labels"):
        load_mnist(raw)
    with pytest.raises(DatasetLayoutError, match=r"not found .*ossci-datasets"):
        find_mnist_raw(tmp_path / "nowhere")


# ----- ColoredMNIST ---------------------------------------------------------------------------
def test_colored_environments_equal_domainbeds(root: Path, colored: ColoredMNISTDataModule) -> None:
    expected, _ = domainbed_environments(root, [0.1, 0.2, 0.9], color_dataset, seed=3)
    for name, (x, y) in zip(["+90%", "+80%", "-90%"], expected, strict=True):
        images, labels, _ = environment(colored, name)
        assert x.shape == (len(images), 2, 28, 28)  # DomainBed's input shape
        ours = images.permute(0, 3, 1, 2).float()
        assert torch.equal(ours[:, :2] / 255.0, x)  # the two channels, value for value
        assert not ours[:, 2].any()  # the third channel is zero
        assert np.array_equal(labels, y.numpy())


def binomial_tolerance(p: float, n: int) -> float:
    """Four standard deviations of a rate over n Bernoulli(p) draws."""
    return 4 * math.sqrt(p * (1 - p) / n)


def test_colored_label_noise_and_colour_flips_are_at_domainbeds_rates(
    colored: ColoredMNISTDataModule,
) -> None:
    sizes = []
    for name, flip in (("+90%", 0.1), ("+80%", 0.2), ("-90%", 0.9)):
        images, labels, digits = environment(colored, name)
        n = len(labels)
        sizes.append(n)
        clean = (digits < 5).astype(int)
        colour = images[..., 1].flatten(1).any(1).long().numpy()  # green channel lit
        red = images[..., 0].flatten(1).any(1).numpy()
        assert np.array_equal(red, colour == 0)  # exactly one channel holds the digit
        noise, flips = np.mean(labels != clean), np.mean(colour != labels)
        assert abs(noise - 0.25) < binomial_tolerance(0.25, n), (name, noise)
        assert abs(flips - flip) < binomial_tolerance(flip, n), (name, flips)
    total = TRAIN + TEST
    assert sizes == [-(-total // 3), (total + 1) // 3, total // 3]  # every third digit


def test_environment_seed_changes_the_construction(root: Path, colored) -> None:
    again = ColoredMNISTDataModule(root=str(root), num_workers=0, environment_seed=3)
    other = ColoredMNISTDataModule(root=str(root), num_workers=0, environment_seed=4)
    assert again.environments.sources == colored.environments.sources
    assert np.array_equal(again.environments.labels, colored.environments.labels)
    assert other.environments.sources != colored.environments.sources


# ----- RotatedMNIST ---------------------------------------------------------------------------
def test_rotated_environments_equal_domainbeds(root: Path, rotated: RotatedMNISTDataModule) -> None:
    angles = [0, 15, 30, 45, 60, 75]
    expected, _ = domainbed_environments(root, angles, rotate_dataset, seed=3)
    total = TRAIN + TEST
    for index, (angle, (x, y)) in enumerate(zip(angles, expected, strict=True)):
        images, labels, digits = environment(rotated, str(angle))
        assert len(images) == len(range(index, total, 6))
        assert x.shape == (len(images), 1, 28, 28)
        gray = images[..., 0]
        assert torch.equal(images, gray.unsqueeze(-1).expand(-1, -1, -1, 3))  # same 3 channels
        assert torch.equal(gray.float().unsqueeze(1) / 255.0, x)
        assert np.array_equal(labels, y.numpy()) and np.array_equal(labels, digits)


def independent_rotation(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate counter-clockwise (as seen) about the image centre: each output pixel centre is
    mapped back into the input and bilinearly interpolated, zero outside."""
    height, width = image.shape
    theta = math.radians(degrees)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    dx, dy = xs - width / 2, ys - height / 2
    # y points down, so a visual counter-clockwise turn by theta maps input (u, v) to
    # (u cos + v sin, -u sin + v cos); invert it.
    u = dx * math.cos(theta) - dy * math.sin(theta) + width / 2 - 0.5
    v = dx * math.sin(theta) + dy * math.cos(theta) + height / 2 - 0.5
    padded = np.pad(image.astype(np.float64), 1)
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - u0, v - v0
    out = np.zeros_like(u)
    for du in (0, 1):
        for dv in (0, 1):
            weight = (fu if du else 1 - fu) * (fv if dv else 1 - fv)
            cu, cv = np.clip(u0 + du + 1, 0, width + 1), np.clip(v0 + dv + 1, 0, height + 1)
            inside = (u0 + du >= -1) & (u0 + du <= width) & (v0 + dv >= -1) & (v0 + dv <= height)
            out += np.where(inside, weight * padded[cv, cu], 0.0)
    return out


def test_rotation_angles_match_an_independent_rotation(rotated: RotatedMNISTDataModule) -> None:
    built = rotated.environments
    raw = load_mnist(rotated.raw_folder)[0]
    row_in_file = {source: int(source.rsplit("#", 1)[1]) for source in built.sources}
    for angle in (15, 30, 45, 60, 75):
        start, _ = built.ranges[str(angle)]
        errors = {"right": [], "mirrored": [], "off by 10": []}
        for row in range(start, start + 20):
            source = built.sources[row]
            offset = 0 if "train-images" in source else TRAIN
            digit = raw[offset + row_in_file[source]]
            ours = built.images[row, :, :, 0].numpy().astype(np.float64)
            # DomainBed's call is PIL's rotate, bilinear, fill 0: the same bytes
            pil = Image.fromarray(digit).rotate(angle, Image.Resampling.BILINEAR, fillcolor=0)
            assert np.array_equal(ours, np.asarray(pil))
            cases = (("right", angle), ("mirrored", -angle), ("off by 10", angle + 10))
            for case, degrees in cases:
                errors[case].append(np.abs(ours - independent_rotation(digit, degrees)).mean())
        right = np.mean(errors["right"])
        assert right < 4.0, (angle, right)  # interpolation details differ by a few grey levels
        assert np.mean(errors["mirrored"]) > 4 * right and np.mean(errors["off by 10"]) > 3 * right
    start, _ = built.ranges["0"]
    source = built.sources[start]
    digit = raw[(0 if "train-images" in source else TRAIN) + row_in_file[source]]
    assert np.array_equal(built.images[start, :, :, 0].numpy(), digit)  # 0 degrees: unchanged


def test_bicubic_interpolation_is_the_published_results_code(root: Path, rotated) -> None:
    bicubic = RotatedMNISTDataModule(
        root=str(root), num_workers=0, environment_seed=3, interpolation="bicubic"
    )
    start, stop = bicubic.environments.ranges["30"]
    assert bicubic.environments.sources == rotated.environments.sources
    rows = slice(start, stop)
    assert not torch.equal(bicubic.environments.images[rows], rotated.environments.images[rows])
    with pytest.raises(ValueError, match="interpolation='nearest'"):
        RotatedMNISTDataModule(root=str(root), interpolation="nearest")


# ----- the DataModules ------------------------------------------------------------------------
def test_datamodules_domains_classes_splits_and_batches(root: Path) -> None:
    data = ColoredMNISTDataModule(
        root=str(root), num_workers=0, held_out_domains=["-90%"], batch_size_per_domain=8
    )
    assert data.domain_names == ["+90%", "+80%", "-90%"] and data.class_names == ["0", "1"]
    counts = data.split_counts()
    for name in ("+90%", "+80%"):
        size = counts["train"][name] + counts["val"][name]
        assert size == len(range(["+90%", "+80%"].index(name), TRAIN + TEST, 3))
        assert abs(counts["val"][name] - 0.2 * size) <= 1  # per class, rounded
    assert counts["val"]["-90%"] == (TRAIN + TEST) // 3 and counts["train"]["-90%"] == 0
    paths = {split: {s.path for s in samples} for split, samples in data.split_samples.items()}
    assert not paths["train"] & paths["val"]
    data.setup("fit")
    images, _, domains = data.on_after_batch_transfer(next(iter(data.train_dataloader())))
    assert images.shape == (16, 3, 28, 28) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1  # DomainBed's x / 255, not normalised
    assert sorted(domains.tolist()) == [0] * 8 + [1] * 8
    rotated = RotatedMNISTDataModule(root=str(root), num_workers=0, held_out_domains=["75"])
    assert rotated.domain_names == ["0", "15", "30", "45", "60", "75"]
    assert rotated.class_names == [str(d) for d in range(10)]
    with pytest.raises(ValueError, match=r"held_out_domains \['90'\].*valid choices"):
        RotatedMNISTDataModule(root=str(root), held_out_domains=["90"])
