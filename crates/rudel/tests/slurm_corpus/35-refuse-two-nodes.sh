#!/bin/bash
# checks: -N 2 on a one-node cluster is refused at submit.
#SBATCH -N 2
env | sort > env-$SLURM_JOB_ID.env
