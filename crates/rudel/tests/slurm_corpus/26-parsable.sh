#!/bin/bash
# checks: --parsable prints the job id alone.
# corpus-args: --parsable
env | sort > env-$SLURM_JOB_ID.env
