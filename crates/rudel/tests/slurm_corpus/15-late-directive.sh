#!/bin/bash
# checks: #SBATCH after the first command is ignored (Slurm stops at the first non-comment line).
#SBATCH -J early

#SBATCH -o early.out
echo first command
#SBATCH -J late
#SBATCH -o late.out
env | sort > env-$SLURM_JOB_ID.env
