"""`digits`: scikit-learn's bundled 8x8 digits (1,797 images, values 0-16), the seq-digits source."""

from __future__ import annotations

import numpy as np


def prepare_digits() -> tuple[dict, dict]:
    from sklearn import __version__ as sklearn_version
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # [N,1,8,8], raw values 0..16
    labels = bunch.target.astype(np.int16)
    # Stratified 80/20 split (docs/datasets.md#digits): per class in ascending order, permute its indices
    # with one shared generator and take the first round(0.2 n_c) as test.
    rng = np.random.default_rng(0)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: round(0.2 * np.sum(labels == c))]
                           for c in range(10)])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test] = True
    splits = {
        "train": {"x": images[~is_test], "y": labels[~is_test]},
        "test": {"x": images[is_test], "y": labels[is_test]},
    }
    meta = {
        "source": [{"name": "sklearn.datasets.load_digits", "url": "bundled with scikit-learn",
                    "version": sklearn_version}],
        "classes": [str(c) for c in range(10)],
        "class_ids": None,
        "label_order_source": "digit value",
        "pixel_max": 16,
        "resize": None,
        "decoder": None,
        "generator": None,
        "deviations": [],
    }
    return splits, meta
