"""``distpro compare``'s library: a paired, validation-tuned comparison of DistPro with the
baselines on the user's own teacher, student and data.

* `settings`: the typed settings (methods, grids, seeds, recipes, budget);
* `pair`: the user's pair as factories (`Pair`);
* `plan`: the tasks, the pairing, the one rule that chooses a grid point, widening;
* `methods`: each method as ``(module, callbacks)`` from the library's builders;
* `runs`: one search or run through ``Trainer.fit``, paired;
* `budget`: the estimate from a measured warm-up, the cut to a wall-time budget;
* `schedule`: tasks with dependencies, ``jobs`` at a time (the benchmarks' scheduler too);
* `results_file`: the results file across versions (`upgrade`);
* `runner`: ``jobs`` processes, the resumable results file;
* `report`: the Markdown table, the plot, the loggers.
"""

from distpro_lightning.compare.pair import Pair
from distpro_lightning.compare.runner import PairingError, Runner, compare
from distpro_lightning.compare.settings import Budget, CompareSettings, SearchRecipe

__all__ = ["Budget", "CompareSettings", "Pair", "PairingError", "Runner", "SearchRecipe", "compare"]
