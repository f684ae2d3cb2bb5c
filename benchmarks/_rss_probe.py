import ray, numpy as np, sys, os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ensemble_selection_audioset import generator
from harmonia.ensembles.sharded import start_workers
from harmonia.metrics import get_metric
ray.init(num_cpus=1, include_dashboard=False, configure_logging=False, log_to_driver=False)
w = start_workers(generator(10, 2000, 0), 4, 1, get_metric("mAP"))[0]
print("tiny worker peak RSS GiB", ray.get(w.peak_rss.remote()) / 2**30)
@ray.remote
def mods():
    import sys
    from harmonia.ensembles import sharded  # noqa
    return sorted(m for m in sys.modules if m.split('.')[0] in ('torch','sklearn','scipy','numba','llvmlite','pandas','mlflow','pyarrow'))
print(sorted(set(m.split('.')[0] for m in ray.get(mods.remote()))))
