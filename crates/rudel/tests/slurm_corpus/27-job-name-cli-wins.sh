#!/bin/bash
# checks: -J on the command line wins over #SBATCH -J; the name shows in SLURM_JOB_NAME and %x.
# corpus-args: -J from-cli
#SBATCH -J from-script
#SBATCH -o %x.out
env | sort > env-$SLURM_JOB_ID.env
