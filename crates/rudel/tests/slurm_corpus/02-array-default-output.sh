#!/bin/bash
# checks: an array's default output file slurm-%A_%a.out and the array variables.
#SBATCH --array=0-2
env | sort > env-$SLURM_JOB_ID.env
echo "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT"
