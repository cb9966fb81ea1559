#!/bin/bash
# checks: --dependency=afterok: the second job (33-dependency-afterok-second.sh) starts only
# after this one completed. This one sleeps first, so a second job that did not wait sees no marker.
# corpus-then: 33-dependency-afterok-second.sh --dependency=afterok:{J1}
#SBATCH -o first.out
env | sort > env-$SLURM_JOB_ID.env
sleep 2
echo done > first-done.txt
