#!/usr/bin/env python3
"""scikit-learn's LogisticRegression on the same embeddings and split as a sluice training
job: the baseline a trained head must reach.

    train_reference.py FEATURES.f32 LABELS.json SPLIT.json

FEATURES.f32 holds little-endian float32 features, row after row; LABELS.json the class
index of each row; SPLIT.json {"train": [row, ...], "eval": [row, ...]}. Prints
{"accuracy": …, "macro_f1": …, "train_rows": …, "eval_rows": …} for the eval rows.
"""

import json
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score


def main():
    features_path, labels_path, split_path = sys.argv[1:4]
    labels = np.array(json.load(open(labels_path)))
    features = np.fromfile(features_path, dtype="<f4").reshape(len(labels), -1)
    split = json.load(open(split_path))
    train, held_out = np.array(split["train"]), np.array(split["eval"])
    model = LogisticRegression(max_iter=2000)
    model.fit(features[train], labels[train])
    predicted = model.predict(features[held_out])
    print(json.dumps({
        "accuracy": accuracy_score(labels[held_out], predicted),
        "macro_f1": f1_score(labels[held_out], predicted, average="macro"),
        "train_rows": int(len(train)),
        "eval_rows": int(len(held_out)),
    }))


if __name__ == "__main__":
    main()
