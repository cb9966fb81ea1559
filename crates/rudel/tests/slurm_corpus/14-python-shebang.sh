#!/usr/bin/env python3
# checks: a python script with #SBATCH lines runs under its interpreter.
#SBATCH -J pyjob
#SBATCH -o py-%j.out
import os
with open("env-%s.env" % os.environ["SLURM_JOB_ID"], "w") as f:
    for k in sorted(os.environ):
        f.write("%s=%s\n" % (k, os.environ[k]))
print("python says", os.environ["SLURM_JOB_NAME"])
