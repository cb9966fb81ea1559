#!/bin/bash
# checks: --array=1-7:2%2: indices 1,3,5,7, at most two at a time, the step in the env.
#SBATCH --array=1-7:2%2
#SBATCH -o step-%a.out
env | sort > env-$SLURM_JOB_ID.env
date +%s%N > start-$SLURM_ARRAY_TASK_ID.t
sleep 1
date +%s%N > end-$SLURM_ARRAY_TASK_ID.t
