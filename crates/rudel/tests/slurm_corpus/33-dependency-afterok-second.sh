#!/bin/bash
# checks: the second half of 32-dependency-afterok.sh (submitted by its driver, not alone).
# corpus-part-of: 32-dependency-afterok.sh
#SBATCH -o second.out
env | sort > env-$SLURM_JOB_ID.env
if [ -e first-done.txt ]; then echo "first was done"; else echo "first was NOT done"; fi
