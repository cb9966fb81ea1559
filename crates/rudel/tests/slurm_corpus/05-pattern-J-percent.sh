#!/bin/bash
# checks: %J (job id with step) and %% (a literal percent sign) in -o.
#SBATCH -o out-%J-100%%.txt
env | sort > env-$SLURM_JOB_ID.env
echo percent
