"""The frame probes: they find a feature that is linearly there, and report no gain when it is not."""

import torch

from voco_llama.demo.probe import probe_accuracy, probe_r2


def _data(n=800, dims=32, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=g)
    onehot = torch.nn.functional.one_hot(labels, classes).float()
    noise = torch.randn(n, dims, generator=g)
    return onehot, noise


def test_a_linearly_encoded_class_is_found_and_noise_is_not():
    onehot, noise = _data()
    encoded = torch.cat([onehot * 3, torch.zeros(len(noise), noise.shape[1] - onehot.shape[1])], 1) + 0.3 * noise
    accuracy, majority = probe_accuracy(encoded, onehot, multilabel=False, train=600)
    assert accuracy > 95 and majority < 30
    accuracy, majority = probe_accuracy(noise, onehot, multilabel=False, train=600)
    assert abs(accuracy - 100 / onehot.shape[1]) < 10  # chance among 5 classes


def test_multilabel_presence_and_regression():
    g = torch.Generator().manual_seed(1)
    present = (torch.rand(800, 6, generator=g) < 0.4).float()
    x = torch.cat([present, torch.randn(800, 20, generator=g)], 1)
    accuracy, majority = probe_accuracy(x, present, multilabel=True, train=600)
    assert accuracy > 97 and 50 < majority < 70  # "absent" everywhere is right 60% of the time
    accuracy, _ = probe_accuracy(x[:, 6:], present, multilabel=True, train=600)
    assert accuracy < 66
    xy = torch.rand(800, 2, generator=g) * 48
    features = torch.cat([xy @ torch.randn(2, 10, generator=g), torch.randn(800, 10, generator=g)], 1)
    assert min(probe_r2(features, xy, train=600)) > 0.95
    assert max(probe_r2(torch.randn(800, 20, generator=g), xy, train=600)) < 0.1
