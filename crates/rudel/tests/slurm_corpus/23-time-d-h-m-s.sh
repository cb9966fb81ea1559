#!/bin/bash
# checks: the time format -t 0-0:1:0 (the job's TimeLimit).
#SBATCH -t 0-0:1:0
env | sort > env-$SLURM_JOB_ID.env
