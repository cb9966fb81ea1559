#!/bin/bash
# checks: an option sbatch does not know is refused (on the command line: exit 255).
# corpus-args: --frobnicate
env | sort > env-$SLURM_JOB_ID.env
