#!/bin/bash
# checks: a plain job: the default output file slurm-%j.out, the task environment.
env | sort > env-$SLURM_JOB_ID.env
echo "hello from the batch script"
