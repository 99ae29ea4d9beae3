"""ROUGE-L F1 (longest common subsequence) of generated texts against references, as an `evaluate` metric that
loads offline.

The Hub's `rouge` script is fetched at run time, which this project cannot rely on; this one ships with the
package and is loaded with `evaluate.load(<this folder>)`. The scores come from Google Research's `rouge_score`
(lower-cased, non-alphanumerics as separators, optional Porter stemming); the result is the mean over pairs.
"""

import datasets
import evaluate
from rouge_score import rouge_scorer


class RougeL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Lin, Chin-Yew. ROUGE: A Package for Automatic Evaluation of Summaries. ACL workshop 2004.",
            inputs_description="predictions (list of str), references (list of str), use_stemmer=False",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, use_stemmer=False):
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
        scores = [scorer.score(ref, pred)["rougeL"] for pred, ref in zip(predictions, references)]
        n = max(len(scores), 1)
        return {
            "rouge_l": sum(s.fmeasure for s in scores) / n,
            "rouge_l_precision": sum(s.precision for s in scores) / n,
            "rouge_l_recall": sum(s.recall for s in scores) / n,
        }
