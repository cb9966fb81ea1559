#!/bin/bash
# checks: the script given on stdin (sbatch < script): default output, job name "sbatch".
# corpus-mode: stdin
env | sort > env-$SLURM_JOB_ID.env
echo from-stdin
