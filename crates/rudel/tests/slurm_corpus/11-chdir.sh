#!/bin/bash
# checks: --chdir=DIR (relative to the submit dir): the job starts there and its output goes there.
# corpus-mkdir: sub
#SBATCH --chdir=sub
env | sort > env-$SLURM_JOB_ID.env
pwd > where.txt
