#!/bin/bash
# checks: --gres=gpu:1 where no node has a GPU is refused at submit.
#SBATCH --gres=gpu:1
env | sort > env-$SLURM_JOB_ID.env
