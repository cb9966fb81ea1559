#!/bin/bash
# checks: an env-driven parameter sweep: each array task picks its parameter by SLURM_ARRAY_TASK_ID.
#SBATCH --array=0-3
#SBATCH -o /dev/null
PARAMS=(0.1 0.01 0.001 0.0001)
env | sort > env-$SLURM_JOB_ID.env
echo "lr=${PARAMS[$SLURM_ARRAY_TASK_ID]}" > result-$SLURM_ARRAY_TASK_ID.txt
