#!/bin/bash
# checks: arguments after the script reach it as $1, $2.
# corpus-args-after: alpha "beta gamma"
#SBATCH -o args.out
env | sort > env-$SLURM_JOB_ID.env
echo "1=$1 2=$2 n=$#"
