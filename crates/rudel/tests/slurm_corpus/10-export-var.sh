#!/bin/bash
# checks: --export=VAR: only the named variable (and SLURM_*) reaches the job.
# corpus-env: CORPUS_FROM_SHELL=shell-value CORPUS_OTHER=other-value
#SBATCH --export=CORPUS_FROM_SHELL
env | sort > env-$SLURM_JOB_ID.env
echo "from-shell=${CORPUS_FROM_SHELL:-unset} other=${CORPUS_OTHER:-unset}"
