#!/bin/bash
# checks: -o out-%A_%a.out names one file per array task.
#SBATCH --array=1-3
#SBATCH -o out-%A_%a.out
env | sort > env-$SLURM_JOB_ID.env
echo "index $SLURM_ARRAY_TASK_ID"
