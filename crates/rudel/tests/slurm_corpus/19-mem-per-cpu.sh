#!/bin/bash
# checks: --mem-per-cpu with -c 2: SLURM_MEM_PER_CPU, SLURM_CPUS_PER_TASK, the job's memory.
#SBATCH --mem-per-cpu=100M
#SBATCH -c 2
env | sort > env-$SLURM_JOB_ID.env
