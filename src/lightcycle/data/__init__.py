"""LightningDataModules for each task, the demo data and the file checks."""

from lightcycle.data.base import ImageDataModule, Sample
from lightcycle.data.classification import CsvDataModule, FolderDataModule

__all__ = ["ImageDataModule", "Sample", "FolderDataModule", "CsvDataModule"]
