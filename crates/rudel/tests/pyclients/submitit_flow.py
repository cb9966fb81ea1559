import sys, time, os
import submitit

def square(i):
    t0 = time.time()
    time.sleep(0.05)
    return {"i": i, "sq": i * i, "start": t0, "end": time.time(), "job": os.environ.get("SLURM_JOB_ID")}

def total(results_dir, n):
    t0 = time.time()
    return {"start": t0, "n": n, "end": time.time()}

folder = sys.argv[1]
n = int(sys.argv[2])
ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
ex.update_parameters(timeout_min=5, slurm_use_srun=False, slurm_array_parallelism=n,
                     slurm_additional_parameters={"signal": "B:USR2@90"})
jobs = ex.map_array(square, range(n))
print("array", jobs[0].job_id, flush=True)
ids = ":".join(j.job_id for j in jobs)
ex.update_parameters(slurm_additional_parameters={"signal": "B:USR2@90", "dependency": f"afterok:{jobs[0].job_id.split('_')[0]}"})
fin = ex.submit(total, folder, n)
print("final", fin.job_id, flush=True)
res = [j.result() for j in jobs]
assert [r["i"] for r in res] == list(range(n)), res
print("ends", ",".join(str(r["end"]) for r in res), flush=True)
print(sum(r["sq"] for r in res), fin.result())
