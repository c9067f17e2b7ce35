"""Image ingestion: PNG decoding, the manifest-driven Ray Data pipeline and prepared Parquet shards."""
