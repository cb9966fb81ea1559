#!/bin/bash
# checks: cd $SLURM_SUBMIT_DIR, the usual first line of a batch script.
#SBATCH -o submit-dir.out
cd "$SLURM_SUBMIT_DIR"
env | sort > env-$SLURM_JOB_ID.env
pwd
