#!/bin/bash
# checks: --signal=B:USR1@N reaches the batch shell's trap before the time limit (checkpointing);
# the trap exits 0, so the job completes. (Slurm sends it within ~30 s of the warning time.)
#SBATCH -t 1
#SBATCH --signal=B:USR1@55
#SBATCH -o ckpt.out
trap 'echo checkpointed; exit 0' USR1
env | sort > env-$SLURM_JOB_ID.env
echo started
for i in $(seq 1 58); do sleep 1; done
echo "no signal came"
