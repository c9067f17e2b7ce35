#!/usr/bin/env bash
# The nightly scoring run (README, "Batch scoring", "On a schedule"): submits `python jobs/score.py FLAGS` to
# this machine's Ray cluster through its Jobs API, waits for the job, and exits 0 only when it succeeded.
#
#   nightly-score.sh --checkpoint s3://BUCKET/runs/RUN --input s3://BUCKET/incoming/ --out s3://BUCKET/scores [...]
#
# Installed with the package: the wheel puts this script and the jobs it submits into
# <venv>/share/thorax-ray/ (pyproject.toml, [tool.setuptools.data-files]), so a node needs no checkout.
# cluster.yaml's head_setup_commands run it from a systemd timer on the head; the Kubernetes RayJob of
# docs/kubernetes/nightly-scoring.yaml runs the same entrypoint. Tested as the timer runs it by
# tests/jobs/test_schedule_run.py (end to end) and tests/test_schedule.py.
#
# Environment: RAY_ADDRESS, the Jobs API (default http://127.0.0.1:8265, where the head's dashboard listens);
# the token of the cluster's token authentication, which Ray reads from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH
# or ~/.ray/auth_token (cluster.yaml copies it there); THORAX_LOG_DIR (default ~/thorax-logs): one log per
# run, nightly-score-<UTC time>.log, with the job's whole output; logs older than 90 days are deleted.
# Exit status: 0 when the job succeeded; 1 when it failed or was stopped (the job's own code, e.g. 75 when
# another run holds --out, is in the log); 73 when the log folder cannot be created.
set -u -o pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"  # <venv>/share/thorax-ray: jobs/ lies beside this script
venv_bin="$(cd "$here/../../bin" 2>/dev/null && pwd)"  # <venv>/bin: the ray client of the installed package
address="${RAY_ADDRESS:-http://127.0.0.1:8265}"
log_dir="${THORAX_LOG_DIR:-$HOME/thorax-logs}"
submission_id="nightly-score-$(date -u +%Y%m%dT%H%M%SZ)"
log="$log_dir/$submission_id.log"
export RAY_AUTH_MODE=token  # a Ray client sends the token only when this is set

mkdir -p "$log_dir" && touch "$log" || { echo "nightly-score: cannot write $log" >&2; exit 73; }
if [ ! -x "$venv_bin/ray" ]; then
  echo "nightly-score: no Ray client in $here/../../bin: run the installed copy, <venv>/share/thorax-ray/nightly-score.sh" \
    | tee -a "$log" >&2
  exit 1
fi
find "$log_dir" -maxdepth 1 -name 'nightly-score-*.log' -mtime +90 -delete

{
  echo "[nightly-score] $(date -u +%FT%TZ) submitting $submission_id to $address: python jobs/score.py $*"
  "$venv_bin/ray" job submit --address "$address" --submission-id "$submission_id" --working-dir "$here" \
    -- python jobs/score.py "$@"
} >>"$log" 2>&1
submit_code=$?
# `ray job submit` exits 1 for a failed job but 0 for a stopped one, and non-zero when its own connection broke
# while the job goes on: the job's final status decides, together with the client's exit code.
status="$("$venv_bin/ray" job status --address "$address" "$submission_id" 2>&1)"
echo "$status" >>"$log"
echo "[nightly-score] $(date -u +%FT%TZ) $submission_id: ray job submit exited $submit_code" >>"$log"

if [ "$submit_code" -eq 0 ] && grep -q "Job '$submission_id' succeeded" <<<"$status"; then
  echo "nightly-score: $submission_id succeeded; log: $log"
  exit 0
fi
echo "nightly-score: $submission_id did not succeed (ray job submit exited $submit_code); log: $log" >&2
tail -n 20 "$log" >&2
exit 1
