# checks: a script without a #! line is refused by sbatch.
#SBATCH -J noshebang
env | sort > env-$SLURM_JOB_ID.env
