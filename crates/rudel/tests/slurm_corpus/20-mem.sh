#!/bin/bash
# checks: --mem=200M: SLURM_MEM_PER_NODE and the job's memory.
#SBATCH --mem=200M
env | sort > env-$SLURM_JOB_ID.env
