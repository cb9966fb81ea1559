#!/bin/bash
# checks: the time format -t 5 (the job's TimeLimit).
#SBATCH -t 5
env | sort > env-$SLURM_JOB_ID.env
