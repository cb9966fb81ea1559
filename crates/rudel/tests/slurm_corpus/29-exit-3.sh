#!/bin/bash
# checks: a failing script (exit 3): state FAILED, exit code 3:0.
env | sort > env-$SLURM_JOB_ID.env
echo failing
exit 3
