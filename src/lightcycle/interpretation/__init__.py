"""What the model gets wrong on the validation set, per task (fastai's `ClassificationInterpretation`).

    from lightcycle import interpretation
    result = interpretation.collect(model, datamodule)      # one pass, dataset order
    interpretation.most_confused(result)[:5]
    interpretation.write_report(result, "interpret/")        # CSV tables + PNG figures

| task | tables (CSV) | figures (PNG / TensorBoard) |
|---|---|---|
| classification | `confusion_matrix.csv`, `most_confused.csv`, `top_losses.csv` | `confusion_matrix.png`, `top_losses.png` |
| multilabel | `per_class.csv` (precision, recall, F1, F-beta, support, threshold), `top_losses.csv` | `per_class.png`, `top_losses.png` |
| segmentation | `per_class_iou.csv`, `top_losses.csv` | `per_class_iou.png`, `top_losses.png` (image, truth, prediction) |
| points | `top_losses.csv` | `top_losses.png` (truth o, prediction x) |

`top_losses.csv` lists every validation image, worst first, for cleaning the data: `file`, then
per task `actual`, `predicted`, `loss`, `probability` (classification: the probability of the
predicted class, as fastai shows it). Top-loss images are shown as the model saw them (the
validation transform, un-normalised), so masks and points line up with the picture whatever the
resize or crop.

One concern per module: `collect` (the pass), `analyses` (pure counts and scores), `figures`
(plotting primitives), `report` (files and summary lines); what each task shows is decided by the
task (lightcycle.tasks). The `Interpretation` callback and `lightcycle-interpret` both call
`collect` and `write_report` / `make_figures`.
"""

from lightcycle.interpretation.analyses import (
    confusion_matrix,
    most_confused,
    multilabel_per_class,
    point_distances,
    segmentation_confusion,
    segmentation_per_class,
    top_loss_rows,
)
from lightcycle.interpretation.collect import Collector, InterpretationResult, KeepOutputs, collect
from lightcycle.interpretation.figures import plot_confusion_matrix
from lightcycle.interpretation.report import (
    make_figures,
    plot_top_losses,
    summary_lines,
    write_csv,
    write_report,
    write_tables,
)

__all__ = [
    "Collector",
    "InterpretationResult",
    "KeepOutputs",
    "collect",
    "confusion_matrix",
    "make_figures",
    "most_confused",
    "multilabel_per_class",
    "plot_confusion_matrix",
    "plot_top_losses",
    "point_distances",
    "segmentation_confusion",
    "segmentation_per_class",
    "summary_lines",
    "top_loss_rows",
    "write_csv",
    "write_report",
    "write_tables",
]
