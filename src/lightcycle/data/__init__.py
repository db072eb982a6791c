"""LightningDataModules for each task, the demo data and the file checks."""

from lightcycle.data.arrays import ArrayDataModule
from lightcycle.data.base import ImageDataModule, Sample
from lightcycle.data.classification import CsvDataModule, FolderDataModule
from lightcycle.data.multilabel import MultiLabelDataModule
from lightcycle.data.points import PointsDataModule
from lightcycle.data.segmentation import SegmentationDataModule

__all__ = [
    "ImageDataModule",
    "Sample",
    "FolderDataModule",
    "CsvDataModule",
    "MultiLabelDataModule",
    "SegmentationDataModule",
    "PointsDataModule",
    "ArrayDataModule",
]
