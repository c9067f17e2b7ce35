"""Every reader and writer of datasets: the NIH CSVs, locating files, splits, the manifest, decoding PNG/JPEG/DICOM,
the Ray Data image pipeline, preprocessing, prepared Parquet shards and the rows each stage reads."""
