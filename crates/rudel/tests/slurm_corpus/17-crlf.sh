#!/bin/bash
# checks: a script with CRLF (DOS) line breaks is refused by sbatch.
#SBATCH -J crlf
env | sort > env-$SLURM_JOB_ID.env
