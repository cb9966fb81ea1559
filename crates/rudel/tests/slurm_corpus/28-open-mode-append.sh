#!/bin/bash
# checks: --open-mode=append keeps what the output file held.
# corpus-file: app.out=previous line
#SBATCH --open-mode=append
#SBATCH -o app.out
env | sort > env-$SLURM_JOB_ID.env
echo appended
