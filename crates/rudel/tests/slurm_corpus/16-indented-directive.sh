#!/bin/bash
# checks: an indented #SBATCH line (is it a directive or a comment?).
  #SBATCH -J indented
	#SBATCH -o indented.out
env | sort > env-$SLURM_JOB_ID.env
