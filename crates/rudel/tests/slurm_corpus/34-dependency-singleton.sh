#!/bin/bash
# checks: --dependency=singleton: two jobs with the same name run one after the other.
# corpus-repeat: 2
#SBATCH -J single
#SBATCH --dependency=singleton
#SBATCH -o single-%j.out
env | sort > env-$SLURM_JOB_ID.env
if [ -e running.lock ]; then echo "overlap"; fi
touch running.lock
sleep 2
rm running.lock
echo ok
