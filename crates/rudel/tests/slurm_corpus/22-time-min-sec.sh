#!/bin/bash
# checks: the time format -t 1:00 (the job's TimeLimit).
#SBATCH -t 1:00
env | sort > env-$SLURM_JOB_ID.env
