#!/bin/bash
# checks: --export=NONE: the submitting shell's variables do not reach the job.
# corpus-env: CORPUS_FROM_SHELL=shell-value
#SBATCH --export=NONE
env | sort > env-$SLURM_JOB_ID.env
echo "from-shell=${CORPUS_FROM_SHELL:-unset}"
