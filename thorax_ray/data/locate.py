"""Finds a dataset's metadata files and images by listing its storage once.

Accepted layouts (see README): the full Kaggle/NIH set (`Data_Entry_2017*.csv`, `BBox_List_2017.csv`,
split lists, `images_001/images/*.png` ...), the Kaggle sample (`sample_labels.csv` or `sample.csv`,
`sample/images/*.png`), and either of them flat in one folder or under an `s3://` prefix; any other
metadata CSV can be named explicitly (`metadata_csv`, the jobs' `--metadata FILE`). Images are files with
an IMAGE_SUFFIXES name (PNG, JPEG, DICOM), up to MAX_IMAGE_DEPTH levels deep.
"""
from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass, field

from thorax_ray import storage

MAX_IMAGE_DEPTH = 3  # root/images_001/images/x.png
METADATA_PATTERNS = ("Data_Entry_2017*.csv", "sample_labels.csv", "sample.csv")
BBOX_FILE = "BBox_List_2017.csv"
SPLIT_LISTS = ("train_val_list.txt", "test_list.txt")
SYNTHETIC_RECORD = "thorax_ray_synthetic.json"  # written by thorax_ray.synthetic at a dataset's root
DATASET_FILE_PATTERNS = (*METADATA_PATTERNS, BBOX_FILE, *SPLIT_LISTS, SYNTHETIC_RECORD)
"""Files of a dataset that are not images (matched by name within two levels of its root)."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


class LayoutError(ValueError):
    pass


@dataclass
class DatasetFiles:
    """Where everything of one dataset lives, as URIs (plain absolute paths for local data)."""

    root: str
    metadata_csv: str
    bbox_csv: str | None = None
    train_val_list: str | None = None
    test_list: str | None = None
    images: dict[str, str] = field(default_factory=dict)  # file name -> URI
    synthetic: bool = False  # the root holds SYNTHETIC_RECORD (made by thorax_ray.synthetic)


def _relative(path: str, base: str) -> str:
    return posixpath.relpath(path.replace("\\", "/"), base.replace("\\", "/"))


def is_dataset_file(relative: str) -> bool:
    """A metadata/list/record file of the dataset layouts (by name, within two levels of the root)."""
    return relative.count("/") < 2 and any(fnmatch.fnmatch(posixpath.basename(relative), pattern)
                                            for pattern in DATASET_FILE_PATTERNS)


def discover(root: str, *, metadata_csv: str | None = None, endpoint_url: str | None = None) -> DatasetFiles:
    """Lists `root` once and returns its metadata files and a name -> URI map of its images;
    `metadata_csv` names the metadata file instead of looking for the usual names."""
    fs, base = storage.filesystem(root, endpoint_url=endpoint_url)
    if not fs.exists(base):
        raise LayoutError(f"{root}: dataset folder not found")
    if not fs.isdir(base):
        raise LayoutError(f"{root}: is a file, expected a dataset folder or prefix")
    listing = [p for p in fs.find(base) if not _relative(p, base).startswith("..")]
    relative = {_relative(p, base): p for p in listing}

    def pick(patterns: tuple[str, ...], *, max_depth: int = 2) -> str | None:
        for pattern in patterns:
            found = sorted(
                (rel.count("/"), rel) for rel in relative
                if rel.count("/") < max_depth and fnmatch.fnmatch(posixpath.basename(rel), pattern)
            )
            if not found:
                continue
            shallowest = [rel for depth, rel in found if depth == found[0][0]]
            if len(shallowest) > 1:
                raise LayoutError(f"{root}: ambiguous, several files match {pattern}: {shallowest[:4]}")
            return storage.to_uri(fs, relative[shallowest[0]])
        return None

    if metadata_csv is not None:
        check_metadata_file(metadata_csv, endpoint_url=endpoint_url)
    else:
        metadata_csv = pick(METADATA_PATTERNS)
    if metadata_csv is None:
        raise LayoutError(f"{root}: no Data_Entry_2017.csv, sample_labels.csv or sample.csv found (looked two "
                          "levels deep); name the metadata file with --metadata FILE")

    images: dict[str, str] = {}
    for rel, path in relative.items():
        if rel.count("/") >= MAX_IMAGE_DEPTH or not rel.lower().endswith(IMAGE_SUFFIXES):
            continue
        name = posixpath.basename(rel)
        if name in images:
            raise LayoutError(f"{root}: image {name} appears twice: {images[name]} and {storage.to_uri(fs, path)}")
        images[name] = storage.to_uri(fs, path)
    return DatasetFiles(
        root=root,
        metadata_csv=metadata_csv,
        bbox_csv=pick((BBOX_FILE,)),
        train_val_list=pick(("train_val_list.txt",)),
        test_list=pick(("test_list.txt",)),
        images=images,
        synthetic=SYNTHETIC_RECORD in relative,
    )


def check_metadata_file(uri: str, *, endpoint_url: str | None = None) -> None:
    """A metadata file named by the user must exist and be a file (one clear line otherwise)."""
    fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
    if not fs.exists(path):
        raise LayoutError(f"{uri}: metadata file not found")
    if fs.isdir(path):
        raise LayoutError(f"{uri}: is a folder; --metadata names a CSV file")


def read_name_list(uri: str, *, endpoint_url: str | None = None) -> set[str]:
    """Reads train_val_list.txt / test_list.txt (one image name per line)."""
    return {line.strip() for line in storage.read_text(uri, endpoint_url=endpoint_url).splitlines() if line.strip()}
