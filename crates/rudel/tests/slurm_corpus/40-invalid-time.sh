#!/bin/bash
# checks: a malformed time limit is refused.
# corpus-args: -t 1:2:3:4
env | sort > env-$SLURM_JOB_ID.env
