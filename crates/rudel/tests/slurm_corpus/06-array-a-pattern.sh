#!/bin/bash
# checks: %a alone in -o, and %x with an array.
#SBATCH -J arr
#SBATCH --array=4-5
#SBATCH --output=%x.task%a.log
env | sort > env-$SLURM_JOB_ID.env
echo "task $SLURM_ARRAY_TASK_ID"
