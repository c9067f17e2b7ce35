"""The exit codes of every job (README, "S3: retries and storage failures", has the table; tests/test_exit_codes.py
holds the two together). sysexits.h names where one fits."""
DONE = 0
REFUSED = 1  # the store refused a request (403 and other 4xx): fix credentials or permissions
BAD_INPUT = 2  # a flag, a missing file or key (`error: ...`)
DRIFTED = 65  # EX_DATAERR: score --fail-on-drift, and the run drifted from validation (its scores are committed)
NODE_UNUSABLE = 69  # EX_UNAVAILABLE: a GPU node of the job cannot run CUDA (thorax_ray.node_check)
TEMPFAIL = 75  # EX_TEMPFAIL: storage past its budget, the output's lease held or taken over, placement deadline
