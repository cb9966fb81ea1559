#!/bin/bash
# checks: sbatch --wrap CMD (this file is not submitted; the driver passes the command line below).
# corpus-mode: wrap
# corpus-args: --wrap "env | sort > env-$SLURM_JOB_ID.env; echo wrapped"
