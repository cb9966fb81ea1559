#!/bin/bash
# checks: a script killed by a signal (SIGKILL): state FAILED, exit code 0:9.
env | sort > env-$SLURM_JOB_ID.env
echo dying
kill -9 $$
