"""Accuracy, precision, recall and F1 of a binary classifier, as an `evaluate` metric that loads offline.

The Hub's `accuracy`/`precision`/`recall`/`f1` scripts are fetched at run time, which this project cannot rely on;
this one ships with the package and is loaded with `evaluate.load(<this folder>)`. The numbers come from
scikit-learn (binary average, positive label 1, zero_division=0).
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


class BinaryClassification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions (list of int 0/1), references (list of int 0/1), pos_label=1",
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, pos_label=1):
        precision, recall, f1, _ = precision_recall_fscore_support(
            references, predictions, average="binary", pos_label=pos_label, zero_division=0
        )
        matrix = confusion_matrix(references, predictions, labels=[1 - pos_label, pos_label])
        return {
            "accuracy": float(accuracy_score(references, predictions)),
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "confusion_matrix": matrix.tolist(),  # rows: true (neg, pos), columns: predicted (neg, pos)
        }
