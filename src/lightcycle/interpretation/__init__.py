"""What the model gets wrong on the validation set, per task (fastai's `ClassificationInterpretation`).

    from lightcycle import interpretation
    result = interpretation.collect(model, datamodule)      # one pass, dataset order
    interpretation.most_confused(result)[:5]
    interpretation.write_report(result, "interpret/")        # CSV tables + PNG figures
    views = interpretation.inspection_views(result, k=4, seed=0)   # the course's views (below)
    interpretation.write_report(result, "interpret/", views=views)

| task | tables (CSV) | figures (PNG / TensorBoard) |
|---|---|---|
| classification | `confusion_matrix.csv`, `most_confused.csv`, `top_losses.csv` | `confusion_matrix.png`, `top_losses.png` |
| multilabel | `per_class.csv` (precision, recall, F1, F-beta, support, threshold), `top_losses.csv` | `per_class.png`, `top_losses.png` |
| segmentation | `per_class_iou.csv`, `top_losses.csv` | `per_class_iou.png`, `top_losses.png` (image, truth, prediction) |
| points | `top_losses.csv` | `top_losses.png` (truth o, prediction x) |

With `views` (lightcycle-train and lightcycle-interpret write them; `interpret.views=false` turns
them off), classification and multilabel add fastai's course views, each as `<name>.csv` and
`<name>.png` (and `interpret/<name>` in TensorBoard): `random_correct`, `random_incorrect` (k
images, seeded), `most_correct`, `most_incorrect`, `most_uncertain` (k per class: highest p(actual)
among the correct, lowest among the wrong, smallest top-1 minus top-2 probability; multilabel: per
tag, by the distance of p from the tag's threshold).
Image-level tasks can add `heatmaps.png` (`plot_heatmaps`: Grad-CAM of the predicted output over
the top-loss images, lightcycle.interpretation.heatmaps).

`top_losses.csv` lists every validation image, worst first, for cleaning the data: `file`, then
per task `actual`, `predicted`, `loss`, `probability` (classification: the probability of the
predicted class, as fastai shows it). Top-loss images are shown as the model saw them (the
validation transform, un-normalised), so masks and points line up with the picture whatever the
resize or crop.

One concern per module: `collect` (the pass), `analyses` (pure counts and scores), `figures`
(plotting primitives), `report` (files and summary lines); what each task shows is decided in
`per_task/`, one file per task named after it (`task_interpretation(task)`). The `Interpretation` callback and `lightcycle-interpret` both call
`collect` and `write_report` / `make_figures`.
"""

from lightcycle.interpretation.analyses import (
    VIEW_NAMES,
    InspectionView,
    ViewEntry,
    confusion_matrix,
    most_confused,
    multilabel_per_class,
    point_distances,
    segmentation_confusion,
    segmentation_per_class,
)
from lightcycle.interpretation.collect import collect
from lightcycle.interpretation.figures import plot_confusion_matrix, plot_view
from lightcycle.interpretation.heatmaps import grad_cam, plot_heatmaps
from lightcycle.interpretation.per_task import TaskInterpretation, task_interpretation
from lightcycle.interpretation.report import (
    inspection_views,
    make_figures,
    plot_top_losses,
    summary_lines,
    top_loss_rows,
    write_csv,
    write_report,
    write_tables,
)
from lightcycle.interpretation.result import (
    Collector,
    InterpretationResult,
    KeepOutputs,
)

__all__ = [
    "VIEW_NAMES",
    "Collector",
    "InspectionView",
    "InterpretationResult",
    "KeepOutputs",
    "collect",
    "confusion_matrix",
    "grad_cam",
    "inspection_views",
    "make_figures",
    "most_confused",
    "multilabel_per_class",
    "plot_confusion_matrix",
    "plot_heatmaps",
    "plot_top_losses",
    "plot_view",
    "point_distances",
    "segmentation_confusion",
    "segmentation_per_class",
    "summary_lines",
    "task_interpretation",
    "top_loss_rows",
    "TaskInterpretation",
    "ViewEntry",
    "write_csv",
    "write_report",
    "write_tables",
]
