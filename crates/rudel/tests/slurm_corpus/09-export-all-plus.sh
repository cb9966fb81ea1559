#!/bin/bash
# checks: --export=ALL,CORPUS_GIVEN=1: the whole environment plus one variable.
# corpus-env: CORPUS_FROM_SHELL=shell-value
#SBATCH --export=ALL,CORPUS_GIVEN=1
env | sort > env-$SLURM_JOB_ID.env
echo "from-shell=${CORPUS_FROM_SHELL:-unset} given=${CORPUS_GIVEN:-unset}"
