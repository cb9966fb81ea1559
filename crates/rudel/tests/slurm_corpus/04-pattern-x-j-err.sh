#!/bin/bash
# checks: %x and %j in -o and -e, stdout and stderr in separate files.
#SBATCH -J patterns
#SBATCH -o %x-%j.out
#SBATCH -e %x-%j.err
env | sort > env-$SLURM_JOB_ID.env
echo to-stdout
echo to-stderr >&2
